"""PostgreSQL implementation of ``EventStore`` and ``ProfileReader`` (psycopg 3, async pool).

One batch is one transaction:
1. insert the entries into the ledger with ``ON CONFLICT (event_id) DO NOTHING RETURNING event_id``, in
   event-id order (two workers inserting overlapping batches then wait on each other instead of
   deadlocking); the returned ids are the entries that are new;
2. create an empty row for each affected user who has none, then lock every affected user's row
   ``FOR UPDATE`` in user-id order, so concurrent batches for one user (the ratings, reviews and watch
   agents run side by side, and partitions move between workers) serialise instead of losing updates;
3. call the pure updater on the locked states and write the results back.

User vectors are ``vector`` columns when pgvector is installed and ``real[]`` otherwise (the migration
decides). The SQL here works with both: vectors are sent as ``real[]`` (pgvector has an assignment cast
to ``vector``) and read back as ``vector_sum::real[]``. Item vectors in the catalogue likewise.

The catalogue (``CatalogueStore``, migration 002): a batch of item changes is one transaction that takes
the catalogue's advisory lock (catalogue writers serialise, so ``change_seq`` values commit in increasing
order and a follower of ``items_changed_since`` misses none), reads the touched rows, folds the changes
over them with the shared rule in ``llmrec.store.item_merge`` and writes back the rows that changed, each
with a new ``change_seq``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from llmrec import tracing
from llmrec.events.schema import EventType, WatchStatus
from llmrec.item_ids import item_key
from llmrec.logs import get_logger
from llmrec.preference_state import PreferenceState, Vector
from llmrec.settings import PostgresSettings
from llmrec.store.arrays import register_vector_adapters
from llmrec.store.idle_check import IdleCheck
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
    Version,
)
from llmrec.store.item_merge import apply_changes
from llmrec.store.pool import CappedReconnectPool

log = get_logger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

# Failures that say nothing about the batch: the server went away, refused or aborted the transaction
# (deadlock, serialisation, admin shutdown), the pool had no connection in time, or a failover left us on
# a read-only standby. Everything else (constraint or type errors) is a bug and propagates as is.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    psycopg.OperationalError,
    psycopg.errors.ReadOnlySqlTransaction,
)

# Array parameters go in binary (%b): psycopg dumps a 2,048-row batch of lists about 4x faster in binary
# than as text literals, whose per-element quoting was the worker's largest single cost (profiled).
_INSERT_LEDGER = """
INSERT INTO interactions (
    event_id, user_id, item_id, event_type, event_time, strength, rating, sentiment, status,
    episodes_watched, source_topic, source_partition, source_offset)
SELECT * FROM unnest(
    %b::text[], %b::text[], %b::bigint[], %b::text[], %b::timestamptz[], %b::float8[], %b::float8[],
    %b::float8[], %b::text[], %b::integer[], %b::text[], %b::integer[], %b::bigint[])
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id
"""

# Rows are inserted in array order, i.e. sorted by user id, the same order the lock below uses.
_CREATE_MISSING_PROFILES = """
INSERT INTO user_profiles (user_id) SELECT unnest(%b::text[])
ON CONFLICT (user_id) DO NOTHING
"""

_LOCK_PROFILES = """
SELECT user_id, vector_sum::real[], weight_sum, ref_time
FROM user_profiles WHERE user_id = ANY(%b::text[])
ORDER BY user_id
FOR UPDATE
"""

# Every affected profile in one statement: the new vectors travel as one flat binary real[] (row n holds
# elements (n-1)*dim+1 .. n*dim), the other columns as arrays unnested in the same order. One statement
# instead of one UPDATE per user: no per-row parameter adaptation in Python (bench/ingest.py profile).
_UPDATE_PROFILES = """
UPDATE user_profiles AS p SET
    vector_sum = (%(vectors)b::real[])[(u.n - 1) * %(dim)s + 1 : u.n * %(dim)s],
    weight_sum = u.weight_sum,
    ref_time = u.ref_time,
    ratings = p.ratings + u.ratings,
    reviews = p.reviews + u.reviews,
    watch_events = p.watch_events + u.watch_events,
    last_event_time = GREATEST(p.last_event_time, u.last_event_time),
    updated_at = now()
