"""Store pieces that need no server: the binary vector codec, the unreachable-server error, and the one
in-memory store (``llmrec.store.fake``) that unit tests use in place of PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from llmrec.events.schema import EventType, WatchStatus
from llmrec.preference_state import PreferenceState
from llmrec.store import LedgerEntry, StoreUnavailable
from llmrec.store.arrays import FLOAT4_OID, dump_float4_array, load_float4_array
from llmrec.store.fake import FakeStore
from llmrec.store.postgres import PostgresStore

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def test_vectors_round_trip_through_the_binary_array_format() -> None:
    vector = np.array([0.5, -1.25, 3.0e-8, 1e30], dtype=np.float32)
    data = dump_float4_array(vector)
    assert struct.unpack_from("!iiiii", data) == (1, 0, FLOAT4_OID, 4, 1)
    np.testing.assert_array_equal(load_float4_array(data), vector)
    assert load_float4_array(dump_float4_array(np.zeros(0, np.float32))).shape == (0,)


def test_a_two_dimensional_array_is_refused_on_load() -> None:
    data = struct.pack("!iiiiiii", 2, 0, FLOAT4_OID, 1, 1, 1, 1) + struct.pack("!if", 4, 1.0)
    with pytest.raises(Exception, match="one-dimensional"):
        load_float4_array(data)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_server_is_a_transient_error_that_hides_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "s3cr3t-pa55"
    store = PostgresStore(f"postgresql://llmrec:{secret}@127.0.0.1:{_closed_port()}/llmrec", min_size=1)
    with caplog.at_level(logging.DEBUG), pytest.raises(StoreUnavailable) as info:
        await store.open(timeout=1.0)
    await store.close()
    assert secret not in str(info.value)
    assert secret not in repr(info.value.__cause__)
    assert secret not in caplog.text


# -- the in-memory store ----------------------------------------------------------------------------------


def entry(
    event_id: str,
    item_id: int,
    hours: float,
    event_type: EventType = EventType.RATING,
    strength: float = 0.4,
    rating: float | None = None,
    status: WatchStatus | None = None,
    user_id: str = "u",
) -> LedgerEntry:
    return LedgerEntry(
        event_id=event_id,
        user_id=user_id,
        item_id=item_id,
        event_type=event_type,
        event_time=T0 + timedelta(hours=hours),
        strength=strength,
        rating=rating,
        status=status.value if status is not None else None,
    )


class CountingUpdater:
    """A state per user whose weight is the sum of its entries' strengths; records what it was given."""

    def __init__(self) -> None:
        self.given: list[list[str]] = []

    def __call__(
        self, current: dict[str, PreferenceState], new_entries: Sequence[LedgerEntry]
    ) -> dict[str, PreferenceState]:
        self.given.append([e.event_id for e in new_entries])
        out: dict[str, PreferenceState] = {}
        for e in new_entries:
            state = out.get(e.user_id, current.get(e.user_id, PreferenceState.empty(2)))
            vector = state.vector_sum + np.float32(e.strength)
            out[e.user_id] = PreferenceState(vector, state.weight_sum + e.strength, e.event_time.timestamp())
        return out


async def test_the_fake_applies_batches_idempotently_by_event_id() -> None:
    store, update = FakeStore(), CountingUpdater()
    first = await store.apply_batch(
        [entry("a", 1, 0, rating=9.0), entry("b", 2, 1, rating=8.0), entry("a", 3, 2, rating=1.0)], update
    )
    assert (first.applied, first.duplicates) == (2, 1)
    assert store.ledger["a"].item_id == 1  # the first occurrence of an id wins
    again = await store.apply_batch([entry("b", 2, 1), entry("c", 4, 3, EventType.WATCH)], update)
    assert (again.applied, again.duplicates) == (1, 1)
    assert update.given == [["a", "b"], ["c"]]  # the updater sees only entries new to the ledger
    profile = await store.get_profile("u")
    assert profile is not None
    assert (profile.ratings, profile.reviews, profile.watch_events) == (2, 0, 1)
    assert profile.state.weight_sum == pytest.approx(1.2)
    assert profile.last_event_time == T0 + timedelta(hours=3)
    nothing = await store.apply_batch([entry("a", 1, 0), entry("c", 4, 3)], update)
    assert (nothing.applied, nothing.duplicates) == (0, 2) and len(update.given) == 2
    assert await store.get_profile("u") is profile
    assert await store.known_event_ids(["a", "c", "zzz"]) == {"a", "c"}
    assert await store.users_with_profiles(10) == ["u"]


async def test_the_fake_aggregates_seen_items_like_the_ledger_query() -> None:
    store = FakeStore()
    store.apply(
        [
            entry("r1", 7, 0, rating=6.0, strength=0.1),
            entry("r2", 7, 5, rating=8.0, strength=0.2),
            entry("v1", 7, 2, EventType.REVIEW, strength=0.3),
            entry("w1", 7, 1, EventType.WATCH, strength=0.1, status=WatchStatus.WATCHING),
            entry("w2", 7, 3, EventType.WATCH, strength=0.3, status=WatchStatus.COMPLETED),
            entry("w3", 9, 4, EventType.WATCH, strength=0.2, status=WatchStatus.DROPPED),
            entry("x1", 8, 0, strength=-0.4, rating=1.0),
            entry("o1", 7, 0, user_id="other"),
        ],
        CountingUpdater(),
    )
    profile, seen = await store.read_user("u")
    assert profile is not None and profile.ratings == 3
    assert [s.item_id for s in seen] == [7, 9, 8]  # strongest first, the disliked one last
    top = seen[0]
    assert top.strength == pytest.approx(1.0) and top.event_time == T0 + timedelta(hours=5)
    assert top.rating == 8.0  # the latest rating
    assert top.event_types == {EventType.RATING, EventType.REVIEW, EventType.WATCH}
    assert top.status is WatchStatus.COMPLETED  # the latest watch status
    dropped = seen[1]
    assert dropped.event_types == {EventType.WATCH} and dropped.rating is None
    assert dropped.status is WatchStatus.DROPPED
    assert await store.seen_items("u", limit=1) == [top]
    assert await store.read_user("nobody") == (None, [])


async def test_the_fake_simulates_outages_slowness_and_transient_failures() -> None:
    store = FakeStore(fail=1)
    with pytest.raises(StoreUnavailable):
        await store.ping()
    await store.ping()
    store.unavailable = True
    with pytest.raises(StoreUnavailable):
        await store.apply_batch([entry("a", 1, 0)], CountingUpdater())
    with pytest.raises(StoreUnavailable):
        await store.read_user("u")
    assert store.ledger == {}
    assert store.calls == {"ping": 2, "apply_batch": 1, "read_user": 1}
    store.unavailable, store.delay_s = False, 0.05
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await store.get_profile("u") is None
    assert loop.time() - started >= 0.04
    await store.close()
    assert store.closed


def test_the_fake_refuses_an_updater_that_forgets_a_user() -> None:
    store = FakeStore()
    with pytest.raises(ValueError, match="no state"):
        store.apply([entry("a", 1, 0), entry("b", 1, 0, user_id="v")], lambda current, new: {})
    assert store.ledger == {} and store.profiles == {}
