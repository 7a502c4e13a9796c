"""What the worker and the API need from the database, as Protocols, so tests can pass fakes.

The PostgreSQL implementation lives in ``llmrec.store.postgres``. One transaction per batch: the ledger
insert (idempotent by ``event_id``) and the user-vector updates commit together, so a redelivered batch
changes nothing and a crash between the two is impossible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from llmrec.events.schema import EventType, WatchStatus
from llmrec.preference_state import PreferenceState


class StoreUnavailable(Exception):
    """The database could not be reached or the transaction was aborted by the server (connection lost,
    pool exhausted, deadlock, shutdown). Transient: the caller retries the whole batch with backoff; the
    ledger makes the retry safe. The message never contains the DSN."""


@dataclass(frozen=True)
class LedgerEntry:
    """One applied event as the ledger stores it."""

    event_id: str
    user_id: str
    item_id: int
    event_type: EventType
    event_time: datetime
    strength: float
    rating: float | None = None
    sentiment: float | None = None
    status: str | None = None
    episodes_watched: int | None = None
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None


@dataclass(frozen=True)
class ApplyResult:
    applied: int
    duplicates: int


@dataclass(frozen=True)
class StoredProfile:
    user_id: str
    state: PreferenceState
    ratings: int
    reviews: int
    watch_events: int
    last_event_time: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class SeenItem:
    """One item a user interacted with, aggregated over all their events about it."""

    item_id: int
    strength: float  # the events' undecayed strengths, summed
    event_time: datetime  # the latest event's
    rating: float | None  # the latest rating, None when the user never rated the item
    event_types: frozenset[EventType]  # every kind of event the user sent about the item
    status: WatchStatus | None  # the latest watch status, None when no watch event carried one


class ProfileUpdater(Protocol):
    """Computes the new state of each affected user from their current state and new ledger entries.

    Called inside the store's transaction, with the users' rows locked, so it must be pure and fast.
    ``current`` holds the stored state of the affected users that have one; a user missing from it has no
    profile yet and starts from an empty state. ``new_entries`` are only the entries that were new to the
    ledger (duplicates are already removed). The result must hold a state for every user in
    ``new_entries``.
    """

    def __call__(
        self, current: dict[str, PreferenceState], new_entries: Sequence[LedgerEntry]
    ) -> dict[str, PreferenceState]: ...


class EventStore(Protocol):
    async def apply_batch(self, entries: Sequence[LedgerEntry], update: ProfileUpdater) -> ApplyResult:
        """Insert entries into the ledger, skipping event ids already there, then update the profiles of
        the users whose entries were new, all in one transaction. Raises ``StoreUnavailable`` on transient
        database failures (nothing is committed then)."""
        ...

    async def known_event_ids(self, event_ids: Sequence[str]) -> set[str]:
        """The ids among ``event_ids`` that the ledger already holds. A hint that lets the worker skip
        costly work (scoring a replayed review); ``apply_batch`` stays the arbiter of duplicates."""
        ...


class ProfileReader(Protocol):
    async def get_profile(self, user_id: str) -> StoredProfile | None: ...

    async def seen_items(self, user_id: str, limit: int = 1000) -> list[SeenItem]:
        """The user's items, strongest signal first, for exclusion and explanations."""
        ...

    async def read_user(
        self, user_id: str, seen_limit: int = 1000
    ) -> tuple[StoredProfile | None, list[SeenItem]]:
        """``get_profile`` and ``seen_items`` together, as one database round trip where the store can."""
        ...

    async def ping(self) -> None:
        """Raise if the database cannot answer."""
        ...
