"""The item event contract: the four ops, string item ids, the vector checks, the items topic."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from llmrec.events.producer import EventProducer
from llmrec.events.schema import (
    MAX_ATTRIBUTES_BYTES,
    MAX_TEXT_CHARS,
    DeleteItemEvent,
    HideItemEvent,
    ItemOp,
    UnhideItemEvent,
    UpsertItemEvent,
)
from llmrec.events.topics import system_topics
from llmrec.events.validation import (
    InvalidEvent,
    RejectReason,
    check_item_vector,
    encode_event,
    parse_event,
    parse_item_event,
)
from llmrec.settings import KafkaSettings
from tests.corpus.malformed_events import ITEM_VECTOR_DIM, item_json
from tests.unit.test_publishing import RecordingClient

BASE = {"event_id": "e-1", "item_id": "sku-123", "event_time": "2024-03-01T12:00:00Z"}
UPSERT = {
    **BASE,
    "op": "upsert",
    "title": "Stainless steel kettle",
    "text": "1.7 litres, boils in three minutes.",
    "categories": ["kitchen", "appliances"],
    "attributes": {"price": 39.9, "in_stock": True, "colours": ["steel", "black"], "watts": 2200},
    "vector": [0.1, -0.2, 0.3, 0.4],
}


def raw(body: dict[str, Any], **changes: Any) -> bytes:
    return json.dumps({**body, **changes}).encode()


def reason_of(payload: bytes) -> RejectReason:
    with pytest.raises(InvalidEvent) as caught:
        parse_item_event(payload)
    return caught.value.reason


@pytest.mark.parametrize(
    ("body", "cls"),
    [
        (UPSERT, UpsertItemEvent),
        ({**BASE, "op": "upsert", "title": "Minimal"}, UpsertItemEvent),
        ({**BASE, "op": "hide"}, HideItemEvent),
        ({**BASE, "op": "unhide", "source": "shop"}, UnhideItemEvent),
        ({**BASE, "op": "delete"}, DeleteItemEvent),
    ],
)
def test_each_op_parses_and_round_trips(body: dict[str, Any], cls: type) -> None:
    event = parse_item_event(raw(body))
    assert isinstance(event, cls)
    assert event.op == ItemOp(body["op"])
    assert parse_item_event(encode_event(event)) == event


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({**BASE}, RejectReason.UNKNOWN_ITEM_OP),
        ({**BASE, "op": "purge"}, RejectReason.UNKNOWN_ITEM_OP),
        ({**BASE, "op": None}, RejectReason.UNKNOWN_ITEM_OP),
        ({**BASE, "op": {"v": 1}}, RejectReason.UNKNOWN_ITEM_OP),
        ({**BASE, "event_type": "rating", "user_id": "u", "rating": 5}, RejectReason.WRONG_TOPIC),
        ({**BASE, "op": "hide", "title": "x"}, RejectReason.SCHEMA_VIOLATION),
        ({**BASE, "op": "delete", "colour": "blue"}, RejectReason.SCHEMA_VIOLATION),
        ({**BASE, "op": "unhide", "event_time": "2024-03-01T12:00:00"}, RejectReason.SCHEMA_VIOLATION),
        ({**BASE, "op": "hide", "event_time": "2999-01-01T00:00:00Z"}, RejectReason.SCHEMA_VIOLATION),
        ({**BASE, "op": "hide", "event_id": "has space"}, RejectReason.SCHEMA_VIOLATION),
        ({**BASE, "op": "hide", "schema_version": True}, RejectReason.SCHEMA_VIOLATION),
        ({**BASE, "op": "hide", "source": "s" * 65}, RejectReason.SCHEMA_VIOLATION),
        ({**UPSERT, "title": ""}, RejectReason.SCHEMA_VIOLATION),
        ({**UPSERT, "title": "a\u0007b"}, RejectReason.SCHEMA_VIOLATION),
        ({**UPSERT, "text": "x" * (MAX_TEXT_CHARS + 1)}, RejectReason.SCHEMA_VIOLATION),
        ({**UPSERT, "text": "nul \u0000"}, RejectReason.SCHEMA_VIOLATION),
        ({**UPSERT, "categories": ["ok", ""]}, RejectReason.SCHEMA_VIOLATION),
        ({**UPSERT, "categories": ["c" * 101]}, RejectReason.SCHEMA_VIOLATION),
        ({**UPSERT, "categories": [1]}, RejectReason.SCHEMA_VIOLATION),
        ({**UPSERT, "attributes": {"": 1}}, RejectReason.SCHEMA_VIOLATION),
        ({**UPSERT, "attributes": {"nested": [[1]]}}, RejectReason.SCHEMA_VIOLATION),
        ({**UPSERT, "attributes": {"none": None}}, RejectReason.SCHEMA_VIOLATION),
        ({**UPSERT, "attributes": {"x": "y" * MAX_ATTRIBUTES_BYTES}}, RejectReason.SCHEMA_VIOLATION),
        ({**UPSERT, "vector": [1, "2"]}, RejectReason.SCHEMA_VIOLATION),
        ({**UPSERT, "vector": [0.1] * 4097}, RejectReason.SCHEMA_VIOLATION),
        ({**UPSERT, "vector": 0.5}, RejectReason.SCHEMA_VIOLATION),
    ],
)
def test_invalid_item_events_are_rejected_with_their_reason(
    body: dict[str, Any], reason: RejectReason
) -> None:
    assert reason_of(raw(body)) == reason


@pytest.mark.parametrize(
    "item_id", ["mal:5114", "ml:1", "sku-123", "Café crème 250 g", "a", "x" * 256, "🍵/teapot?v=2#top"]
)
def test_item_ids_are_opaque_strings(item_id: str) -> None:
    assert parse_item_event(raw(BASE, op="hide", item_id=item_id)).item_id == item_id


@pytest.mark.parametrize(
    "item_id", [5114, 1.5, True, None, ["sku"], "", " sku", "sku ", "sku\t", "a\nb", "nul\u0000", "x" * 257]
)
def test_bad_item_ids_are_schema_violations(item_id: object) -> None:
    assert reason_of(raw(BASE, op="delete", item_id=item_id)) == RejectReason.SCHEMA_VIOLATION


def test_item_ids_are_strings_even_when_numeric() -> None:
    """No coercion: an integer id on the items topic is a mistake (interaction events still use integers)."""
    assert parse_item_event(raw(BASE, op="hide", item_id="5114")).item_id == "5114"
    assert reason_of(raw(BASE, op="hide", item_id=5114)) == RejectReason.SCHEMA_VIOLATION


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_vector_components_are_rejected(literal: str) -> None:
    payload = json.dumps({**UPSERT, "vector": ["MARK", 0.5]}).replace('"MARK"', literal).encode()
    assert reason_of(payload) == RejectReason.NON_FINITE_NUMBER


def test_a_non_finite_vector_built_in_python_is_refused_by_the_model() -> None:
    with pytest.raises(ValueError, match="finite"):
        UpsertItemEvent(**{**UPSERT, "vector": [math.nan, 0.0]})


def test_the_dimension_check_needs_the_configured_dimension() -> None:
    event = parse_item_event(raw(UPSERT))
    assert check_item_vector(event, 4) is None
    rejected = check_item_vector(event, 384)
    assert rejected is not None and rejected.reason is RejectReason.VECTOR_DIMENSION_MISMATCH
    assert "4" in rejected.detail and "384" in rejected.detail
    # No vector, or not an upsert: nothing to check.
    assert check_item_vector(parse_item_event(raw({**UPSERT, "vector": None})), 384) is None
    assert check_item_vector(parse_item_event(raw(BASE, op="hide")), 384) is None


def test_an_upsert_replaces_every_field_and_defaults_are_empty() -> None:
    event = parse_item_event(raw(BASE, op="upsert", title="Bare"))
    assert isinstance(event, UpsertItemEvent)
    assert (event.text, event.categories, event.attributes, event.vector) == (None, (), {}, None)


def test_delete_of_any_id_is_valid_on_the_wire() -> None:
    """Whether the item exists is the worker's business, not the schema's."""
    event = parse_item_event(raw(BASE, op="delete", item_id="never-seen-before"))
    assert isinstance(event, DeleteItemEvent)


def test_the_item_corpus_base_event_is_valid() -> None:
    """Each item corpus case changes one thing in these, so each fails for the reason it states."""
    for op in ("upsert", "hide", "unhide", "delete"):
        event = parse_item_event(item_json(op))
        assert check_item_vector(event, ITEM_VECTOR_DIM) is None


def test_an_item_event_is_not_an_interaction_event() -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw(UPSERT))
    assert caught.value.reason is RejectReason.UNKNOWN_EVENT_TYPE


def test_the_items_topic_is_versioned_and_created_with_the_others() -> None:
    kafka = KafkaSettings(topic_prefix="shop")
    assert kafka.items_topic == "shop.items.v1"
    assert kafka.items_topic in system_topics(kafka)
    assert kafka.items_topic not in kafka.event_topics  # the worker does not consume it yet


def test_item_events_are_published_on_the_items_topic_keyed_by_item_id() -> None:
    client = RecordingClient()
    kafka = KafkaSettings(topic_prefix="shop")
    event = parse_item_event(raw(UPSERT))
    with EventProducer(kafka, client=client) as producer:
        assert producer.publish_item(event) == "shop.items.v1"
    assert client.messages == [("shop.items.v1", b"sku-123", encode_event(event))]
    assert producer.delivered == 1
