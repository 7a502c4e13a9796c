"""Turn raw Kafka message bytes into a typed event, or a machine-readable reason why not."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from llmrec.events.schema import EVENT_ADAPTER, EventType, RatingEvent, ReviewEvent, WatchEvent

AnyEvent = RatingEvent | ReviewEvent | WatchEvent
# Larger than any legitimate event (a 20k-character review is about 80 KB of UTF-8 at worst).
MAX_MESSAGE_BYTES = 256 * 1024
MAX_INT_DIGITS = 64
# Built once: iterating the enum per message was a tenth of the worker's validation time (profiled).
_EVENT_TYPES = frozenset(t.value for t in EventType)


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
    # Found by the worker after validation: the encoder refused the review text as bad input.
    ENCODER_REJECTED = "encoder_rejected"
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


def parse_event(raw: bytes | None, expected_type: EventType | None = None) -> AnyEvent:
    """Decode and validate one message. Raises ``InvalidEvent`` with a stable reason code."""
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


def encode_event(event: AnyEvent) -> bytes:
    """The wire form of an event (compact JSON, UTF-8)."""
    return event.model_dump_json(exclude_none=True).encode("utf-8")
