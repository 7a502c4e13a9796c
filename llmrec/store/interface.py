"""What the worker and the API need from the database, as Protocols, so tests can pass fakes.

The PostgreSQL implementation lives in ``llmrec.store.postgres``. One transaction per batch: the ledger
insert (idempotent by ``event_id``) and the user-vector updates commit together, so a redelivered batch
changes nothing and a crash between the two is impossible.

The catalogue (``CatalogueStore``, with the ``ItemRecord``, ``ItemChange``, ``ItemApplyResult`` and
``StoredItem`` records) converges under any replay or reordering of item changes: see the section below
and ``llmrec.store.item_merge``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from llmrec.events.schema import EventType, WatchStatus
from llmrec.item_text import embedding_text_of
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


@dataclass(frozen=True)
class LedgerPair:
    """One (user, item) pair of the interaction ledger, aggregated over its events as the ranker trains on
    it (the same aggregation as ``SeenItem``, which the API feeds the ranker at request time)."""

    user_id: str
    item_id: int  # the item's key
    strength: float  # the events' undecayed strengths, summed
    event_time: datetime  # the latest event's
    rating: float | None  # the latest rating, None when the user never rated the item


class LedgerReader(Protocol):
    def ledger_pairs(self, page: int = 50_000) -> AsyncIterator[list[LedgerPair]]:
        """Every (user, item) pair of the ledger, in pages of at most ``page``, by user then item."""
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


# -- the catalogue ----------------------------------------------------------------------------------------
#
# PostgreSQL is the catalogue's source of truth: one row per item id (an opaque string the user chooses,
# e.g. "mal:5114"). Each row holds two last-writer-wins registers, each with its own version
# ``(event_time, event_id)``:
#
# - the body: title, text, categories, attributes, vector, vector source, content hash and the ``deleted``
#   tombstone flag. Written by an upsert (``ItemRecord``, which clears ``deleted``) and by a delete
#   (``ItemChange`` of kind ``delete``, which clears the content and sets ``deleted``);
# - the ``hidden`` flag. Written by hide and unhide only, so it survives upserts and deletes.
#
# A change writes its register only when its version is newer than the register's (event time first,
# ties broken by event id, compared as Python strings); a change whose version is not newer is a
# duplicate when it carries the register's own event id, and stale otherwise. Each register then holds the
# newest change ever applied to it, whatever order the changes came in: any replay or reordering of the
# same changes converges to one state. A delete keeps the row (a tombstone), so an older upsert arriving
# later stays stale; a hide, unhide or delete of an unknown item records its register on a new row, so an
# older change arriving later loses to it as well. The rule itself is ``llmrec.store.item_merge``, which
# the PostgreSQL store and the fake share.


class Version(NamedTuple):
    """The version of a catalogue change: ordered by event time, then by event id."""

    event_time: datetime
    event_id: str


def item_content_hash(
    title: str, text: str, categories: Sequence[str], attributes: Mapping[str, Any] | None = None
) -> str:
    """SHA-256 (hex) of what the encoder embeds (``llmrec.item_text.embedding_text_of``: the title, the
    categories, the text and the attributes that text takes in). Equal hashes mean the stored vector
    still fits, so the worker need not re-embed it."""
    embedded = embedding_text_of(title, categories, text, attributes or {})
    return hashlib.sha256(embedded.encode("utf-8")).hexdigest()


def _check_change(item_id: str, event_id: str, event_time: datetime) -> None:
    if not item_id:
        raise ValueError("item_id must not be empty")
    if not event_id:
        raise ValueError("event_id must not be empty")
    if "\x00" in item_id or "\x00" in event_id:
        raise ValueError("PostgreSQL text cannot hold NUL characters")
    if event_time.tzinfo is None or event_time.utcoffset() is None:
        raise ValueError("event_time must be timezone-aware")


@dataclass(frozen=True)
class ItemRecord:
    """An upsert: the item's whole body, with its vector when it has one. The store writes exactly what
    the record carries (a record without a vector stores none, it does not keep an older one), so a worker
    that skips re-embedding unchanged text passes the stored vector along (``get_items``).

    ``vector_source`` is ``"user"`` for a vector the user supplied, else the encoder model's name; it is
    given exactly when ``vector`` is. The vector is kept as a read-only one-dimensional float32 array, the
    attributes as the JSON object PostgreSQL's jsonb gives back. Equality ignores the vector."""

    item_id: str
    event_time: datetime
    event_id: str
    title: str
    text: str = ""
    categories: tuple[str, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)
    vector: npt.NDArray[np.float32] | None = field(default=None, compare=False)
    vector_source: str | None = None

    def __post_init__(self) -> None:
        _check_change(self.item_id, self.event_id, self.event_time)
        object.__setattr__(self, "categories", tuple(self.categories))
        if any("\x00" in s for s in (self.title, self.text, *self.categories)):
            raise ValueError("PostgreSQL text cannot hold NUL characters")
        # As PostgreSQL's jsonb will give it back (tuples become lists, no NaN), so the fake stores the same.
        attributes = json.loads(json.dumps(dict(self.attributes), allow_nan=False))
        object.__setattr__(self, "attributes", attributes)
        if (self.vector is None) != (self.vector_source is None):
            raise ValueError("vector and vector_source are given together or not at all")
        if self.vector is not None:
            vector = np.array(self.vector, dtype=np.float32).ravel()
            if vector.size == 0 or not np.all(np.isfinite(vector)):
                raise ValueError("an item vector must be non-empty and finite")
            vector.flags.writeable = False
            object.__setattr__(self, "vector", vector)

    @property
    def version(self) -> Version:
        return Version(self.event_time, self.event_id)

    @property
    def content_hash(self) -> str:
        return item_content_hash(self.title, self.text, self.categories, self.attributes)


