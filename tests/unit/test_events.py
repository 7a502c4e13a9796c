"""The event contract: what parses, what is rejected and with which reason code."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from jobs.event_schemas import SCHEMA_DIR
from llmrec.events.schema import (
    ITEM_SCHEMA_FILE,
    EventType,
    RatingEvent,
    ReviewEvent,
    WatchEvent,
    WatchStatus,
    json_schemas,
)
from llmrec.events.validation import InvalidEvent, RejectReason, encode_event, parse_event

BASE = {"event_id": "e-1", "user_id": "alice", "item_id": "mal:5114", "event_time": "2024-03-01T12:00:00Z"}


def raw(**fields: object) -> bytes:
    return json.dumps({**BASE, **fields}).encode()


def reason_of(payload: bytes, expected: EventType | None = None) -> RejectReason:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(payload, expected)
    return caught.value.reason


def test_each_event_type_round_trips_through_the_wire_form() -> None:
    events = [
        RatingEvent(**BASE, rating=9),  # type: ignore[arg-type]
        ReviewEvent(**BASE, text="Loved it.", rating=8, tag="recommended"),  # type: ignore[arg-type]
        WatchEvent(**BASE, status=WatchStatus.WATCHING, episodes_watched=3, total_episodes=64),  # type: ignore[arg-type]
    ]
    for event in events:
        assert parse_event(encode_event(event), event.event_type) == event


def test_event_time_is_normalised_to_utc() -> None:
    event = parse_event(raw(event_type="rating", rating=7, event_time="2024-03-01T14:00:00+02:00"))
    assert event.event_time == datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", RejectReason.EMPTY),
        (b"\xff\xfe", RejectReason.INVALID_UTF8),
        (b"{not json", RejectReason.INVALID_JSON),
        (b"[1, 2]", RejectReason.NOT_AN_OBJECT),
        (raw(event_type="purchase"), RejectReason.UNKNOWN_EVENT_TYPE),
        (raw(rating=5), RejectReason.UNKNOWN_EVENT_TYPE),
        (raw(event_type="rating", rating=11), RejectReason.SCHEMA_VIOLATION),
        (raw(event_type="rating", rating=0), RejectReason.SCHEMA_VIOLATION),
        (raw(event_type="rating", rating="nine"), RejectReason.SCHEMA_VIOLATION),
        (raw(event_type="rating"), RejectReason.SCHEMA_VIOLATION),
        (raw(event_type="rating", rating=5, colour="blue"), RejectReason.SCHEMA_VIOLATION),
        (raw(event_type="rating", rating=5, item_id=5114), RejectReason.SCHEMA_VIOLATION),
        (raw(event_type="rating", rating=5, item_id=-3), RejectReason.SCHEMA_VIOLATION),
        (raw(event_type="rating", rating=5, item_id=5114.0), RejectReason.SCHEMA_VIOLATION),
        (raw(event_type="rating", rating=5, item_id=True), RejectReason.SCHEMA_VIOLATION),
        (raw(event_type="rating", rating=5, item_id=""), RejectReason.SCHEMA_VIOLATION),
        (raw(event_type="rating", rating=5, item_id=" mal:5114"), RejectReason.SCHEMA_VIOLATION),
        (raw(event_type="rating", rating=5, item_id="mal:5114\n"), RejectReason.SCHEMA_VIOLATION),
        (raw(event_type="rating", rating=5, item_id="x" * 257), RejectReason.SCHEMA_VIOLATION),
        (raw(event_type="rating", rating=5, user_id=""), RejectReason.SCHEMA_VIOLATION),
        (
            raw(event_type="rating", rating=5, event_time="1969-12-31T00:00:00Z"),
            RejectReason.SCHEMA_VIOLATION,
        ),
        (raw(event_type="rating", rating=5, event_time="2024-03-01T12:00:00"), RejectReason.SCHEMA_VIOLATION),
        (raw(event_type="review", text="   "), RejectReason.SCHEMA_VIOLATION),
        (raw(event_type="review", text="bad \x00 byte"), RejectReason.SCHEMA_VIOLATION),
        (raw(event_type="review", text="x" * 20_001), RejectReason.SCHEMA_VIOLATION),
        (raw(event_type="watch", status="binged", episodes_watched=1), RejectReason.SCHEMA_VIOLATION),
        (raw(event_type="watch", status="watching", episodes_watched=-1), RejectReason.SCHEMA_VIOLATION),
        (b'{"event_type": "rating", "rating": NaN}', RejectReason.NON_FINITE_NUMBER),
        (b'{"event_type": "rating", "rating": Infinity}', RejectReason.NON_FINITE_NUMBER),
        (b'{"event_type": "rating", "rating": 1e999}', RejectReason.NON_FINITE_NUMBER),
        (b"x" * (300 * 1024), RejectReason.TOO_LARGE),
    ],
)
def test_malformed_events_are_rejected_with_a_stable_reason(payload: bytes, reason: RejectReason) -> None:
    assert reason_of(payload) == reason


def test_far_future_event_time_is_rejected() -> None:
    future = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    assert reason_of(raw(event_type="rating", rating=5, event_time=future)) == RejectReason.SCHEMA_VIOLATION


def test_an_event_on_another_types_topic_is_rejected() -> None:
    assert reason_of(raw(event_type="rating", rating=5), EventType.REVIEW) == RejectReason.WRONG_TOPIC


def test_rejection_detail_names_the_field() -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw(event_type="rating", rating=42))
    assert "rating" in caught.value.detail


def test_a_numeric_item_id_is_refused_and_the_detail_asks_for_the_string_id() -> None:
    """5114 is not guessed into "mal:5114": the producer is told to send the catalogue's string id."""
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw(event_type="rating", rating=5, item_id=5114))
    assert caught.value.reason is RejectReason.SCHEMA_VIOLATION
    assert "item_id" in caught.value.detail and "string id" in caught.value.detail
    assert "'mal:5114'" in caught.value.detail


@pytest.mark.parametrize("item_id", ["mal:5114", "ml:1", "sku-123", "Café crème 250 g", "x" * 256])
def test_any_catalogue_string_id_is_an_item_id(item_id: str) -> None:
    event = parse_event(raw(event_type="rating", rating=5, item_id=item_id))
    assert event.item_id == item_id


def test_published_json_schemas_match_the_models() -> None:
    """proto/events/v1/ is generated by `llmrec schema`; a model change without regenerating fails here."""
    assert set(json_schemas()) == {
        "rating.schema.json",
        "review.schema.json",
        "watch.schema.json",
        ITEM_SCHEMA_FILE,
    }
    for name, body in json_schemas().items():
        committed = json.loads((SCHEMA_DIR / name).read_text())
        assert committed == body, f"{name} is stale: run `llmrec schema`"
        if name == ITEM_SCHEMA_FILE:
            assert committed["discriminator"]["propertyName"] == "op"
            assert all("op" in variant["required"] for variant in committed["$defs"].values())
        else:
            assert "event_type" in committed["required"]


def test_no_schema_file_is_left_over() -> None:
    """A schema file with no model behind it would mislead the other languages."""
    assert {path.name for path in SCHEMA_DIR.glob("*.schema.json")} == set(json_schemas())
