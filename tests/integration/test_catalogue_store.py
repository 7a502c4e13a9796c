"""The catalogue (migration 002) against a real PostgreSQL: the same change scenarios as the fake's unit
tests (``tests/catalogue_changes.py``) give the same counts, rows and change feed in PostgreSQL and in
the fake; the migration is idempotent; vectors live in pgvector or real[] columns like user vectors;
concurrent writers neither lose changes nor publish change_seq values out of commit order."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Iterator

import numpy as np
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from llmrec.item_ids import item_key
from llmrec.store import ItemApplyResult, migrate
from llmrec.store.fake import FakeStore
from llmrec.store.migrate import migration_files
from llmrec.store.postgres import PostgresStore
from tests.catalogue_changes import (
    EXPECTED,
    HIDE,
    UNHIDE,
    change,
    follow,
    read_state,
    scenario,
    upsert,
    vec,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def migrated_dsn(postgres_dsn: str) -> str:
    migrate(postgres_dsn)
    return postgres_dsn


@pytest.fixture
async def store(migrated_dsn: str) -> AsyncIterator[PostgresStore]:
    async with PostgresStore(migrated_dsn, min_size=1, max_size=4) as s:
        yield s


@pytest.fixture
def uid() -> str:
    """A per-test item id prefix: the database is shared by the whole session."""
    return f"{uuid.uuid4().hex[:10]}:"


def _column_type(conn: psycopg.Connection, table: str, column: str) -> str | None:
    row = conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attname = %s",
        (table, column),
    ).fetchone()
    return str(row[0]) if row else None


def test_the_catalogue_migration_is_recorded_once_and_reruns_as_a_no_op(migrated_dsn: str) -> None:
    with psycopg.connect(migrated_dsn) as conn:
        before = conn.execute("SELECT version, applied_at FROM schema_migrations ORDER BY version").fetchall()
        seq_before = conn.execute("SELECT last_value FROM catalogue_change_seq").fetchone()
    migrate(migrated_dsn)
    migrate(migrated_dsn)
    with psycopg.connect(migrated_dsn) as conn:
        after = conn.execute("SELECT version, applied_at FROM schema_migrations ORDER BY version").fetchall()
        seq_after = conn.execute("SELECT last_value FROM catalogue_change_seq").fetchone()
        indexes = {
            r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'catalogue_items'")
        }
        item_vector = _column_type(conn, "catalogue_items", "vector")
        user_vector = _column_type(conn, "user_profiles", "vector_sum")
    assert [v for v, _ in before] == [version for version, _ in migration_files()]
    assert [v for v, _ in before][:3] == ["001_init", "002_catalogue", "003_item_keys"]
    assert after == before and seq_after == seq_before
    assert {
        "catalogue_items_pkey",
        "catalogue_items_change_seq_idx",
        "catalogue_items_item_key_idx",
    } <= indexes
    assert item_vector == user_vector and item_vector in ("vector", "real[]")


async def test_postgresql_and_the_fake_agree_on_the_scenario(store: PostgresStore, uid: str) -> None:
    fake = FakeStore()
    _, start = await follow(store)
    changes = scenario(uid)
    rng = random.Random(3)
    for batch in (changes[:7], changes[5:12], changes[12:], changes[::-1]):  # overlaps and a reversed replay
        assert await store.apply_item_changes(batch) == await fake.apply_item_changes(batch)
    real = await read_state(store, uid)
    assert real == await read_state(fake, uid)
    assert sorted(real) == sorted(EXPECTED)
    # The change feed: the same rows in the same relative order.
    real_feed, cursor = await follow(store, start)
    fake_feed, _ = await follow(fake)
    assert [i.item_id for i in real_feed if i.item_id.startswith(uid)] == [i.item_id for i in fake_feed]
    assert await store.items_changed_since(cursor) == ([], cursor)
    # A shuffled replay with one new change each side: one row changes in both.
    replay = changes[:]
    rng.shuffle(replay)
    replay.append(change(f"{uid}c", UNHIDE, 9, f"{uid}u9"))
    assert await store.apply_item_changes(replay) == await fake.apply_item_changes(replay)
    assert await read_state(store, uid) == await read_state(fake, uid)
    changed, _ = await store.items_changed_since(cursor)
    assert [i.item_id for i in changed] == [f"{uid}c"] and not changed[0].hidden
    # Hashes, reads of unknown ids.
    ids = [f"{uid}{name}" for name in "abcdefgz"]
    assert await store.item_content_hashes(ids) == await fake.item_content_hashes(ids)
    assert await store.get_items([]) == {} and await store.item_content_hashes([]) == {}
    # Who holds each key (the worker's collision check), tombstones included.
    keys = [item_key(i) for i in ids]
    assert await store.item_ids_by_key(keys) == await fake.item_ids_by_key(keys)
    assert set((await store.item_ids_by_key(keys)).values()) == {f"{uid}{name}" for name in real}
    vector = (await store.get_items([f"{uid}a"]))[f"{uid}a"].vector
    assert vector is not None and vector.dtype == np.float32
    np.testing.assert_array_equal(vector, vec(2))


async def test_every_order_of_the_scenario_converges_in_postgresql(store: PostgresStore) -> None:
    states = []
    for seed in range(3):
        prefix = f"{uuid.uuid4().hex[:10]}:"
        changes = scenario(prefix)
        random.Random(seed).shuffle(changes)
        for i in range(0, len(changes), 4):
            await store.apply_item_changes(changes[i : i + 4])
        states.append(await read_state(store, prefix))
    assert states[0] == states[1] == states[2]


async def test_counts_follow_the_fake(store: PostgresStore, uid: str) -> None:
    # count_items sees the whole shared table: compare the difference a batch makes.
    fake = FakeStore()
    before = (await store.count_items(), await store.count_items(include_hidden=True))
    changes = scenario(uid)
    await store.apply_item_changes(changes)
    await fake.apply_item_changes(changes)
    after = (await store.count_items(), await store.count_items(include_hidden=True))
    assert (after[0] - before[0], after[1] - before[1]) == (
        await fake.count_items(),
        await fake.count_items(include_hidden=True),
    )
    assert await fake.count_items() == 4 and await fake.count_items(include_hidden=True) == 5


async def test_a_failing_batch_leaves_nothing(store: PostgresStore, uid: str) -> None:
    """A change the database refuses rolls the whole batch back, and its sequence values stay unused."""
    good = upsert(f"{uid}i", 1, f"{uid}e1")
    bad = upsert(f"{uid}j", 1, f"{uid}e2", title="ok")
    object.__setattr__(bad, "attributes", {"x": object()})  # past the record's own checks
    with pytest.raises(TypeError):
        await store.apply_item_changes([good, bad])
    assert await store.get_items([f"{uid}i", f"{uid}j"]) == {}
    assert await store.apply_item_changes([good]) == ItemApplyResult(1, 0, 0)


async def test_concurrent_writers_lose_no_change_and_the_feed_misses_none(
    store: PostgresStore, migrated_dsn: str, uid: str
) -> None:
    """Writers hold the catalogue lock while they take change_seq values: a follower reading while they
    commit never moves its cursor past a value that is still to commit."""
    _, start = await follow(store)
    batches = [
        [upsert(f"{uid}{b}-{i}", b, f"{uid}e{b}-{i}", vector_seed=i) for i in range(10)]
        + [change(f"{uid}shared", HIDE if b % 2 else UNHIDE, b, f"{uid}h{b}")]
        for b in range(8)
    ]
    followed: dict[str, int] = {}
    cursor = start
    done = asyncio.Event()

    async def follower() -> None:
        nonlocal cursor
        async with PostgresStore(migrated_dsn, min_size=1, max_size=1) as reader:
            while True:
                finished = done.is_set()
                items, cursor = await reader.items_changed_since(cursor, limit=7)
                for item in items:
                    followed[item.item_id] = item.change_seq
                if finished and not items:
                    return
                await asyncio.sleep(0)

    async def writers() -> list[ItemApplyResult]:
        try:
            return await asyncio.gather(*(store.apply_item_changes(batch) for batch in batches))
        finally:
            done.set()

    results, _ = await asyncio.gather(writers(), follower())
    # Every upsert applies; the shared item's hide or unhide applies when it is newer than the stored one.
    assert 80 < sum(r.applied for r in results) <= 88
    assert sum(r.applied + r.stale + r.duplicates for r in results) == 88
    mine = {k for k in followed if k.startswith(uid)}
    assert mine == {c.item_id for batch in batches for c in batch}
    shared = (await store.get_items([f"{uid}shared"]))[f"{uid}shared"]
    assert shared.hidden and shared.hidden_version is not None
    assert shared.hidden_version.event_id == f"{uid}h7"  # the newest, whatever order the writers ran in
    assert followed[f"{uid}shared"] == shared.change_seq


@pytest.fixture
def plain_dsn(migrated_dsn: str) -> Iterator[str]:
    """A new role owning a new database: it may create tables but not the (untrusted) vector extension."""
    suffix = uuid.uuid4().hex[:8]
    role, password, dbname = f"llmrec_cat_{suffix}", f"pw_{suffix}", f"llmrec_cat_{suffix}"
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}' NOSUPERUSER")
        conn.execute(f'CREATE DATABASE "{dbname}" OWNER "{role}"')
    try:
        yield make_conninfo(migrated_dsn, user=role, password=password, dbname=dbname)
    finally:
        with psycopg.connect(migrated_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


async def test_without_pgvector_item_vectors_live_in_real_arrays(plain_dsn: str) -> None:
    migrate(plain_dsn)
    with psycopg.connect(plain_dsn) as conn:
        assert _column_type(conn, "catalogue_items", "vector") == "real[]"
    fake = FakeStore()
    async with PostgresStore(plain_dsn) as plain:
        changes = scenario("p:")
        assert await plain.apply_item_changes(changes) == await fake.apply_item_changes(changes)
        assert await read_state(plain, "p:") == await read_state(fake, "p:")
        assert await plain.count_items() == 4
