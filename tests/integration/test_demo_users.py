"""``PostgresStore.most_active_users``, the users ``llmrec demo`` shows: reviewers first, then by number of
applied events, then by id."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from llmrec.events.schema import EventType
from llmrec.preference_state import PreferenceState
from llmrec.store import LedgerEntry, migrate
from llmrec.store.postgres import PostgresStore

pytestmark = pytest.mark.integration

DIM = 4
T0 = datetime(2024, 3, 1, tzinfo=UTC)


def updater(current: dict[str, PreferenceState], new: Sequence[LedgerEntry]) -> dict[str, PreferenceState]:
    """Any valid state will do: only the ledger's rows matter here."""
    return {e.user_id: PreferenceState(np.ones(DIM, dtype=np.float32), 1.0, T0.timestamp()) for e in new}


def events(run: str, user: str, count: int, reviews: int = 0) -> list[LedgerEntry]:
    return [
        LedgerEntry(
            event_id=f"{run}-{user}-{n}",
            user_id=f"{run}-{user}",
            item_id=n + 1,
            event_type=EventType.REVIEW if n < reviews else EventType.RATING,
            event_time=T0 + timedelta(minutes=n),
            strength=0.4,
            rating=9.0,
        )
        for n in range(count)
    ]


async def test_reviewers_come_first_then_the_most_events(postgres_dsn: str) -> None:
    migrate(postgres_dsn)
    run = uuid.uuid4().hex[:10]
    batch = events(run, "many", 6) + events(run, "few", 2) + events(run, "reviewer", 1, reviews=1)
    batch += events(run, "also-few", 2)
    async with PostgresStore(postgres_dsn, min_size=1, max_size=1) as store:
        await store.apply_batch(batch, updater)
        # The database is shared by the session: compare the order of this run's users among all.
        ranked = [u for u in await store.most_active_users(100_000) if u.startswith(run)]
        assert ranked == [f"{run}-reviewer", f"{run}-many", f"{run}-also-few", f"{run}-few"]
        assert len(await store.most_active_users(1)) == 1
