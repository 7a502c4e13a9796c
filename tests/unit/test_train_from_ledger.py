"""Training data from the interaction ledger (``jobs.train_ranker.ledger_data``), read from the fake."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from jobs.train_ranker import ledger_data
from llmrec.events.schema import EventType
from llmrec.preference_state import PreferenceState
from llmrec.store.fake import FakeStore
from llmrec.store.interface import LedgerEntry, LedgerPair

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _entry(event_id: str, user: str, item: int, hours: float, rating: float | None = None) -> LedgerEntry:
    return LedgerEntry(event_id, user, item, EventType.RATING, T0 + timedelta(hours=hours), 0.3, rating)


def _no_profiles(current: dict[str, PreferenceState], new: object) -> dict[str, PreferenceState]:
    users = {e.user_id for e in new}  # type: ignore[attr-defined]
    return {u: PreferenceState.empty(2) for u in users}


async def _pairs(store: FakeStore, page: int) -> list[LedgerPair]:
    return [p async for chunk in store.ledger_pairs(page=page) for p in chunk]


async def test_ledger_pairs_aggregate_each_user_item_pair() -> None:
    store = FakeStore()
    store.apply(
        [
            _entry("a", "u1", 10, 0, rating=4.0),
            _entry("b", "u1", 10, 2, rating=9.0),  # the latest rating wins
            _entry("c", "u1", 11, 1),
            _entry("d", "u2", 10, 3),
        ],
        _no_profiles,
    )
    pairs = await _pairs(store, page=2)
    assert [(p.user_id, p.item_id, p.rating) for p in pairs] == [
        ("u1", 10, 9.0),
        ("u1", 11, None),
        ("u2", 10, None),
    ]
    assert pairs[0].strength == 0.6 and pairs[0].event_time == T0 + timedelta(hours=2)


def test_ledger_data_keeps_items_with_vectors_and_filters_the_core() -> None:
    pairs = [
        LedgerPair("u1", 10, 0.3, T0, 8.0),
        LedgerPair("u1", 11, 0.3, T0, None),
        LedgerPair("u2", 10, 0.3, T0 + timedelta(days=1), None),
        LedgerPair("u2", 12, 0.3, T0, None),  # no vector: dropped
        LedgerPair("u3", 11, 0.3, T0, None),
    ]
    data = ledger_data(pairs, vector_keys={10, 11}, core=1)
    assert data.user_ids == ("u1", "u2", "u3") and data.item_ids == (10, 11)
    matrix = data.matrix()
    np.testing.assert_array_equal(matrix, [[1, 1], [1, 0], [0, 1]])
    assert np.isnan(data.ratings).sum() == 3 and 8.0 in data.ratings.tolist()
    assert data.timestamps[2] == (T0 + timedelta(days=1)).timestamp()
    # A 2-core keeps users and items with at least two interactions each: u3 (one item) goes.
    cored = ledger_data([*pairs, LedgerPair("u2", 11, 0.3, T0, None)], vector_keys={10, 11}, core=2)
    assert cored.user_ids == ("u1", "u2") and cored.n_interactions == 4