class ItemChangeKind(StrEnum):
    HIDE = "hide"
    UNHIDE = "unhide"
    DELETE = "delete"


@dataclass(frozen=True)
class ItemChange:
    """A hide, unhide or delete of one item (known or not yet)."""

    item_id: str
    kind: ItemChangeKind
    event_time: datetime
    event_id: str

    def __post_init__(self) -> None:
        _check_change(self.item_id, self.event_id, self.event_time)
        object.__setattr__(self, "kind", ItemChangeKind(self.kind))

    @property
    def version(self) -> Version:
        return Version(self.event_time, self.event_id)


CatalogueChange = ItemRecord | ItemChange


@dataclass(frozen=True)
class ItemApplyResult:
    """How the changes of one batch fared: applied (written), stale (older than the stored version) and
    duplicates (the stored version's own event). They add up to the batch's length."""

    applied: int
    stale: int
    duplicates: int


@dataclass(frozen=True)
class StoredItem:
    """One catalogue row as stored. ``title`` is None when the row holds no live body: a tombstone
    (``deleted``) or a row that only a hide or unhide has touched so far. Equality ignores the vector
    (compare it with numpy)."""

    item_id: str
    title: str | None
    text: str | None
    categories: tuple[str, ...]
    attributes: Mapping[str, Any]
    vector: npt.NDArray[np.float32] | None = field(compare=False)
    vector_source: str | None
    content_hash: str | None
    hidden: bool
    deleted: bool
    body_version: Version | None  # the last upsert or delete applied
    hidden_version: Version | None  # the last hide or unhide applied
    change_seq: int  # from one increasing sequence, bumped whenever a batch changes the row
    updated_at: datetime

    @property
    def version(self) -> Version:
        """The newest change applied to the row, whichever register it wrote."""
        versions = [v for v in (self.body_version, self.hidden_version) if v is not None]
        return max(versions)

    @property
    def live(self) -> bool:
        """Whether the item exists: it has a body that no later delete removed."""
        return self.title is not None and not self.deleted

    @property
    def visible(self) -> bool:
        """Whether the item may be recommended: live and not hidden."""
        return self.live and not self.hidden


class CatalogueStore(Protocol):
    async def apply_item_changes(self, changes: Sequence[CatalogueChange]) -> ItemApplyResult:
        """Apply upserts, hides, unhides and deletes in one transaction, by the convergence rule above
        (within a batch in the batch's order, which changes the counts but never the resulting state).
        Raises ``StoreUnavailable`` on transient database failures (nothing is committed then)."""
        ...

    async def items_changed_since(self, change_seq: int, limit: int = 1000) -> tuple[list[StoredItem], int]:
        """Rows whose ``change_seq`` is above ``change_seq``, in ``change_seq`` order, at most ``limit``,
        tombstones and hidden rows included; and the cursor to pass next (the last row's ``change_seq``,
        or ``change_seq`` itself when nothing changed). Start from 0. A follower that applies each page in
        order sees every committed change: writers take ``change_seq`` values in commit order."""
        ...

    async def get_items(self, item_ids: Sequence[str]) -> dict[str, StoredItem]:
        """The stored rows among ``item_ids`` (tombstones and hidden rows included), by item id."""
        ...

    async def item_content_hashes(self, item_ids: Sequence[str]) -> dict[str, str]:
        """The content hash of each live item among ``item_ids`` (tombstones have none)."""
        ...

    async def item_ids_by_key(self, keys: Sequence[int]) -> dict[int, str]:
        """The stored item id holding each of ``keys`` (``llmrec.item_ids.item_key``), tombstones included."""
        ...

    async def count_items(self, include_hidden: bool = False) -> int:
        """Live items (not deleted), the hidden ones only when ``include_hidden``."""
        ...
