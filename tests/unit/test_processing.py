"""BatchProcessor: what happens to each message of a batch, with the kernel's in-memory store and fakes for
the encoder and sink."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from encoder_triton.client import EncodeResult, EncoderRejected, EncoderUnavailable
from llmrec.events.schema import EventType
from llmrec.item_ids import item_key, item_keys
from llmrec.preference_state import PreferenceState
from llmrec.settings import KafkaSettings, PreferenceSettings
from llmrec.store.fake import FakeStore
from llmrec.store.interface import ApplyResult, LedgerEntry, ProfileUpdater
from ranker.preferences import DecayPolicy, SignalWeights
from stream.deadletter import DeadLetter, SinkUnavailable
from stream.item_vectors import ArrayItemVectors, ItemVectors
from stream.processing import (
    BatchProcessor,
    PreferenceUpdater,
    RawMessage,
    decay_from_settings,
    topic_event_types,
    weights_from_settings,
)
from stream.retry import Backoff

KAFKA = KafkaSettings()
RATINGS, REVIEWS, WATCH = KAFKA.ratings_topic, KAFKA.reviews_topic, KAFKA.watch_topic
DIM = 4
RATED, REVIEWED, WATCHED = "mal:5114", "mal:9253", "mal:1535"  # the events' (catalogue) item ids
KEY = {item_id: item_key(item_id) for item_id in (RATED, REVIEWED, WATCHED)}  # what vectors and ledger hold
ITEMS = ArrayItemVectors(item_keys([RATED, REVIEWED, WATCHED]), np.eye(3, DIM, dtype=np.float32))
NOW = datetime(2026, 1, 1, tzinfo=UTC)


# -- fakes ------------------------------------------------------------------------------------------------


@dataclass
class FakeEncoder:
    """Sentiment 0.9 for texts with "great", 0.1 otherwise; texts containing "\\x7f" are bad input."""

    unavailable: int = 0
    texts_seen: list[str] = field(default_factory=list)
    calls: int = 0

    async def embed_and_score(self, texts: Sequence[str]) -> EncodeResult:
        self.calls += 1
        if self.unavailable:
            self.unavailable -= 1
            raise EncoderUnavailable("triton down")
        self.texts_seen.extend(texts)
        sentiment = np.array([0.9 if "great" in t else 0.1 for t in texts], dtype=np.float32)
        result = EncodeResult(embeddings=np.ones((len(texts), DIM), np.float32) / 2, sentiment=sentiment)
        bad = {i: "empty_text: nothing left" for i, t in enumerate(texts) if "\x7f" in t}
        if bad:
            result.sentiment[list(bad)] = np.nan
            raise EncoderRejected(bad, result)
        return result


@dataclass
class FakeSink:
    fail: int = 0
    letters: list[DeadLetter] = field(default_factory=list)

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        if self.fail:
            self.fail -= 1
            raise SinkUnavailable("broker away")
        self.letters.extend(letters)

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(letter.to_json()) for letter in self.letters]


@dataclass
class Harness:
    store: FakeStore = field(default_factory=FakeStore)
    encoder: FakeEncoder = field(default_factory=FakeEncoder)
    sink: FakeSink = field(default_factory=FakeSink)
    sleeps: list[float] = field(default_factory=list)
    items: ItemVectors = ITEMS

    def processor(self) -> BatchProcessor:
        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        prefs = PreferenceSettings()
        return BatchProcessor(
            store=self.store,
            encoder=self.encoder,
            dead_letters=self.sink,
            item_vectors=self.items,
            topic_types=topic_event_types(KAFKA),
            weights=weights_from_settings(prefs),
            decay=decay_from_settings(prefs),
            backoff=Backoff(initial_s=0.5, max_s=4.0, jitter=0.0),
            sleep=sleep,
            now=lambda: NOW,
        )


_offsets = iter(range(10_000))


def msg(topic: str, value: bytes | dict[str, Any] | None, key: bytes | None = b"alice") -> RawMessage:
    raw = json.dumps(value).encode() if isinstance(value, dict) else value
    return RawMessage(topic=topic, partition=2, offset=next(_offsets), key=key, value=raw)


def rating(event_id: str, item_id: str = RATED, score: float = 9, user: str = "alice") -> dict[str, Any]:
    return {
        "event_type": "rating",
        "event_id": event_id,
        "user_id": user,
        "item_id": item_id,
        "event_time": "2025-06-01T12:00:00Z",
        "rating": score,
    }


def review(event_id: str, text: str, item_id: str = REVIEWED) -> dict[str, Any]:
    return {
        "event_type": "review",
        "event_id": event_id,
        "user_id": "alice",
        "item_id": item_id,
        "event_time": "2025-06-02T12:00:00Z",
        "text": text,
    }


def watch(event_id: str, status: str = "completed") -> dict[str, Any]:
    return {
        "event_type": "watch",
        "event_id": event_id,
        "user_id": "alice",
        "item_id": WATCHED,
        "event_time": "2025-06-03T12:00:00Z",
        "status": status,
        "episodes_watched": 12,
        "total_episodes": 12,
    }


# -- valid events -----------------------------------------------------------------------------------------


async def test_valid_events_are_applied_with_their_signal_strength() -> None:
    h = Harness()
    batch = [
        msg(RATINGS, rating("r1", score=10)),
        msg(REVIEWS, review("v1", "A great show")),
        msg(WATCH, watch("w1")),
    ]
    result = await h.processor().process(batch)

    assert (result.received, result.applied, result.duplicates, result.dead_lettered) == (3, 3, 0, 0)
    ledger = h.store.ledger
    assert ledger["r1"].strength == pytest.approx(0.4) and ledger["r1"].rating == 10
    assert ledger["v1"].sentiment == pytest.approx(0.9) and ledger["v1"].strength == pytest.approx(0.3 * 0.8)
    assert ledger["w1"].strength == pytest.approx(0.3) and ledger["w1"].status == "completed"
    assert ledger["w1"].episodes_watched == 12
    assert (ledger["r1"].source_topic, ledger["r1"].source_partition) == (RATINGS, 2)
    assert ledger["r1"].event_type is EventType.RATING
    # The ledger holds the items' keys, not the events' string ids.
    assert [ledger[e].item_id for e in ("r1", "v1", "w1")] == [KEY[RATED], KEY[REVIEWED], KEY[WATCHED]]
    profile = h.store.profiles["alice"].state
    assert profile.vector_sum.shape == (DIM,)
    assert profile.vector_sum[0] > 0 and profile.vector_sum[1] > 0 and profile.vector_sum[2] > 0
    assert h.sink.letters == []


async def test_an_empty_batch_does_nothing() -> None:
    h = Harness()
    result = await h.processor().process([])
    assert (result.applied, result.dead_lettered, h.store.calls.total(), h.encoder.calls) == (0, 0, 0, 0)


# -- invalid events ---------------------------------------------------------------------------------------


async def test_invalid_events_are_dead_lettered_with_a_reason_and_their_origin() -> None:
    h = Harness()
    bad = [
        msg(RATINGS, b"{not json"),
        msg(RATINGS, b""),
        msg(RATINGS, b"\xff\xfe rating"),
        msg(RATINGS, b'{"event_type": "rating", "rating": NaN}'),
        msg(RATINGS, review("x1", "wrong topic")),
        msg(RATINGS, {**rating("x2"), "rating": 11}),
        msg(RATINGS, rating("x3", item_id="mal:999999")),
        msg(RATINGS, {**rating("x4"), "item_id": 5114}),  # the MAL id without its namespace
        msg(RATINGS, b"[1, 2]"),
        msg(RATINGS, {"event_type": "like"}),
    ]
    good = msg(RATINGS, rating("ok"))
    result = await h.processor().process([*bad, good])

    assert (result.applied, result.dead_lettered) == (1, len(bad))
    # One letter per bad message, found by its offset (an unknown item's letter is written after the
    # others: it may wait for the item to arrive first).
    by_offset = {r["offset"]: r for r in h.sink.records()}
    records = [by_offset[m.offset] for m in bad]
    assert [r["reason"] for r in records] == [
        "invalid_json",
        "empty_message",
        "invalid_utf8",
        "non_finite_number",
        "wrong_topic",
        "schema_violation",
        "unknown_item",
        "schema_violation",
        "not_an_object",
        "unknown_event_type",
    ]
    assert result.reasons["invalid_json"] == 1
    first = records[0]
    assert (first["topic"], first["partition"], first["offset"], first["key"]) == (
        RATINGS,
        2,
        bad[0].offset,
        "alice",
    )
    assert first["payload"] == "{not json" and first["detail"]
    assert first["failed_at"] == "2026-01-01T00:00:00Z"
    undecodable = records[2]
    assert base64.b64decode(undecodable["payload_base64"]) == b"\xff\xfe rating"
    assert "\ufffd" in undecodable["payload"]
    assert records[1]["payload"] == "" and records[1]["payload_base64"] == ""
    assert "'mal:999999'" in records[6]["detail"]
    assert "string id" in records[7]["detail"]
    assert set(h.store.ledger) == {"ok"}


async def test_a_message_without_value_or_key_is_dead_lettered() -> None:
    h = Harness()
    await h.processor().process([msg(WATCH, None, key=None)])
    (record,) = h.sink.records()
    assert record["reason"] == "empty_message"
    assert record["key"] is None and record["payload"] is None and record["payload_base64"] is None


# -- duplicates -------------------------------------------------------------------------------------------


async def test_a_redelivered_batch_is_counted_as_duplicates_and_changes_nothing() -> None:
    h = Harness()
    processor = h.processor()
    batch = [msg(RATINGS, rating("r1")), msg(RATINGS, rating("r2", item_id=REVIEWED))]
    await processor.process(batch)
    state = h.store.profiles["alice"].state
    again = await processor.process(batch)
    assert (again.applied, again.duplicates) == (0, 2)
    assert h.store.profiles["alice"].state is state


async def test_a_repeated_event_id_within_a_batch_is_applied_once() -> None:
    h = Harness()
    result = await h.processor().process([msg(RATINGS, rating("r1")), msg(RATINGS, rating("r1", score=1))])
    assert (result.applied, result.duplicates) == (1, 1)
    assert h.store.ledger["r1"].rating == 9


async def test_a_replayed_review_is_not_scored_again() -> None:
    h = Harness()
    processor = h.processor()
    await processor.process([msg(REVIEWS, review("v1", "great"))])
    result = await processor.process([msg(REVIEWS, review("v1", "great")), msg(REVIEWS, review("v2", "meh"))])
    assert (result.applied, result.duplicates) == (1, 1)
    assert h.encoder.texts_seen == ["great", "meh"]


# -- transient failures -----------------------------------------------------------------------------------


async def test_reviews_wait_for_the_encoder_and_are_applied_once() -> None:
    h = Harness(encoder=FakeEncoder(unavailable=3))
    result = await h.processor().process(
        [msg(REVIEWS, review("v1", "great fun")), msg(REVIEWS, review("v2", "dull"))]
    )
    assert (result.applied, result.dead_lettered) == (2, 0)
    assert h.encoder.calls == 4
    assert h.sleeps == [0.5, 1.0, 2.0]  # exponential backoff
    assert result.retries == 3
    assert h.store.calls["apply_batch"] == 1
    assert h.store.ledger["v1"].sentiment == pytest.approx(0.9)


async def test_a_review_the_encoder_rejects_is_dead_lettered_and_the_rest_applied() -> None:
    h = Harness()
    result = await h.processor().process(
        [
            msg(REVIEWS, review("v1", "great")),
            msg(REVIEWS, review("v2", "\x7f\x7f")),
            msg(REVIEWS, review("v3", "ok")),
        ]
    )
    assert (result.applied, result.dead_lettered) == (2, 1)
    (record,) = h.sink.records()
    assert record["reason"] == "encoder_rejected" and "empty_text" in record["detail"]
    assert set(h.store.ledger) == {"v1", "v3"}
    assert h.store.ledger["v3"].sentiment == pytest.approx(0.1)


async def test_the_store_being_down_retries_the_whole_batch() -> None:
    h = Harness(store=FakeStore(fail=2))
    result = await h.processor().process([msg(RATINGS, rating("r1")), msg(RATINGS, b"junk")])
    assert (result.applied, result.dead_lettered, result.retries) == (1, 1, 2)
    assert h.store.calls["apply_batch"] == 3 and len(h.sleeps) == 2


async def test_the_dead_letter_topic_being_down_is_retried() -> None:
    h = Harness(sink=FakeSink(fail=1))
    result = await h.processor().process([msg(RATINGS, b"junk")])
    assert result.dead_lettered == 1 and len(h.sink.letters) == 1 and h.sleeps == [0.5]


async def test_an_unexpected_error_propagates_to_the_caller() -> None:
    class Broken(FakeStore):
        async def apply_batch(self, entries: Sequence[LedgerEntry], update: ProfileUpdater) -> ApplyResult:
            raise RuntimeError("bug")

    h = Harness(store=Broken())
    with pytest.raises(RuntimeError):
        await h.processor().process([msg(RATINGS, rating("r1"))])


# -- the updater ------------------------------------------------------------------------------------------


def _entry(event_id: str, item_id: int, strength: float = 0.4, user: str = "u") -> LedgerEntry:
    return LedgerEntry(
        event_id=event_id,
        user_id=user,
        item_id=item_id,
        event_type=EventType.RATING,
        event_time=datetime(2025, 1, 1, tzinfo=UTC),
        strength=strength,
    )


def test_the_updater_starts_new_users_empty_and_folds_existing_ones() -> None:
    updater = PreferenceUpdater(ITEMS, DecayPolicy())
    states = updater({}, [_entry("a", KEY[RATED]), _entry("b", KEY[REVIEWED], user="v")])
    assert states["u"].vector_sum.tolist() == pytest.approx([0.4, 0, 0, 0])
    again = updater(states, [_entry("c", KEY[REVIEWED])])
    assert again["u"].vector_sum.tolist() == pytest.approx([0.4, 0.4, 0, 0])
    assert again["u"].weight_sum == pytest.approx(0.8)


def test_the_updater_restarts_a_profile_of_another_dimension() -> None:
    updater = PreferenceUpdater(ITEMS, DecayPolicy())
    stale = PreferenceState(vector_sum=np.ones(7, np.float32), weight_sum=3.0, ref_time_s=0.0)
    states = updater({"u": stale}, [_entry("a", KEY[RATED])])
    assert states["u"].vector_sum.shape == (DIM,) and states["u"].weight_sum == pytest.approx(0.4)


def test_the_updater_gives_a_state_even_when_no_item_vector_is_left() -> None:
    updater = PreferenceUpdater(ITEMS, DecayPolicy())
    states = updater({}, [_entry("a", item_key("mal:424242"))])
    assert states["u"].is_empty


def test_settings_map_onto_the_preference_model() -> None:
    prefs = PreferenceSettings(weight_rating=0.5, decay_alpha=0.9, decay_unit_s=60.0)
    assert weights_from_settings(prefs) == SignalWeights(rating=0.5, review=0.3, viewing=0.2, completion=0.1)
    assert decay_from_settings(prefs) == DecayPolicy(alpha=0.9, unit_s=60.0)
    assert topic_event_types(KAFKA)[REVIEWS] is EventType.REVIEW


async def test_a_crash_inside_validation_dead_letters_the_message_instead_of_stalling_the_partition() -> None:
    class BrokenVectors:
        dim = DIM

        def get(self, item_id: int) -> np.ndarray:
            raise RuntimeError("index corrupted")

    h = Harness(items=BrokenVectors())
    result = await h.processor().process([msg(RATINGS, rating("crash-1"))])

    assert (result.applied, result.dead_lettered) == (0, 1)
    [record] = h.sink.records()
    assert record["reason"] == "validation_crashed"
    assert "RuntimeError: index corrupted" in record["detail"]