FROM unnest(
    %(users)b::text[], %(weight_sums)b::float8[], %(ref_times)b::timestamptz[], %(ratings)b::integer[],
    %(reviews)b::integer[], %(watch_events)b::integer[], %(last_event_times)b::timestamptz[]
) WITH ORDINALITY AS u(user_id, weight_sum, ref_time, ratings, reviews, watch_events, last_event_time, n)
WHERE p.user_id = u.user_id
"""

_GET_PROFILE = """
SELECT user_id, vector_sum::real[], weight_sum, ref_time, ratings, reviews, watch_events,
       last_event_time, updated_at
FROM user_profiles WHERE user_id = %s AND vector_sum IS NOT NULL
"""

# One row per item: a user may rate, review and watch the same title. Strength is the sum of the
# events' undecayed strengths, so liked items come first and disliked ones last. The event kinds and the
# latest watch status say how the user knew the item ("which you reviewed", "which you completed").
_SEEN_ITEMS = """
SELECT item_id,
       sum(strength) AS strength,
       max(event_time) AS event_time,
       (array_agg(rating ORDER BY event_time DESC) FILTER (WHERE rating IS NOT NULL))[1] AS rating,
       array_agg(DISTINCT event_type) AS event_types,
       (array_agg(status ORDER BY event_time DESC, event_id DESC) FILTER (WHERE status IS NOT NULL))[1]
           AS status
FROM interactions WHERE user_id = %s
GROUP BY item_id
ORDER BY strength DESC, item_id
LIMIT %s
"""


# The ledger's (user, item) pairs as the ranker trains on them: ``_SEEN_ITEMS``' aggregation for every user.
_LEDGER_PAIRS = """
SELECT user_id,
       item_id,
       sum(strength) AS strength,
       max(event_time) AS event_time,
       (array_agg(rating ORDER BY event_time DESC) FILTER (WHERE rating IS NOT NULL))[1] AS rating
FROM interactions
GROUP BY user_id, item_id
ORDER BY user_id, item_id
"""


_USERS_WITH_PROFILES = """
SELECT user_id FROM user_profiles WHERE vector_sum IS NOT NULL ORDER BY user_id LIMIT %s
"""


# Catalogue writers serialise on this transaction-level advisory lock (any constant other advisory locks in
# the database do not use; migrate's is 0x6C6C6D726563).
_CATALOGUE_LOCK_KEY = 0x6C6C6D636174  # "llmcat"

_ITEM_COLUMNS = """
item_id, title, text, categories, attributes, vector::real[], vector_source, content_hash, hidden, deleted,
body_event_time, body_event_id, hidden_event_time, hidden_event_id, change_seq, updated_at
"""

_GET_ITEMS = f"SELECT {_ITEM_COLUMNS} FROM catalogue_items WHERE item_id = ANY(%s::text[])"

_ITEMS_CHANGED_SINCE = (
    f"SELECT {_ITEM_COLUMNS} FROM catalogue_items WHERE change_seq > %s ORDER BY change_seq LIMIT %s"
)

# One row per statement (executemany, pipelined): item bodies are ragged (categories, vectors of any
# length or none), and catalogue batches are small next to the ledger's.
_WRITE_ITEM = """
INSERT INTO catalogue_items (
    item_id, item_key, title, text, categories, attributes, vector, vector_source, content_hash, hidden,
    deleted, body_event_time, body_event_id, hidden_event_time, hidden_event_id, event_time, event_id,
    change_seq, updated_at)
VALUES (
    %s, %s, %s, %s, %s::text[], %s::jsonb, %b::real[], %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
    nextval('catalogue_change_seq'), now())
ON CONFLICT (item_id) DO UPDATE SET
    title = EXCLUDED.title, text = EXCLUDED.text, categories = EXCLUDED.categories,
    attributes = EXCLUDED.attributes, vector = EXCLUDED.vector, vector_source = EXCLUDED.vector_source,
    content_hash = EXCLUDED.content_hash, hidden = EXCLUDED.hidden, deleted = EXCLUDED.deleted,
    body_event_time = EXCLUDED.body_event_time, body_event_id = EXCLUDED.body_event_id,
    hidden_event_time = EXCLUDED.hidden_event_time, hidden_event_id = EXCLUDED.hidden_event_id,
    event_time = EXCLUDED.event_time, event_id = EXCLUDED.event_id, change_seq = EXCLUDED.change_seq,
    updated_at = EXCLUDED.updated_at
