"""BatchProcessor's wait for items it does not know yet (``unknown_item_wait_s``): the items topic is not
ordered against the interaction topics, so an interaction may arrive before its item. With a fake clock
that only the injected ``sleep`` moves, so no test takes real time."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from encoder_triton.client import EncodeResult
from llmrec.item_ids import item_key
from llmrec.preference_state import Vector
from llmrec.settings import KafkaSettings, PreferenceSettings
from llmrec.store.fake import FakeStore
from llmrec.store.interface import StoreUnavailable
from stream.deadletter import DeadLetter
from stream.processing import (
    BatchProcessor,
    BatchResult,
    RawMessage,
    decay_from_settings,
    topic_event_types,
    weights_from_settings,
)
from stream.retry import Backoff

KAFKA = KafkaSettings()
RATINGS, WATCH = KAFKA.ratings_topic, KAFKA.watch_topic
DIM = 4
KNOWN = "shop:kettle-17"
LATE = "shop:toaster-2"  # arrives while the batch waits
NEVER = "shop:ghost-9"  # never arrives
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Clock:
    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class Items:
    """Item vectors the test changes: ``refresh`` (the processor's ``refresh_items``) makes ``LATE`` known
    once ``arrives_after_s`` have passed on the clock, as the catalogue's change feed would once another
    agent stored the item; the first ``fail_first`` refreshes raise ``StoreUnavailable``."""

    clock: Clock
    arrives_after_s: float | None = None
    fail_first: int = 0
    refreshes: int = 0
    vectors: dict[int, Vector] = field(
        default_factory=lambda: {item_key(KNOWN): np.array([1, 0, 0, 0], dtype=np.float32)}
    )

    def __post_init__(self) -> None:
        self.start = self.clock.now

    @property
    def dim(self) -> int:
        return DIM

    def get(self, item_id: int) -> Vector | None:
        return self.vectors.get(item_id)

    async def refresh(self) -> int:
        self.refreshes += 1
        if self.refreshes <= self.fail_first:
            raise StoreUnavailable("catalogue away")
        if self.arrives_after_s is not None and self.clock.now - self.start >= self.arrives_after_s:
            self.vectors[item_key(LATE)] = np.array([0, 1, 0, 0], dtype=np.float32)
            return 1
        return 0


@dataclass
class FakeEncoder:
    calls: int = 0

    async def embed_and_score(self, texts: Sequence[str]) -> EncodeResult:
        self.calls += 1
        return EncodeResult(
            embeddings=np.full((len(texts), DIM), 0.5, np.float32),
            sentiment=np.full(len(texts), 0.8, np.float32),
        )


@dataclass
class FakeSink:
    letters: list[DeadLetter] = field(default_factory=list)

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(letter.to_json()) for letter in self.letters]


@dataclass
class Harness:
    wait_s: float
    arrives_after_s: float | None = None  # when LATE becomes known, from the start
    fail_first: int = 0
    store: FakeStore = field(default_factory=FakeStore)
    sink: FakeSink = field(default_factory=FakeSink)
    clock: Clock = field(default_factory=Clock)

    def __post_init__(self) -> None:
        self.items = Items(self.clock, self.arrives_after_s, self.fail_first)

    async def process(self, batch: Sequence[RawMessage], refresh: bool = True) -> BatchResult:
        prefs = PreferenceSettings()
        processor = BatchProcessor(
            store=self.store,
            encoder=FakeEncoder(),
            dead_letters=self.sink,
            item_vectors=self.items,
            topic_types=topic_event_types(KAFKA),
            weights=weights_from_settings(prefs),
            decay=decay_from_settings(prefs),
            backoff=Backoff(initial_s=0.5, max_s=4.0, jitter=0.0),
            sleep=self.clock.sleep,
            now=lambda: NOW,
            refresh_items=self.items.refresh if refresh else None,
            unknown_item_wait_s=self.wait_s,
            clock=self.clock,
        )
        result = await processor.process(batch)
        assert result.received == result.applied + result.duplicates + result.dead_lettered
        return result

    @property
    def waited_s(self) -> float:
        return sum(self.clock.sleeps)


_offsets = iter(range(100_000))


def rating(event_id: str, item_id: str, hour: int, user: str = "alice", score: float = 8) -> RawMessage:
    value = {
        "event_type": "rating",
        "event_id": event_id,
        "user_id": user,
        "item_id": item_id,
        "event_time": f"2025-06-01T{hour:02d}:00:00Z",
        "rating": score,
    }
    return RawMessage(RATINGS, 0, next(_offsets), user.encode(), json.dumps(value).encode())


def watch(event_id: str, item_id: str, hour: int, user: str = "alice") -> RawMessage:
    value = {
        "event_type": "watch",
        "event_id": event_id,
        "user_id": user,
        "item_id": item_id,
        "event_time": f"2025-06-01T{hour:02d}:00:00Z",
        "status": "completed",
        "episodes_watched": 1,
        "total_episodes": 1,
    }
    return RawMessage(WATCH, 0, next(_offsets), user.encode(), json.dumps(value).encode())


async def test_an_event_whose_item_arrives_while_it_waits_is_applied_in_batch_order() -> None:
    # The item shows up 2 s into the wait: two refreshes (at 0 and 1 s) do not find it, the next one does.
    h = Harness(wait_s=10.0, arrives_after_s=2.0)
    batch = [rating("e1", KNOWN, 1), rating("e2", LATE, 2), rating("e3", KNOWN, 3), watch("e4", LATE, 4)]
    result = await h.process(batch)

    assert (result.applied, result.duplicates, result.dead_lettered) == (4, 0, 0)
    assert h.sink.letters == []
    assert h.clock.sleeps == [1.0, 1.0]  # the catalogue is re-read once a second, until the item is there
    assert h.items.refreshes >= 3
    # One transaction, the events in the order they were consumed (the ledger keeps insertion order).
    assert h.store.calls["apply_batch"] == 1
    assert list(h.store.ledger) == ["e1", "e2", "e3", "e4"]
    assert h.store.ledger["e2"].item_id == item_key(LATE)
    profile = h.store.profiles["alice"]
    assert (profile.ratings, profile.watch_events) == (3, 1)
    # The late item's vector moved the profile: its dimension is not zero.
    assert profile.state.vector_sum[1] > 0 and profile.state.vector_sum[0] > 0


async def test_an_event_whose_item_never_comes_is_dead_lettered_after_the_wait() -> None:
    h = Harness(wait_s=5.0)
    missing = rating("e2", NEVER, 2)
    result = await h.process([rating("e1", KNOWN, 1), missing, rating("e3", KNOWN, 3)])

    assert (result.applied, result.dead_lettered) == (2, 1)
    assert result.reasons == {"unknown_item": 1}
    (record,) = h.sink.records()
    assert record["reason"] == "unknown_item"
    assert (record["topic"], record["offset"]) == (RATINGS, missing.offset)
    assert NEVER in record["detail"]
    assert h.waited_s == pytest.approx(5.0)
    assert all(s <= 1.0 for s in h.clock.sleeps)
    assert h.clock.sleeps == [1.0] * 5  # re-read once a second
    assert h.items.refreshes >= 6  # at 0, 1, 2, 3, 4 and 5 seconds at least
    assert list(h.store.ledger) == ["e1", "e3"]


async def test_with_no_wait_an_unknown_item_is_dead_lettered_at_once() -> None:
    h = Harness(wait_s=0.0)
    result = await h.process([rating("e1", NEVER, 1), rating("e2", KNOWN, 2)])

    assert (result.applied, result.dead_lettered) == (1, 1)
    assert [r["reason"] for r in h.sink.records()] == ["unknown_item"]
    assert h.clock.sleeps == []


async def test_without_a_refresh_callback_the_wait_still_ends() -> None:
    h = Harness(wait_s=3.0)
    result = await h.process([rating("e1", NEVER, 1)], refresh=False)
    assert result.dead_lettered == 1 and h.waited_s == pytest.approx(3.0)
    assert h.items.refreshes == 0


async def test_an_item_that_arrives_and_one_that_does_not_in_the_same_batch() -> None:
    h = Harness(wait_s=4.0, arrives_after_s=1.0)
    batch = [rating("e1", NEVER, 1), rating("e2", LATE, 2), rating("e3", KNOWN, 3, user="bob")]
    result = await h.process(batch)

    assert (result.applied, result.dead_lettered) == (2, 1)
    assert [r["offset"] for r in h.sink.records()] == [batch[0].offset]
    assert list(h.store.ledger) == ["e2", "e3"]
    assert h.waited_s == pytest.approx(4.0)  # the batch waits for the item that never comes


async def test_a_failing_catalogue_refresh_does_not_end_the_wait() -> None:
    h = Harness(wait_s=10.0, arrives_after_s=1.0, fail_first=3)
    result = await h.process([rating("e1", LATE, 1)])
    assert (result.applied, result.dead_lettered) == (1, 0)
    assert h.items.refreshes == 4  # three failed, the fourth found the item
    assert 1.0 <= h.waited_s <= 3.0


async def test_a_batch_of_known_items_does_not_wait() -> None:
    h = Harness(wait_s=10.0)
    result = await h.process([rating("e1", KNOWN, 1), watch("e2", KNOWN, 2)])
    assert result.applied == 2
    assert h.clock.sleeps == []
    assert h.items.refreshes <= 1  # at most the change-feed read at the start of a batch


async def test_a_replayed_event_whose_item_arrived_late_is_a_duplicate() -> None:
    h = Harness(wait_s=10.0, arrives_after_s=1.0)
    await h.process([rating("e1", LATE, 1)])
    result = await h.process([rating("e1", LATE, 1)])
    assert (result.applied, result.duplicates, result.dead_lettered) == (0, 1, 0)
