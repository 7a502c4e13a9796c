"""Turn raw Kafka message bytes into a typed event, or a machine-readable reason why not.

``parse_event`` reads the interaction topics (ratings, reviews, watch), ``parse_item_event`` the items
topic; both share the framing checks (size, UTF-8, JSON, one object) and the reason codes. An item upsert's
``vector`` is checked against the configured embedding dimension by ``check_item_vector``, which the worker
calls after parsing (the schema cannot know the dimension).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from llmrec.events.schema import (
    EVENT_ADAPTER,
    ITEM_EVENT_ADAPTER,
    AnyItemEvent,
    EventType,
    ItemOp,
    RatingEvent,
    ReviewEvent,
    UpsertItemEvent,
    WatchEvent,
)

AnyEvent = RatingEvent | ReviewEvent | WatchEvent
# Larger than any legitimate event (a 20k-character review is about 80 KB of UTF-8 at worst).
MAX_MESSAGE_BYTES = 256 * 1024
MAX_INT_DIGITS = 64
# Built once: iterating the enum per message was a tenth of the worker's validation time (profiled).
_EVENT_TYPES = frozenset(t.value for t in EventType)
_ITEM_OPS = frozenset(op.value for op in ItemOp)


class RejectReason(StrEnum):
    """Why an event went to the dead-letter topic. Stable strings: consumers of that topic match on them."""

    EMPTY = "empty_message"
    TOO_LARGE = "message_too_large"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    WRONG_TOPIC = "wrong_topic"
    SCHEMA_VIOLATION = "schema_violation"
    NON_FINITE_NUMBER = "non_finite_number"
    UNKNOWN_ITEM = "unknown_item"
    # Items topic: ``op`` is missing or not one of upsert, hide, unhide, delete.
    UNKNOWN_ITEM_OP = "unknown_item_op"
    # Items topic: an upsert's vector does not have the configured embedding dimension (check_item_vector).
    VECTOR_DIMENSION_MISMATCH = "vector_dimension_mismatch"
    # Found by the worker after validation: the encoder refused the review text as bad input.
    ENCODER_REJECTED = "encoder_rejected"
    # Items topic, found by the worker: another item id already holds this id's 62-bit key
    # (``llmrec.item_ids``; about 5e-8 at a million items). Storing it would merge two items.
    ITEM_KEY_COLLISION = "item_key_collision"
    # A valid event whose signal could not be computed (a non-finite strength): a gap in validation.
    INVALID_SIGNAL = "invalid_signal"
    # Validation itself raised an unexpected error (a bug): kept for a fix and a replay, never retried.
    VALIDATION_CRASHED = "validation_crashed"


@dataclass(frozen=True)
class InvalidEvent(Exception):
    reason: RejectReason
    detail: str

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"


def _reject_constant(token: str) -> Any:
    # json.loads accepts NaN and Infinity by default; they are not JSON and must not reach the math.
    raise InvalidEvent(RejectReason.NON_FINITE_NUMBER, f"{token} is not a valid JSON number")


def _check_finite(value: float) -> float:
    if not math.isfinite(value):
        raise InvalidEvent(RejectReason.NON_FINITE_NUMBER, "number out of range")
    return value


def _parse_int(token: str) -> int:
    # No field holds more than 16 digits (item ids reach 2**53); Python refuses to convert more than 4300
    # digits with a ValueError, and converting thousands of digits is quadratic work for nothing.
    if len(token.lstrip("-")) > MAX_INT_DIGITS:
        raise InvalidEvent(RejectReason.NON_FINITE_NUMBER, f"integer of {len(token)} digits is out of range")
    return int(token)


# One decoder for every message: json.loads with hooks builds a new JSONDecoder per call, which cost as
# much as the parse itself for our small events (profiled).
_DECODER = json.JSONDecoder(
    parse_constant=_reject_constant,
    parse_float=lambda s: _check_finite(float(s)),
    parse_int=_parse_int,
)


def _summarise(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "(event)"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def decode_object(raw: bytes | None) -> dict[str, Any]:
    """The framing checks every topic shares: one JSON object of at most ``MAX_MESSAGE_BYTES``, UTF-8, with
    finite numbers. Raises ``InvalidEvent``."""
    if not raw:
        raise InvalidEvent(RejectReason.EMPTY, "message has no value")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidEvent(RejectReason.TOO_LARGE, f"{len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(RejectReason.INVALID_UTF8, str(exc)) from None
    try:
        payload = _DECODER.decode(text)
    except InvalidEvent:
        raise
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidEvent(RejectReason.INVALID_JSON, str(exc)[:200]) from None
    if not isinstance(payload, dict):
        raise InvalidEvent(
            RejectReason.NOT_AN_OBJECT, f"expected a JSON object, got {type(payload).__name__}"
        )
    return payload


def parse_event(raw: bytes | None, expected_type: EventType | None = None) -> AnyEvent:
    """Decode and validate one message. Raises ``InvalidEvent`` with a stable reason code."""
    payload = decode_object(raw)
    event_type = payload.get("event_type")
    # isinstance first: a list or object as event_type is unhashable and would raise TypeError in the set.
    if not isinstance(event_type, str) or event_type not in _EVENT_TYPES:
        raise InvalidEvent(
            RejectReason.UNKNOWN_EVENT_TYPE,
            f"event_type {repr(event_type)[:100]} is not one of {sorted(_EVENT_TYPES)}",
        )
    if expected_type is not None and event_type != expected_type.value:
        raise InvalidEvent(RejectReason.WRONG_TOPIC, f"{event_type} event on the {expected_type.value} topic")
    try:
        return EVENT_ADAPTER.validate_python(payload)
    except ValidationError as exc:
        raise InvalidEvent(RejectReason.SCHEMA_VIOLATION, _summarise(exc)) from None


def parse_item_event(raw: bytes | None) -> AnyItemEvent:
    """Decode and validate one message of the items topic. Raises ``InvalidEvent`` with a stable reason code.

    An interaction event (it has an ``event_type`` and no ``op``) is ``wrong_topic``. Whether the item
    exists is not checked here: ``delete`` or ``hide`` of an unknown id is a valid event, and the worker
    decides what it means. The vector's dimension is checked separately (``check_item_vector``).
    """
    payload = decode_object(raw)
    op = payload.get("op")
    if op is None and "event_type" in payload:
        raise InvalidEvent(
            RejectReason.WRONG_TOPIC, f"{repr(payload['event_type'])[:100]} event on the items topic"
        )
    if not isinstance(op, str) or op not in _ITEM_OPS:
        raise InvalidEvent(
            RejectReason.UNKNOWN_ITEM_OP, f"op {repr(op)[:100]} is not one of {sorted(_ITEM_OPS)}"
        )
    try:
        return ITEM_EVENT_ADAPTER.validate_python(payload)
    except ValidationError as exc:
        raise InvalidEvent(RejectReason.SCHEMA_VIOLATION, _summarise(exc)) from None


def check_item_vector(event: AnyItemEvent, dim: int) -> InvalidEvent | None:
    """Why an item event's vector does not fit an index of ``dim`` dimensions, or None when it does (or when
    the event carries no vector). The worker calls it with its configured embedding dimension and
    dead-letters the event with the returned reason (``vector_dimension_mismatch``)."""
    if not isinstance(event, UpsertItemEvent) or event.vector is None:
        return None
    if len(event.vector) != dim:
        return InvalidEvent(
            RejectReason.VECTOR_DIMENSION_MISMATCH,
            f"vector has {len(event.vector)} dimensions, the index has {dim}",
        )
    if not all(math.isfinite(x) for x in event.vector):
        return InvalidEvent(RejectReason.NON_FINITE_NUMBER, "vector holds a non-finite number")
    return None


def encode_event(event: AnyEvent | AnyItemEvent) -> bytes:
    """The wire form of an event or item event (compact JSON, UTF-8)."""
    return event.model_dump_json(exclude_none=True).encode("utf-8")