"""


def _version(event_time: datetime | None, event_id: str | None) -> Version | None:
    return Version(event_time, event_id) if event_time is not None and event_id is not None else None


def _stored_item(row: Any) -> StoredItem:
    (
        item_id, title, text, categories, attributes, vector, vector_source, content_hash, hidden, deleted,
        body_time, body_id, hidden_time, hidden_id, change_seq, updated_at,
    ) = row  # fmt: skip
    return StoredItem(
        item_id=item_id,
        title=title,
        text=text,
        categories=tuple(categories),
        attributes=attributes,
        vector=vector,
        vector_source=vector_source,
        content_hash=content_hash,
        hidden=hidden,
        deleted=deleted,
        body_version=_version(body_time, body_id),
        hidden_version=_version(hidden_time, hidden_id),
        change_seq=int(change_seq),
        updated_at=updated_at,
    )


def _item_params(item: StoredItem) -> tuple[Any, ...]:
    body, flag = item.body_version, item.hidden_version
    return (
        item.item_id,
        item_key(item.item_id),
        item.title,
        item.text,
        list(item.categories),
        Jsonb(dict(item.attributes)),
        item.vector,
        item.vector_source,
        item.content_hash,
        item.hidden,
        item.deleted,
        body.event_time if body else None,
        body.event_id if body else None,
        flag.event_time if flag else None,
        flag.event_id if flag else None,
        *item.version,
    )


def _to_state(vector_sum: Vector, weight_sum: float, ref_time: datetime | None) -> PreferenceState:
    return PreferenceState(
        vector_sum=vector_sum,
        weight_sum=float(weight_sum),
        ref_time_s=ref_time.timestamp() if ref_time is not None else -math.inf,
    )


def _ref_time(state: PreferenceState) -> datetime | None:
    return datetime.fromtimestamp(state.ref_time_s, UTC) if math.isfinite(state.ref_time_s) else None


def _ledger_columns(entries: Sequence[LedgerEntry]) -> tuple[list[Any], ...]:
    return (
        [e.event_id for e in entries],
        [e.user_id for e in entries],
        [e.item_id for e in entries],
        [EventType(e.event_type).value for e in entries],
        [e.event_time for e in entries],
        [e.strength for e in entries],
        [e.rating for e in entries],
        [e.sentiment for e in entries],
        [e.status for e in entries],
        [e.episodes_watched for e in entries],
        [e.source_topic for e in entries],
        [e.source_partition for e in entries],
        [e.source_offset for e in entries],
    )


def _profile(row: Any) -> StoredProfile | None:
    if row is None:
        return None
    uid, vector_sum, weight_sum, ref_time, ratings, reviews, watches, last_event_time, updated_at = row
    return StoredProfile(
        user_id=uid,
        state=_to_state(vector_sum, weight_sum, ref_time),
        ratings=ratings,
        reviews=reviews,
        watch_events=watches,
        last_event_time=last_event_time,
        updated_at=updated_at,
    )


def _seen(rows: list[Any]) -> list[SeenItem]:
    return [
        SeenItem(
            item_id=item_id,
            strength=float(strength),
            event_time=event_time,
            rating=rating,
            event_types=frozenset(EventType(t) for t in event_types),
            status=WatchStatus(status) if status is not None else None,
        )
        for item_id, strength, event_time, rating, event_types, status in rows
    ]


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    register_vector_adapters(conn)


def _traced(operation: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """A client span per call of the store's hot paths, inside traced work only (``llmrec.tracing``)."""
    return tracing.traced_child(
        f"postgresql {operation}",
        kind=tracing.SpanKind.CLIENT,
        attributes={"db.system.name": "postgresql", "db.operation.name": operation},
    )


