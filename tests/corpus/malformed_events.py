"""A corpus of malformed events: raw bytes, the topic they are sent to, the reason the worker must give.

Every case is one kind of mistake a producer can make (or an attacker can try), with the stable reason
code from ``llmrec.events.validation.RejectReason`` that must appear on the dead-letter topic for it.
Cases are self-contained bytes: no clock is read (the "future" is the year 2999) and every event names
``KNOWN_ITEM`` unless the case is about the item id, so an index holding ``KNOWN_ITEM`` and not
``UNKNOWN_ITEM`` makes each case fail for exactly the reason it states.

Used by ``tests/integration/test_bad_input.py`` (through Kafka and a real worker) and
``tests/unit/test_properties.py`` (through ``parse_event`` alone).

``MALFORMED_ITEM_EVENTS`` are the items topic's cases (through ``parse_item_event``, and
``check_item_vector`` with ``ITEM_VECTOR_DIM`` for the dimension case). They are a separate list because
they go to another topic: the worker consumes the items topic and dead-letters each of them with its
reason, through ``ItemBatchProcessor`` (``tests/unit/test_item_processing.py``) and as a process against
real Kafka (``tests/integration/test_worker_items.py``, where the index is wider than ``ITEM_VECTOR_DIM``,
so the dimension case still fails for its stated reason).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llmrec.events.schema import MAX_ATTRIBUTES_BYTES, MAX_CATEGORIES, MAX_TEXT_CHARS, EventType
from llmrec.events.validation import MAX_MESSAGE_BYTES, RejectReason
from llmrec.item_ids import item_key

KNOWN_ITEM = "test:known"  # must be in the item index of a test that uses the corpus
KNOWN_ITEM_KEY = item_key(KNOWN_ITEM)  # the id that index stores
UNKNOWN_ITEM = "test:unknown"  # must not be
R = RejectReason


@dataclass(frozen=True)
class MalformedCase:
    name: str
    topic: EventType  # the topic carrying this event type (names depend on a test's topic prefix)
    value: bytes
    reason: RejectReason


def _event(kind: EventType, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_type": kind.value,
        "event_id": f"bad-{kind.value}",
        "user_id": "mallory",
        "item_id": KNOWN_ITEM,
        "event_time": "2025-01-01T00:00:00Z",
    }
    if kind is EventType.RATING:
        body["rating"] = 7
    elif kind is EventType.REVIEW:
        body["text"] = "Fine, I suppose."
    else:
        body.update(status="watching", episodes_watched=3, total_episodes=12)
    body.update(changes)
    return body


def _json(kind: EventType, **changes: Any) -> bytes:
    return json.dumps(_event(kind, **changes), ensure_ascii=False).encode("utf-8")


def _without(kind: EventType, field: str) -> bytes:
    body = _event(kind)
    del body[field]
    return json.dumps(body).encode("utf-8")


def _raw_field(kind: EventType, field: str, literal: str) -> bytes:
    """The event with ``field``'s value written as ``literal`` verbatim (for what json.dumps won't write)."""
    marker = "\u0000MARK\u0000"
    text = json.dumps(_event(kind, **{field: marker}))
    return text.replace(json.dumps(marker), literal).encode("utf-8")


RATING, REVIEW, WATCH = EventType.RATING, EventType.REVIEW, EventType.WATCH
VALID_RATING = _json(RATING)  # parses on the ratings topic; every case below differs from it or a sibling

MALFORMED_EVENTS: list[MalformedCase] = [
    # -- framing: bytes that are not one JSON object ---------------------------------------------------
    MalformedCase("empty message", RATING, b"", R.EMPTY),
    MalformedCase("whitespace only", RATING, b"  \n\t ", R.INVALID_JSON),
    MalformedCase("not json", RATING, b"{this is not json", R.INVALID_JSON),
    MalformedCase("truncated json", RATING, VALID_RATING[: len(VALID_RATING) // 2], R.INVALID_JSON),
    MalformedCase("trailing garbage", RATING, VALID_RATING + b"}", R.INVALID_JSON),
    MalformedCase("two objects in one message", RATING, VALID_RATING + b"\n" + VALID_RATING, R.INVALID_JSON),
    MalformedCase("utf-8 byte order mark", RATING, b"\xef\xbb\xbf" + VALID_RATING, R.INVALID_JSON),
    MalformedCase("single-quoted keys", RATING, b"{'event_type': 'rating'}", R.INVALID_JSON),
    MalformedCase("raw nul bytes", RATING, b"\x00\x00\x00\x00", R.INVALID_JSON),
    MalformedCase(
        "invalid utf-8", REVIEW, _json(REVIEW, text="caf_").replace(b"_", b"\xff\xfe"), R.INVALID_UTF8
    ),
    MalformedCase("utf-8 encoded surrogate", REVIEW, b'{"text": "\xed\xa0\x80"}', R.INVALID_UTF8),
    MalformedCase(
        "latin-1 text", REVIEW, _json(REVIEW, text="naïve").decode().encode("latin-1"), R.INVALID_UTF8
    ),
    MalformedCase("json array", RATING, b"[1, 2, 3]", R.NOT_AN_OBJECT),
    MalformedCase("json string", RATING, b'"rating"', R.NOT_AN_OBJECT),
    MalformedCase("json number", RATING, b"42", R.NOT_AN_OBJECT),
    MalformedCase("json null", RATING, b"null", R.NOT_AN_OBJECT),
    MalformedCase("json true", RATING, b"true", R.NOT_AN_OBJECT),
    MalformedCase("array nested 100k deep", RATING, b"[" * 100_000 + b"]" * 100_000, R.INVALID_JSON),
    MalformedCase(
        "field nested 50k deep",
        RATING,
        _raw_field(RATING, "source", "[" * 50_000 + "]" * 50_000),
        R.INVALID_JSON,
    ),
    MalformedCase("message over the size limit", RATING, b" " * (MAX_MESSAGE_BYTES + 1), R.TOO_LARGE),
    # About 1 MB: the largest value the test's Kafka producer (message.max.bytes 1,000,000) lets through.
    MalformedCase("review text of about 1 MB", REVIEW, _json(REVIEW, text="a" * 990_000), R.TOO_LARGE),
    # -- numbers JSON cannot carry ------------------------------------------------------------------------
    MalformedCase("rating NaN", RATING, _raw_field(RATING, "rating", "NaN"), R.NON_FINITE_NUMBER),
    MalformedCase("rating Infinity", RATING, _raw_field(RATING, "rating", "Infinity"), R.NON_FINITE_NUMBER),
    MalformedCase("rating -Infinity", RATING, _raw_field(RATING, "rating", "-Infinity"), R.NON_FINITE_NUMBER),
    MalformedCase("rating 1e999", RATING, _raw_field(RATING, "rating", "1e999"), R.NON_FINITE_NUMBER),
    MalformedCase(
        "episodes -1e999", WATCH, _raw_field(WATCH, "episodes_watched", "-1e999"), R.NON_FINITE_NUMBER
    ),
    MalformedCase(
        "item id of 5000 digits", RATING, _raw_field(RATING, "item_id", "9" * 5000), R.NON_FINITE_NUMBER
    ),
    # -- routing: event_type and topic ---------------------------------------------------------------------
    MalformedCase("missing event_type", RATING, _without(RATING, "event_type"), R.UNKNOWN_EVENT_TYPE),
    MalformedCase("unknown event_type", RATING, _json(RATING, event_type="purchase"), R.UNKNOWN_EVENT_TYPE),
    MalformedCase("event_type in capitals", RATING, _json(RATING, event_type="RATING"), R.UNKNOWN_EVENT_TYPE),
    MalformedCase("event_type null", RATING, _json(RATING, event_type=None), R.UNKNOWN_EVENT_TYPE),
    MalformedCase("event_type is a list", RATING, _json(RATING, event_type=["rating"]), R.UNKNOWN_EVENT_TYPE),
    MalformedCase(
        "event_type is an object", RATING, _json(RATING, event_type={"v": 1}), R.UNKNOWN_EVENT_TYPE
    ),
    MalformedCase("rating on the watch topic", WATCH, _json(RATING), R.WRONG_TOPIC),
    MalformedCase("review on the ratings topic", RATING, _json(REVIEW), R.WRONG_TOPIC),
    MalformedCase("watch on the reviews topic", REVIEW, _json(WATCH), R.WRONG_TOPIC),
    # -- envelope fields -----------------------------------------------------------------------------------
    MalformedCase("schema_version 2", RATING, _json(RATING, schema_version=2), R.SCHEMA_VIOLATION),
    MalformedCase("schema_version true", RATING, _json(RATING, schema_version=True), R.SCHEMA_VIOLATION),
    MalformedCase("unknown field", RATING, _json(RATING, colour="blue"), R.SCHEMA_VIOLATION),
    MalformedCase("missing event_id", RATING, _without(RATING, "event_id"), R.SCHEMA_VIOLATION),
    MalformedCase("missing user_id", RATING, _without(RATING, "user_id"), R.SCHEMA_VIOLATION),
    MalformedCase("missing item_id", RATING, _without(RATING, "item_id"), R.SCHEMA_VIOLATION),
    MalformedCase("missing event_time", RATING, _without(RATING, "event_time"), R.SCHEMA_VIOLATION),
    MalformedCase("event_id is a number", RATING, _json(RATING, event_id=12), R.SCHEMA_VIOLATION),
    MalformedCase(
        "event_id of 129 characters", RATING, _json(RATING, event_id="e" * 129), R.SCHEMA_VIOLATION
    ),
    MalformedCase("user_id empty", RATING, _json(RATING, user_id=""), R.SCHEMA_VIOLATION),
    MalformedCase("user_id with spaces", RATING, _json(RATING, user_id="john smith"), R.SCHEMA_VIOLATION),
    MalformedCase("user_id of 129 characters", RATING, _json(RATING, user_id="u" * 129), R.SCHEMA_VIOLATION),
    MalformedCase(
        "user_id like sql",
        RATING,
        _json(RATING, user_id="x'; DROP TABLE interactions;--"),
        R.SCHEMA_VIOLATION,
    ),
    MalformedCase("user_id is a list", RATING, _json(RATING, user_id=["mallory"]), R.SCHEMA_VIOLATION),
    MalformedCase("item_id is a number", RATING, _json(RATING, item_id=5114), R.SCHEMA_VIOLATION),
    MalformedCase("item_id empty", RATING, _json(RATING, item_id=""), R.SCHEMA_VIOLATION),
    MalformedCase("item_id with a newline", RATING, _json(RATING, item_id="mal:1\n"), R.SCHEMA_VIOLATION),
    MalformedCase("item_id of 257 characters", RATING, _json(RATING, item_id="i" * 257), R.SCHEMA_VIOLATION),
    MalformedCase("item_id true", RATING, _json(RATING, item_id=True), R.SCHEMA_VIOLATION),
    MalformedCase("item_id 1.5", RATING, _json(RATING, item_id=1.5), R.SCHEMA_VIOLATION),
    MalformedCase("item_id null", RATING, _json(RATING, item_id=None), R.SCHEMA_VIOLATION),
    MalformedCase("item_id 0", RATING, _json(RATING, item_id=0), R.SCHEMA_VIOLATION),
    MalformedCase("item_id negative", RATING, _json(RATING, item_id=-5), R.SCHEMA_VIOLATION),
    MalformedCase("item_id above 2**53", RATING, _json(RATING, item_id=2**53 + 1), R.SCHEMA_VIOLATION),
    MalformedCase("item not in the index", RATING, _json(RATING, item_id=UNKNOWN_ITEM), R.UNKNOWN_ITEM),
    MalformedCase("watched item not in the index", WATCH, _json(WATCH, item_id=UNKNOWN_ITEM), R.UNKNOWN_ITEM),
    MalformedCase("source too long", RATING, _json(RATING, source="s" * 65), R.SCHEMA_VIOLATION),
    # -- event_time ----------------------------------------------------------------------------------------
    MalformedCase(
        "event_time before 1970", RATING, _json(RATING, event_time="1969-12-31T23:59:59Z"), R.SCHEMA_VIOLATION
    ),
    MalformedCase(
        "event_time in 1900", RATING, _json(RATING, event_time="1900-01-01T00:00:00Z"), R.SCHEMA_VIOLATION
    ),
    MalformedCase(
        "event_time far in the future",
        RATING,
        _json(RATING, event_time="2999-01-01T00:00:00Z"),
        R.SCHEMA_VIOLATION,
    ),
    MalformedCase(
        "event_time beyond year 9999 in UTC",
        RATING,
        _json(RATING, event_time="9999-12-31T23:59:59-14:00"),
        R.SCHEMA_VIOLATION,
    ),
    MalformedCase(
        "event_time before year 1 in UTC",
        RATING,
        _json(RATING, event_time="0001-01-01T00:00:00+14:00"),
        R.SCHEMA_VIOLATION,
    ),
    MalformedCase(
        "event_time naive", RATING, _json(RATING, event_time="2025-01-01T00:00:00"), R.SCHEMA_VIOLATION
    ),
    MalformedCase("event_time not a date", RATING, _json(RATING, event_time="yesterday"), R.SCHEMA_VIOLATION),
    MalformedCase("event_time is an object", RATING, _json(RATING, event_time={"s": 1}), R.SCHEMA_VIOLATION),
    # -- ratings -------------------------------------------------------------------------------------------
    MalformedCase("missing rating", RATING, _without(RATING, "rating"), R.SCHEMA_VIOLATION),
    MalformedCase("rating 0", RATING, _json(RATING, rating=0), R.SCHEMA_VIOLATION),
    MalformedCase("rating 11", RATING, _json(RATING, rating=11), R.SCHEMA_VIOLATION),
    MalformedCase("rating -1", RATING, _json(RATING, rating=-1), R.SCHEMA_VIOLATION),
    MalformedCase("rating 10.5", RATING, _json(RATING, rating=10.5), R.SCHEMA_VIOLATION),
    MalformedCase("rating is a word", RATING, _json(RATING, rating="nine"), R.SCHEMA_VIOLATION),
    MalformedCase("rating true", RATING, _json(RATING, rating=True), R.SCHEMA_VIOLATION),
    MalformedCase("rating is a list", RATING, _json(RATING, rating=[7]), R.SCHEMA_VIOLATION),
    MalformedCase("rating null", RATING, _json(RATING, rating=None), R.SCHEMA_VIOLATION),
    # -- reviews -------------------------------------------------------------------------------------------
    MalformedCase("missing text", REVIEW, _without(REVIEW, "text"), R.SCHEMA_VIOLATION),
    MalformedCase("text empty", REVIEW, _json(REVIEW, text=""), R.SCHEMA_VIOLATION),
    MalformedCase("text whitespace only", REVIEW, _json(REVIEW, text=" \n\t \u3000"), R.SCHEMA_VIOLATION),
    MalformedCase(
        "text over the limit", REVIEW, _json(REVIEW, text="w" * (MAX_TEXT_CHARS + 1)), R.SCHEMA_VIOLATION
    ),
    MalformedCase(
        "text with a control character", REVIEW, _json(REVIEW, text="ring \u0007 bell"), R.SCHEMA_VIOLATION
    ),
    MalformedCase(
        "text with a nul character", REVIEW, _json(REVIEW, text="nul \u0000 here"), R.SCHEMA_VIOLATION
    ),
    MalformedCase("text is a number", REVIEW, _json(REVIEW, text=42), R.SCHEMA_VIOLATION),
    MalformedCase("unknown review tag", REVIEW, _json(REVIEW, tag="great"), R.SCHEMA_VIOLATION),
    MalformedCase("review rating 0", REVIEW, _json(REVIEW, rating=0), R.SCHEMA_VIOLATION),
    # -- watch events --------------------------------------------------------------------------------------
    MalformedCase("missing status", WATCH, _without(WATCH, "status"), R.SCHEMA_VIOLATION),
    MalformedCase("unknown status", WATCH, _json(WATCH, status="binged"), R.SCHEMA_VIOLATION),
    MalformedCase("status is a number", WATCH, _json(WATCH, status=3), R.SCHEMA_VIOLATION),
    MalformedCase("missing episodes_watched", WATCH, _without(WATCH, "episodes_watched"), R.SCHEMA_VIOLATION),
    MalformedCase("negative episodes", WATCH, _json(WATCH, episodes_watched=-1), R.SCHEMA_VIOLATION),
    MalformedCase("fractional episodes", WATCH, _json(WATCH, episodes_watched=2.5), R.SCHEMA_VIOLATION),
    MalformedCase("episodes true", WATCH, _json(WATCH, episodes_watched=True), R.SCHEMA_VIOLATION),
    MalformedCase("total_episodes 0", WATCH, _json(WATCH, total_episodes=0), R.SCHEMA_VIOLATION),
    MalformedCase("episodes over 100000", WATCH, _json(WATCH, episodes_watched=100_001), R.SCHEMA_VIOLATION),
]

_names = [case.name for case in MALFORMED_EVENTS]
assert len(set(_names)) == len(_names), "case names must be unique"


# -- the items topic ---------------------------------------------------------------------------------------

ITEM_VECTOR_DIM = 4  # the embedding dimension a test using the item cases must configure


@dataclass(frozen=True)
class MalformedItemCase:
    name: str
    value: bytes
    reason: RejectReason


def _item(op: str = "upsert", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "op": op,
        "event_id": f"bad-item-{op}",
        "item_id": "sku-kettle-1",
        "event_time": "2025-01-01T00:00:00Z",
    }
    if op == "upsert":
        body.update(title="Kettle, 1.7 l", categories=["kitchen"], vector=[0.5] * ITEM_VECTOR_DIM)
    body.update(changes)
    return body


def item_json(op: str = "upsert", **changes: Any) -> bytes:
    return json.dumps(_item(op, **changes), ensure_ascii=False).encode("utf-8")


def _item_without(field: str, op: str = "upsert") -> bytes:
    body = _item(op)
    del body[field]
    return json.dumps(body).encode("utf-8")


def _item_raw_vector(literal: str) -> bytes:
    text = json.dumps(_item(vector=["MARK"] + [0.5] * (ITEM_VECTOR_DIM - 1)))
    return text.replace('"MARK"', literal).encode("utf-8")


MALFORMED_ITEM_EVENTS: list[MalformedItemCase] = [
    # -- routing: op ---------------------------------------------------------------------------------------
    MalformedItemCase("item: missing op", _item_without("op"), R.UNKNOWN_ITEM_OP),
    MalformedItemCase("item: unknown op", item_json(op="archive"), R.UNKNOWN_ITEM_OP),
    MalformedItemCase("item: op in capitals", item_json(op="UPSERT"), R.UNKNOWN_ITEM_OP),
    MalformedItemCase("item: op is a list", item_json(**{"op": ["upsert"]}), R.UNKNOWN_ITEM_OP),
    MalformedItemCase("item: rating event on the items topic", _json(RATING), R.WRONG_TOPIC),
    # -- the item id: an opaque string -----------------------------------------------------------------------
    MalformedItemCase("item: missing item_id", _item_without("item_id"), R.SCHEMA_VIOLATION),
    MalformedItemCase("item: hide without item_id", _item_without("item_id", "hide"), R.SCHEMA_VIOLATION),
    MalformedItemCase("item: item_id is a number", item_json(item_id=5114), R.SCHEMA_VIOLATION),
    MalformedItemCase("item: item_id empty", item_json(item_id=""), R.SCHEMA_VIOLATION),
    MalformedItemCase("item: item_id with a leading space", item_json(item_id=" sku-1"), R.SCHEMA_VIOLATION),
    MalformedItemCase("item: item_id with a newline", item_json(item_id="sku\n1"), R.SCHEMA_VIOLATION),
    MalformedItemCase("item: item_id of 257 characters", item_json(item_id="i" * 257), R.SCHEMA_VIOLATION),
    MalformedItemCase("item: missing event_id", _item_without("event_id"), R.SCHEMA_VIOLATION),
    MalformedItemCase(
        "item: event_time naive", item_json(event_time="2025-01-01T00:00:00"), R.SCHEMA_VIOLATION
    ),
    MalformedItemCase("item: schema_version 2", item_json(schema_version=2), R.SCHEMA_VIOLATION),
    # -- upsert fields -------------------------------------------------------------------------------------
    MalformedItemCase("item: upsert without title", _item_without("title"), R.SCHEMA_VIOLATION),
    MalformedItemCase("item: upsert with an empty title", item_json(title=""), R.SCHEMA_VIOLATION),
    MalformedItemCase("item: upsert with a blank title", item_json(title="  \t "), R.SCHEMA_VIOLATION),
    MalformedItemCase("item: title is a number", item_json(title=42), R.SCHEMA_VIOLATION),
    MalformedItemCase("item: title of 1001 characters", item_json(title="t" * 1001), R.SCHEMA_VIOLATION),
    MalformedItemCase("item: categories is a string", item_json(categories="kitchen"), R.SCHEMA_VIOLATION),
    MalformedItemCase(
        "item: too many categories",
        item_json(categories=[f"c{i}" for i in range(MAX_CATEGORIES + 1)]),
        R.SCHEMA_VIOLATION,
    ),
    MalformedItemCase("item: attributes is a list", item_json(attributes=[1, 2]), R.SCHEMA_VIOLATION),
    MalformedItemCase(
        "item: attribute is an object", item_json(attributes={"size": {"w": 1}}), R.SCHEMA_VIOLATION
    ),
    MalformedItemCase(
        "item: attributes too large",
        item_json(attributes={"blurb": "b" * MAX_ATTRIBUTES_BYTES}),
        R.SCHEMA_VIOLATION,
    ),
    MalformedItemCase(
        "item: text over the limit", item_json(text="w" * (MAX_TEXT_CHARS + 1)), R.SCHEMA_VIOLATION
    ),
    MalformedItemCase("item: text of about 1 MB", item_json(text="a" * 990_000), R.TOO_LARGE),
    MalformedItemCase("item: text is a number", item_json(text=7), R.SCHEMA_VIOLATION),
    MalformedItemCase("item: unknown field", item_json(colour="blue"), R.SCHEMA_VIOLATION),
    MalformedItemCase("item: title on a hide", item_json("hide", title="Kettle"), R.SCHEMA_VIOLATION),
    # -- the vector ------------------------------------------------------------------------------------------
    MalformedItemCase("item: vector with NaN", _item_raw_vector("NaN"), R.NON_FINITE_NUMBER),
    MalformedItemCase("item: vector with Infinity", _item_raw_vector("Infinity"), R.NON_FINITE_NUMBER),
    MalformedItemCase("item: vector with 1e999", _item_raw_vector("1e999"), R.NON_FINITE_NUMBER),
    MalformedItemCase("item: vector of strings", item_json(vector=["0.5"] * 4), R.SCHEMA_VIOLATION),
    MalformedItemCase("item: vector of booleans", item_json(vector=[True] * 4), R.SCHEMA_VIOLATION),
    MalformedItemCase("item: vector empty", item_json(vector=[]), R.SCHEMA_VIOLATION),
    # Valid on the wire; ``check_item_vector(event, ITEM_VECTOR_DIM)`` rejects it.
    MalformedItemCase(
        "item: vector of the wrong dimension",
        item_json(vector=[0.5] * (ITEM_VECTOR_DIM + 1)),
        R.VECTOR_DIMENSION_MISMATCH,
    ),
]

_item_names = [case.name for case in MALFORMED_ITEM_EVENTS]
assert len(set(_item_names)) == len(_item_names), "item case names must be unique"
