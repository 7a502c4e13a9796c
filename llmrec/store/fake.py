"""The one in-memory store: ``EventStore`` and ``ProfileReader`` over dicts, for tests without a database.

It behaves like ``llmrec.store.postgres.PostgresStore`` wherever a caller can tell:

- a batch is applied idempotently by event id: the first occurrence of an id wins, within a batch and
  across batches; the updater sees the affected users' current states and only the entries new to the
  ledger, and must return a state for each of those users;
- a profile counts the user's ratings, reviews and watch events and keeps the latest event time;
- seen items are aggregated from the ledger per item (summed strength, latest event time, latest rating,
  every event kind, latest watch status), strongest first, ties by item id;
- the catalogue applies item changes with the rule PostgreSQL uses (``llmrec.store.item_merge``): the rows
  that a batch changes take the next ``change_seq`` values in item-id order; the change feed, the reads and
  the counts follow the PostgreSQL queries.

Failure knobs: ``unavailable`` simulates an outage (every call raises ``StoreUnavailable`` until it is
cleared), ``fail`` a transient one (the next ``fail`` calls raise it), ``delay_s`` a slow database.
``calls`` counts the calls per method; ``closed`` says whether ``close`` was called.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from llmrec.events.schema import EventType, WatchStatus
from llmrec.item_ids import item_key
from llmrec.store.interface import (
    ApplyResult,
    CatalogueChange,
    CatalogueStore,
    EventStore,
    ItemApplyResult,
    LedgerEntry,
    LedgerPair,
    LedgerReader,
    ProfileReader,
    ProfileUpdater,
    SeenItem,
    StoredItem,
    StoredProfile,
    StoreUnavailable,
)
from llmrec.store.item_merge import apply_changes


@dataclass
class FakeStore:
    """The ledger as a dict by event id (insertion order), the profiles as a dict by user id and the
    catalogue as a dict by item id, with its last ``change_seq``."""

    ledger: dict[str, LedgerEntry] = field(default_factory=dict)
    profiles: dict[str, StoredProfile] = field(default_factory=dict)
    items: dict[str, StoredItem] = field(default_factory=dict)
    change_seq: int = 0
    unavailable: bool = False
    fail: int = 0
    delay_s: float = 0.0
    calls: Counter[str] = field(default_factory=Counter)
    closed: bool = False

    async def _enter(self, method: str) -> None:
        self.calls[method] += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.unavailable:
            raise StoreUnavailable("simulated outage")
        if self.fail:
            self.fail -= 1
            raise StoreUnavailable("simulated connection loss")

    # -- EventStore -------------------------------------------------------------------------------------

    async def apply_batch(self, entries: Sequence[LedgerEntry], update: ProfileUpdater) -> ApplyResult:
        await self._enter("apply_batch")
        return self.apply(entries, update)

    def apply(self, entries: Sequence[LedgerEntry], update: ProfileUpdater) -> ApplyResult:
        """``apply_batch`` without the failure knobs and the event loop: for setting up test data."""
        new: dict[str, LedgerEntry] = {}
        for entry in entries:
            if entry.event_id not in self.ledger and entry.event_id not in new:
                new[entry.event_id] = entry
        if new:
            self._update_profiles(list(new.values()), update)
            self.ledger.update(new)
        return ApplyResult(applied=len(new), duplicates=len(entries) - len(new))

    def _update_profiles(self, new_entries: Sequence[LedgerEntry], update: ProfileUpdater) -> None:
        users = sorted({e.user_id for e in new_entries})
        current = {u: self.profiles[u].state for u in users if u in self.profiles}
        states = update(current, new_entries)
        missing = set(users) - states.keys()
        if missing:
            raise ValueError(f"profile updater returned no state for {len(missing)} user(s)")
        now = datetime.now(UTC)
        for user in users:
            mine = [e for e in new_entries if e.user_id == user]
            kinds = Counter(EventType(e.event_type) for e in mine)
            before = self.profiles.get(user)
            latest = max(e.event_time for e in mine)
            if before is not None and before.last_event_time is not None:
                latest = max(latest, before.last_event_time)
            self.profiles[user] = StoredProfile(
                user_id=user,
                state=states[user],
                ratings=(before.ratings if before else 0) + kinds[EventType.RATING],
                reviews=(before.reviews if before else 0) + kinds[EventType.REVIEW],
                watch_events=(before.watch_events if before else 0) + kinds[EventType.WATCH],
                last_event_time=latest,
                updated_at=now,
            )

    async def known_event_ids(self, event_ids: Sequence[str]) -> set[str]:
        await self._enter("known_event_ids")
        return {i for i in event_ids if i in self.ledger}

    # -- ProfileReader ----------------------------------------------------------------------------------

    async def get_profile(self, user_id: str) -> StoredProfile | None:
        await self._enter("get_profile")
        return self.profiles.get(user_id)

    async def seen_items(self, user_id: str, limit: int = 1000) -> list[SeenItem]:
        await self._enter("seen_items")
        return self._seen(user_id, limit)

    async def read_user(
        self, user_id: str, seen_limit: int = 1000
    ) -> tuple[StoredProfile | None, list[SeenItem]]:
        await self._enter("read_user")
        return self.profiles.get(user_id), self._seen(user_id, seen_limit)

    async def ping(self) -> None:
        await self._enter("ping")

    # -- LedgerReader -----------------------------------------------------------------------------------

    async def ledger_pairs(self, page: int = 50_000) -> AsyncIterator[list[LedgerPair]]:
        await self._enter("ledger_pairs")
        pairs: dict[tuple[str, int], list[LedgerEntry]] = {}
        for entry in self.ledger.values():
            pairs.setdefault((entry.user_id, entry.item_id), []).append(entry)
        out: list[LedgerPair] = []
        for (user, item), entries in sorted(pairs.items()):
            rated = [e for e in entries if e.rating is not None]
            latest_rating = max(rated, key=lambda e: e.event_time).rating if rated else None
            out.append(
                LedgerPair(
                    user,
                    item,
                    sum(e.strength for e in entries),
                    max(e.event_time for e in entries),
                    latest_rating,
                )
            )
        for start in range(0, len(out), page):
            yield out[start : start + page]

    # -- CatalogueStore ---------------------------------------------------------------------------------

    async def apply_item_changes(self, changes: Sequence[CatalogueChange]) -> ItemApplyResult:
        await self._enter("apply_item_changes")
        return self.apply_items(changes)

    def apply_items(self, changes: Sequence[CatalogueChange]) -> ItemApplyResult:
        """``apply_item_changes`` without the failure knobs and the event loop: for setting up test data."""
        new_rows, result = apply_changes(self.items, changes)
        now = datetime.now(UTC)
        for item_id, row in new_rows.items():  # in item-id order
            self.change_seq += 1
            self.items[item_id] = replace(row, change_seq=self.change_seq, updated_at=now)
        return result

    async def items_changed_since(self, change_seq: int, limit: int = 1000) -> tuple[list[StoredItem], int]:
        await self._enter("items_changed_since")
        changed = sorted(
            (i for i in self.items.values() if i.change_seq > change_seq), key=lambda i: i.change_seq
        )
        page = changed[:limit]
        return page, page[-1].change_seq if page else change_seq

    async def get_items(self, item_ids: Sequence[str]) -> dict[str, StoredItem]:
        await self._enter("get_items")
        return {i: self.items[i] for i in item_ids if i in self.items}

    async def item_content_hashes(self, item_ids: Sequence[str]) -> dict[str, str]:
        await self._enter("item_content_hashes")
        return {
            i: digest
            for i in item_ids
            if i in self.items and (digest := self.items[i].content_hash) is not None
        }

    async def item_ids_by_key(self, keys: Sequence[int]) -> dict[int, str]:
        await self._enter("item_ids_by_key")
        wanted = set(keys)
        return {key: item_id for item_id in self.items if (key := item_key(item_id)) in wanted}

    async def count_items(self, include_hidden: bool = False) -> int:
        await self._enter("count_items")
        return sum(1 for i in self.items.values() if i.live and (include_hidden or not i.hidden))

    # -- the rest of PostgresStore's surface --------------------------------------------------------------

    async def users_with_profiles(self, limit: int) -> list[str]:
        await self._enter("users_with_profiles")
        return sorted(self.profiles)[:limit]

    async def close(self) -> None:
        self.closed = True

    def _seen(self, user_id: str, limit: int) -> list[SeenItem]:
        by_item: dict[int, list[LedgerEntry]] = {}
        for entry in self.ledger.values():
            if entry.user_id == user_id:
                by_item.setdefault(entry.item_id, []).append(entry)
        seen = [_aggregate(item_id, entries) for item_id, entries in by_item.items()]
        seen.sort(key=lambda s: (-s.strength, s.item_id))
        return seen[:limit]


def _aggregate(item_id: int, entries: Sequence[LedgerEntry]) -> SeenItem:
    """One item's ledger entries as the PostgreSQL store's seen-items query sums them up."""
    latest_first = sorted(entries, key=lambda e: (e.event_time, e.event_id), reverse=True)
    ratings = [e.rating for e in latest_first if e.rating is not None]
    statuses = [e.status for e in latest_first if e.status is not None]
    return SeenItem(
        item_id=item_id,
        strength=sum(e.strength for e in entries),
        event_time=latest_first[0].event_time,
        rating=ratings[0] if ratings else None,
        event_types=frozenset(EventType(e.event_type) for e in entries),
        status=WatchStatus(statuses[0]) if statuses else None,
    )


if TYPE_CHECKING:  # mypy checks that the fake implements the ports
    _EVENT_STORE: EventStore = FakeStore()
    _PROFILE_READER: ProfileReader = FakeStore()
    _CATALOGUE_STORE: CatalogueStore = FakeStore()
    _LEDGER_READER: LedgerReader = FakeStore()