class PostgresStore:
    """The ledger and profiles behind an async connection pool. ``open()`` before use, ``close()`` after
    (or ``async with``). Every method raises ``StoreUnavailable`` on transient database failures."""

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        name: str = "llmrec",
        reconnect_max_wait_s: float = 5.0,
    ) -> None:
        idle_check = IdleCheck()
        # The DSN carries the password: keep it inside the pool, never in a log line or an error message.
        self._pool = CappedReconnectPool(
            conninfo=dsn,
            reconnect_max_wait_s=reconnect_max_wait_s,
            min_size=min_size,
            max_size=max_size,
            open=False,
            name=name,
            # Autocommit: a read is one statement and needs no COMMIT round trip when the connection goes
            # back; writes open their transaction explicitly (``conn.transaction()``).
            kwargs={"application_name": name, "connect_timeout": 10, "autocommit": True},
            # A connection the server dropped while idle is replaced at checkout instead of failing a batch;
            # one used within the last second is not pinged (see llmrec.store.idle_check).
            check=idle_check.check,
            reset=idle_check.reset,
            configure=_configure,
            timeout=30.0,
        )

    @classmethod
    def from_settings(cls, settings: PostgresSettings, name: str = "llmrec") -> PostgresStore:
        return cls(
            settings.conninfo(),
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            name=name,
            reconnect_max_wait_s=settings.reconnect_max_wait_s,
        )

    async def open(self, timeout: float = 30.0) -> None:
        """Open the pool and wait until ``min_size`` connections are up."""
        try:
            await self._pool.open(wait=True, timeout=timeout)
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {type(exc).__name__}") from exc

    async def close(self) -> None:
        await self._pool.close()

    async def __aenter__(self) -> PostgresStore:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @_traced("apply_batch")
    async def apply_batch(self, entries: Sequence[LedgerEntry], update: ProfileUpdater) -> ApplyResult:
        if not entries:
            return ApplyResult(applied=0, duplicates=0)
        # First occurrence of an id wins within a batch, as it would across batches.
        unique = list({e.event_id: e for e in reversed(entries)}.values())
        unique.sort(key=lambda e: e.event_id)
        try:
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(_INSERT_LEDGER, _ledger_columns(unique))
                new_ids = {row[0] for row in await cur.fetchall()}
                new_entries = [e for e in unique if e.event_id in new_ids]
                if new_entries:
                    await self._update_profiles(conn, new_entries, update)
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailable(f"apply_batch failed: {type(exc).__name__}: {exc}") from exc
        return ApplyResult(applied=len(new_entries), duplicates=len(entries) - len(new_entries))

    async def _update_profiles(
        self, conn: psycopg.AsyncConnection[Any], new_entries: Sequence[LedgerEntry], update: ProfileUpdater
    ) -> None:
        users = sorted({e.user_id for e in new_entries})
        await conn.execute(_CREATE_MISSING_PROFILES, (users,))
        async with conn.cursor(binary=True) as cur:
            await cur.execute(_LOCK_PROFILES, (users,))
            current = {
                user_id: _to_state(vector_sum, weight_sum, ref_time)
                for user_id, vector_sum, weight_sum, ref_time in await cur.fetchall()
                if vector_sum is not None
            }
        states = update(current, new_entries)
        missing = set(users) - states.keys()
        if missing:
            raise ValueError(f"profile updater returned no state for {len(missing)} user(s)")

        counts = Counter((e.user_id, EventType(e.event_type)) for e in new_entries)
        latest: dict[str, datetime] = {}
        for e in new_entries:
            if e.user_id not in latest or e.event_time > latest[e.user_id]:
                latest[e.user_id] = e.event_time
        dims = {states[user].vector_sum.shape for user in users}
        if len(dims) != 1:
            raise ValueError(f"profile vectors of different shapes in one batch: {sorted(dims)}")
        (dim,) = dims.pop()
        await conn.execute(
            _UPDATE_PROFILES,
            {
                "vectors": np.stack(
                    [np.asarray(states[user].vector_sum, dtype=np.float32) for user in users]
                ),
                "dim": dim,
                "users": users,
                "weight_sums": [float(states[user].weight_sum) for user in users],
                "ref_times": [_ref_time(states[user]) for user in users],
                "ratings": [counts[(user, EventType.RATING)] for user in users],
                "reviews": [counts[(user, EventType.REVIEW)] for user in users],
                "watch_events": [counts[(user, EventType.WATCH)] for user in users],
                "last_event_times": [latest[user] for user in users],
            },
        )

    @_traced("known_event_ids")
    async def known_event_ids(self, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT event_id FROM interactions WHERE event_id = ANY(%s::text[])", (list(event_ids),)
                )
                return {row[0] for row in await cur.fetchall()}
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailable(f"known_event_ids failed: {type(exc).__name__}: {exc}") from exc

    async def get_profile(self, user_id: str) -> StoredProfile | None:
        try:
            async with self._pool.connection() as conn, conn.cursor(binary=True) as cur:
                await cur.execute(_GET_PROFILE, (user_id,))
                row = await cur.fetchone()
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailable(f"get_profile failed: {type(exc).__name__}: {exc}") from exc
        return _profile(row)

    async def seen_items(self, user_id: str, limit: int = 1000) -> list[SeenItem]:
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(_SEEN_ITEMS, (user_id, limit))
                rows = await cur.fetchall()
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailable(f"seen_items failed: {type(exc).__name__}: {exc}") from exc
        return _seen(rows)

    @_traced("read_user")
    async def read_user(
        self, user_id: str, seen_limit: int = 1000
    ) -> tuple[StoredProfile | None, list[SeenItem]]:
        # Both statements in one pipeline: one connection and one round trip for the API's request.
        try:
            async with self._pool.connection() as conn, conn.pipeline():
                profile_cur = conn.cursor(binary=True)
                await profile_cur.execute(_GET_PROFILE, (user_id,))
                seen_cur = await conn.execute(_SEEN_ITEMS, (user_id, seen_limit))
                row = await profile_cur.fetchone()
                rows = await seen_cur.fetchall()
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailable(f"read_user failed: {type(exc).__name__}: {exc}") from exc
        return _profile(row), _seen(rows)

    async def users_with_profiles(self, limit: int) -> list[str]:
        """Up to ``limit`` ids of users with a profile (those ``Recommend`` personalises), in id order."""
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(_USERS_WITH_PROFILES, (limit,))
                return [str(row[0]) for row in await cur.fetchall()]
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailable(f"users_with_profiles failed: {type(exc).__name__}: {exc}") from exc

    async def ping(self) -> None:
        try:
            async with self._pool.connection() as conn:
                await conn.execute("SELECT 1")
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailable(f"ping failed: {type(exc).__name__}: {exc}") from exc

    # -- CatalogueStore ----------------------------------------------------------------------------------

    @_traced("apply_item_changes")
    async def apply_item_changes(self, changes: Sequence[CatalogueChange]) -> ItemApplyResult:
        if not changes:
            return ItemApplyResult(applied=0, stale=0, duplicates=0)
        item_ids = sorted({c.item_id for c in changes})
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CATALOGUE_LOCK_KEY,))
                async with conn.cursor(binary=True) as cur:
                    await cur.execute(_GET_ITEMS, (item_ids,))
                    current = {row[0]: _stored_item(row) for row in await cur.fetchall()}
                new_rows, result = apply_changes(current, changes)
                if new_rows:
                    async with conn.cursor() as cur:
                        # new_rows is in item-id order: the rows take their change_seq in the fake's order.
                        await cur.executemany(_WRITE_ITEM, [_item_params(r) for r in new_rows.values()])
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailable(f"apply_item_changes failed: {type(exc).__name__}: {exc}") from exc
        return result

    @_traced("items_changed_since")
    async def items_changed_since(self, change_seq: int, limit: int = 1000) -> tuple[list[StoredItem], int]:
        try:
            async with self._pool.connection() as conn, conn.cursor(binary=True) as cur:
                await cur.execute(_ITEMS_CHANGED_SINCE, (change_seq, limit))
                items = [_stored_item(row) for row in await cur.fetchall()]
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailable(f"items_changed_since failed: {type(exc).__name__}: {exc}") from exc
        return items, items[-1].change_seq if items else change_seq

    @_traced("get_items")
    async def get_items(self, item_ids: Sequence[str]) -> dict[str, StoredItem]:
        if not item_ids:
            return {}
        try:
            async with self._pool.connection() as conn, conn.cursor(binary=True) as cur:
                await cur.execute(_GET_ITEMS, (list(item_ids),))
                return {row[0]: _stored_item(row) for row in await cur.fetchall()}
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailable(f"get_items failed: {type(exc).__name__}: {exc}") from exc

    async def item_content_hashes(self, item_ids: Sequence[str]) -> dict[str, str]:
        if not item_ids:
            return {}
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT item_id, content_hash FROM catalogue_items"
                    " WHERE item_id = ANY(%s::text[]) AND content_hash IS NOT NULL",
                    (list(item_ids),),
                )
                return {str(item_id): str(digest) for item_id, digest in await cur.fetchall()}
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailable(f"item_content_hashes failed: {type(exc).__name__}: {exc}") from exc

    async def item_ids_by_key(self, keys: Sequence[int]) -> dict[int, str]:
        if not keys:
            return {}
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT item_key, item_id FROM catalogue_items WHERE item_key = ANY(%s::bigint[])",
                    (list(keys),),
                )
                return {int(key): str(item_id) for key, item_id in await cur.fetchall()}
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailable(f"item_ids_by_key failed: {type(exc).__name__}: {exc}") from exc

    async def count_items(self, include_hidden: bool = False) -> int:
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT count(*) FROM catalogue_items"
                    " WHERE title IS NOT NULL AND NOT deleted AND (%s OR NOT hidden)",
                    (include_hidden,),
                )
                row = await cur.fetchone()
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailable(f"count_items failed: {type(exc).__name__}: {exc}") from exc
        return int(row[0]) if row else 0

    # Reads by id prefix: a benchmark's or a test's run tags its events and users with a prefix of its own.

    async def count_events(self, event_id_prefix: str) -> int:
        """Ledger rows whose event id starts with ``event_id_prefix``."""
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT count(*) FROM interactions WHERE event_id LIKE %s",
                    (self._prefix_pattern(event_id_prefix),),
                )
                row = await cur.fetchone()
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailable(f"count_events failed: {type(exc).__name__}: {exc}") from exc
        return int(row[0]) if row else 0

    async def rows_with_prefix(self, prefix: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The profiles of the users and the ledger rows of the events whose ids start with ``prefix``, for
        comparing the state two runs left: ``(user_id, ratings, reviews, watch_events, weight_sum, ref_time,
        last_event_time, vector_sum)`` ordered by user id (the vector as a list of floats), and ``(event_id,
        user_id, item_id, event_type, strength)`` ordered by event id."""
        pattern = self._prefix_pattern(prefix)
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT user_id, ratings, reviews, watch_events, weight_sum, ref_time, last_event_time, "
                    "vector_sum::real[] FROM user_profiles WHERE user_id LIKE %s ORDER BY user_id",
                    (pattern,),
                )
                profiles = await cur.fetchall()
                cur = await conn.execute(
                    "SELECT event_id, user_id, item_id, event_type, strength FROM interactions "
                    "WHERE event_id LIKE %s ORDER BY event_id",
                    (pattern,),
                )
                events = await cur.fetchall()
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailable(f"rows_with_prefix failed: {type(exc).__name__}: {exc}") from exc
        return [tuple(row) for row in profiles], [tuple(row) for row in events]

    @staticmethod
    def _prefix_pattern(prefix: str) -> str:
        """A LIKE pattern matching the ids that start with ``prefix`` (its own % and _ taken literally)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return f"{escaped}%"

    async def ledger_pairs(self, page: int = 50_000) -> AsyncIterator[list[LedgerPair]]:
        """Every (user, item) pair, streamed from a server-side cursor (the ledger may not fit in memory
        as rows: each page is handed on before the next is read)."""
        try:
            async with self._pool.connection() as conn, conn.transaction():
                cur = conn.cursor(name="llmrec_ledger_pairs")
                await cur.execute(_LEDGER_PAIRS)
                while rows := await cur.fetchmany(page):
                    yield [LedgerPair(str(u), int(i), float(s), t, r) for u, i, s, t, r in rows]
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailable(f"ledger_pairs failed: {type(exc).__name__}: {exc}") from exc

    async def most_active_users(self, limit: int) -> list[str]:
        """Up to ``limit`` ids of the users with the most applied events, reviewers first (their profiles
        use sentiment too), then by id: the users ``llmrec demo`` shows."""
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT user_id FROM interactions GROUP BY user_id "
                    "ORDER BY bool_or(event_type = 'review') DESC, count(*) DESC, user_id LIMIT %s",
                    (limit,),
                )
                return [str(row[0]) for row in await cur.fetchall()]
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailable(f"most_active_users failed: {type(exc).__name__}: {exc}") from exc


if TYPE_CHECKING:  # mypy checks that the store implements the ports
    _EVENT_STORE: EventStore = PostgresStore("")
    _PROFILE_READER: ProfileReader = PostgresStore("")
    _CATALOGUE_STORE: CatalogueStore = PostgresStore("")
    _LEDGER_READER: LedgerReader = PostgresStore("")
