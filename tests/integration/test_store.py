"""PostgresStore against a real PostgreSQL: schema, idempotent batches, locking, the real[] fallback, and
the in-memory fake (``llmrec.store.fake``) reading back what PostgreSQL does."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from llmrec.events.schema import EventType, WatchStatus
from llmrec.preference_state import PreferenceState
from llmrec.store import LedgerEntry, migrate
from llmrec.store.fake import FakeStore
from llmrec.store.postgres import PostgresStore
from ranker.preferences import Contribution, DecayPolicy, apply_contributions

pytestmark = pytest.mark.integration

DIM = 8
DECAY = DecayPolicy()
T0 = datetime(2024, 3, 1, tzinfo=UTC)
_rng = np.random.default_rng(7)
ITEM_VECTORS = {
    item: (v / np.linalg.norm(v)).astype(np.float32)
    for item, v in ((i, _rng.standard_normal(DIM)) for i in range(1, 101))
}


def updater(current: dict[str, PreferenceState], new: Sequence[LedgerEntry]) -> dict[str, PreferenceState]:
    """The worker's updater in miniature: item vectors from a dict, the default decay."""
    by_user: dict[str, list[Contribution]] = {}
    for e in new:
        by_user.setdefault(e.user_id, []).append(
            Contribution(ITEM_VECTORS[e.item_id], e.strength, e.event_time.timestamp())
        )
    return {
        user: apply_contributions(current.get(user, PreferenceState.empty(DIM)), contributions, DECAY)
        for user, contributions in by_user.items()
    }


def entry(
    event_id: str,
    user_id: str,
    item_id: int,
    hours: float,
    strength: float = 0.4,
    event_type: EventType = EventType.RATING,
    rating: float | None = 9.0,
    status: WatchStatus | None = None,
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
        source_topic="llmrec.ratings.v1",
        source_partition=0,
        source_offset=int(hours),
    )


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
    """A per-test prefix: the database is shared by the whole session."""
    return uuid.uuid4().hex[:10]


def test_migrate_is_idempotent(migrated_dsn: str) -> None:
    migrate(migrated_dsn)
    migrate(migrated_dsn)
    with psycopg.connect(migrated_dsn) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE tablename IN ('interactions', 'user_profiles')"
            )
        }
    assert versions[0] == "001_init" and len(versions) == len(set(versions))
    assert tables == {"interactions", "user_profiles"}


async def test_a_batch_builds_the_profile_the_pure_math_predicts(store: PostgresStore, uid: str) -> None:
    entries = [
        entry(f"{uid}-1", f"{uid}-alice", 1, 0, strength=0.4),
        entry(f"{uid}-2", f"{uid}-alice", 2, 24, strength=-0.4, rating=1.0),
        entry(f"{uid}-3", f"{uid}-alice", 3, 48, strength=0.25, event_type=EventType.WATCH, rating=None),
        entry(f"{uid}-4", f"{uid}-bob", 1, 5, strength=0.1),
    ]
    result = await store.apply_batch(entries, updater)
    assert (result.applied, result.duplicates) == (4, 0)

    profile = await store.get_profile(f"{uid}-alice")
    assert profile is not None
    expected = updater({}, entries[:3])[f"{uid}-alice"]
    np.testing.assert_allclose(profile.state.vector_sum, expected.vector_sum, rtol=1e-6)
    assert profile.state.weight_sum == pytest.approx(expected.weight_sum)
    assert profile.state.ref_time_s == pytest.approx(expected.ref_time_s)
    assert (profile.ratings, profile.reviews, profile.watch_events) == (2, 0, 1)
    assert profile.last_event_time == T0 + timedelta(hours=48)
    assert await store.get_profile(f"{uid}-nobody") is None

    seen = await store.seen_items(f"{uid}-alice")
    assert [s.item_id for s in seen] == [1, 3, 2]  # strongest first, the disliked one last
    assert seen[2].rating == 1.0 and seen[1].rating is None


async def test_applying_the_same_batch_twice_changes_nothing(store: PostgresStore, uid: str) -> None:
    entries = [entry(f"{uid}-{i}", f"{uid}-u{i % 3}", i + 1, i) for i in range(30)]
    first = await store.apply_batch(entries, updater)
    before = {u: await store.get_profile(f"{uid}-u{u}") for u in range(3)}
    again = await store.apply_batch(list(reversed(entries)), updater)
    after = {u: await store.get_profile(f"{uid}-u{u}") for u in range(3)}
    assert (first.applied, first.duplicates) == (30, 0)
    assert (again.applied, again.duplicates) == (0, 30)
    for u in range(3):
        b, a = before[u], after[u]
        assert a is not None and b is not None
        np.testing.assert_array_equal(a.state.vector_sum, b.state.vector_sum)
        assert (a.state.weight_sum, a.ratings, a.updated_at) == (b.state.weight_sum, b.ratings, b.updated_at)


def history(uid: str, user: str) -> list[LedgerEntry]:
    """One user rating, reviewing and watching titles, a title more than once, plus another user."""
    review, watch = EventType.REVIEW, EventType.WATCH
    return [
        entry(f"{uid}-r1", user, 7, 0, strength=0.1, rating=6.0),
        entry(f"{uid}-r2", user, 7, 5, strength=0.2, rating=8.0),
        entry(f"{uid}-v1", user, 7, 2, strength=0.3, event_type=review, rating=None),
        entry(
            f"{uid}-w1", user, 7, 1, strength=0.1, event_type=watch, rating=None, status=WatchStatus.WATCHING
        ),
        entry(
            f"{uid}-w2", user, 7, 3, strength=0.3, event_type=watch, rating=None, status=WatchStatus.COMPLETED
        ),
        entry(f"{uid}-v2", user, 9, 4, strength=0.25, event_type=review, rating=None),
        entry(
            f"{uid}-w3", user, 11, 6, strength=0.2, event_type=watch, rating=None, status=WatchStatus.DROPPED
        ),
        entry(f"{uid}-x1", user, 8, 0, strength=-0.4, rating=1.0),
        entry(f"{uid}-o1", f"{uid}-other", 7, 0),
    ]


async def test_seen_items_say_how_the_user_knew_each_item(store: PostgresStore, uid: str) -> None:
    user = f"{uid}-u"
    await store.apply_batch(history(uid, user), updater)
    seen = {s.item_id: s for s in await store.seen_items(user)}
    assert list(seen) == [7, 9, 11, 8]
    assert seen[7].event_types == {EventType.RATING, EventType.REVIEW, EventType.WATCH}
    assert seen[7].status is WatchStatus.COMPLETED  # the latest watch status
    assert seen[7].rating == 8.0  # the latest rating
    assert (seen[9].event_types, seen[9].status, seen[9].rating) == ({EventType.REVIEW}, None, None)
    assert (seen[11].event_types, seen[11].status) == ({EventType.WATCH}, WatchStatus.DROPPED)
    assert (seen[8].event_types, seen[8].status) == ({EventType.RATING}, None)
    _, read = await store.read_user(user)
    assert read == list(seen.values())


async def test_the_in_memory_fake_reads_back_what_postgresql_does(store: PostgresStore, uid: str) -> None:
    user, fake = f"{uid}-u", FakeStore()
    entries = history(uid, user)
    for batch in (entries[:4], entries[2:]):  # overlapping: the second batch repeats two events
        real_result = await store.apply_batch(batch, updater)
        assert await fake.apply_batch(batch, updater) == real_result
    real_profile, real_seen = await store.read_user(user)
    fake_profile, fake_seen = await fake.read_user(user)
    assert real_profile is not None and fake_profile is not None
    counts = ("ratings", "reviews", "watch_events", "last_event_time")
    assert [getattr(fake_profile, c) for c in counts] == [getattr(real_profile, c) for c in counts]
    np.testing.assert_allclose(fake_profile.state.vector_sum, real_profile.state.vector_sum, rtol=1e-5)
    assert fake_profile.state.weight_sum == pytest.approx(real_profile.state.weight_sum)
    assert [(s.item_id, s.event_time, s.rating, s.event_types, s.status) for s in fake_seen] == [
        (s.item_id, s.event_time, s.rating, s.event_types, s.status) for s in real_seen
    ]
    assert [s.strength for s in fake_seen] == pytest.approx([s.strength for s in real_seen])
    assert await fake.seen_items(user, limit=2) == fake_seen[:2]
    assert await store.seen_items(user, limit=2) == real_seen[:2]
    # The ranker's training read (jobs.train_ranker.train_ranker_from_ledger): the same pairs, paged.
    real_pairs = [p async for page in store.ledger_pairs(page=2) for p in page if p.user_id == user]
    fake_pairs = [p async for page in fake.ledger_pairs(page=2) for p in page if p.user_id == user]
    assert [(p.item_id, p.event_time, p.rating) for p in fake_pairs] == [
        (p.item_id, p.event_time, p.rating) for p in real_pairs
    ]
    assert [p.strength for p in fake_pairs] == pytest.approx([p.strength for p in real_pairs])
    by_item = {s.item_id: s for s in real_seen}
    assert all(by_item[p.item_id].strength == pytest.approx(p.strength) for p in real_pairs)


async def test_users_with_profiles_lists_profiled_users_in_id_order(store: PostgresStore, uid: str) -> None:
    await store.apply_batch(
        [entry(f"{uid}-1", f"{uid}-b", 1, 0), entry(f"{uid}-2", f"{uid}-a", 2, 0)], updater
    )
    users = await store.users_with_profiles(1_000_000)
    assert users == sorted(users) and {f"{uid}-a", f"{uid}-b"} <= set(users)
    assert len(await store.users_with_profiles(1)) == 1


async def test_an_overlapping_batch_applies_only_its_new_events(store: PostgresStore, uid: str) -> None:
    await store.apply_batch(
        [entry(f"{uid}-a", f"{uid}-u", 1, 0), entry(f"{uid}-b", f"{uid}-u", 2, 1)], updater
    )
    result = await store.apply_batch(
        [entry(f"{uid}-b", f"{uid}-u", 2, 1), entry(f"{uid}-c", f"{uid}-u", 3, 2)], updater
    )
    assert (result.applied, result.duplicates) == (1, 1)
    profile = await store.get_profile(f"{uid}-u")
    assert profile is not None and profile.ratings == 3
    assert await store.known_event_ids([f"{uid}-a", f"{uid}-c", f"{uid}-zzz"]) == {f"{uid}-a", f"{uid}-c"}


async def test_a_repeated_id_within_a_batch_is_applied_once(store: PostgresStore, uid: str) -> None:
    result = await store.apply_batch(
        [
            entry(f"{uid}-x", f"{uid}-u", 1, 0, strength=0.4),
            entry(f"{uid}-x", f"{uid}-u", 2, 0, strength=-0.4),
        ],
        updater,
    )
    assert (result.applied, result.duplicates) == (1, 1)
    seen = await store.seen_items(f"{uid}-u")
    assert [(s.item_id, s.strength) for s in seen] == [(1, pytest.approx(0.4))]


async def test_a_failing_update_rolls_the_ledger_back(store: PostgresStore, uid: str) -> None:
    def broken(current: dict[str, PreferenceState], new: Sequence[LedgerEntry]) -> dict[str, PreferenceState]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await store.apply_batch([entry(f"{uid}-1", f"{uid}-u", 1, 0)], broken)
    assert await store.known_event_ids([f"{uid}-1"]) == set()
    assert await store.get_profile(f"{uid}-u") is None
    result = await store.apply_batch([entry(f"{uid}-1", f"{uid}-u", 1, 0)], updater)
    assert result.applied == 1


async def test_concurrent_batches_for_one_user_lose_no_update(store: PostgresStore, uid: str) -> None:
    """The ratings, reviews and watch agents can hit the same user at once; the row lock serialises them."""
    user = f"{uid}-busy"
    batches = [
        [entry(f"{uid}-{b}-{i}", user, (b * 10 + i) % 100 + 1, b * 10 + i, strength=0.1) for i in range(10)]
        for b in range(6)
    ]
    results = await asyncio.gather(*(store.apply_batch(batch, updater) for batch in batches))
    assert sum(r.applied for r in results) == 60
    profile = await store.get_profile(user)
    assert profile is not None
    assert profile.ratings == 60
    expected = updater({}, [e for batch in batches for e in batch])[user]
    assert profile.state.weight_sum == pytest.approx(expected.weight_sum, rel=1e-6)
    np.testing.assert_allclose(profile.state.vector_sum, expected.vector_sum, rtol=1e-4, atol=1e-6)


async def test_batch_of_256_applies_quickly(store: PostgresStore, uid: str) -> None:
    entries = [entry(f"{uid}-{i}", f"{uid}-u{i % 64}", i % 100 + 1, i) for i in range(256)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await store.apply_batch(entries, updater)
    elapsed = loop.time() - started
    assert result.applied == 256
    # About 0.07 s on a 2-core machine; the bound only catches a regression to per-row round trips.
    assert elapsed < 2.0, f"apply_batch(256) took {elapsed:.2f}s"


@pytest.fixture
def plain_dsn(migrated_dsn: str) -> Iterator[str]:
    """A new role owning a new database: it may create tables but not the (untrusted) vector extension.
    Dropped afterwards, so an external server is left as it was."""
    suffix = uuid.uuid4().hex[:8]
    role, password, dbname = f"llmrec_plain_{suffix}", f"pw_{suffix}", f"llmrec_plain_{suffix}"
    try:
        with psycopg.connect(migrated_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}' NOSUPERUSER")
            conn.execute(f'CREATE DATABASE "{dbname}" OWNER "{role}"')
    except psycopg.errors.InsufficientPrivilege:
        pytest.fail("the test role may not create roles and databases: run the tests as a superuser")
    try:
        yield make_conninfo(migrated_dsn, user=role, password=password, dbname=dbname)
    finally:
        with psycopg.connect(migrated_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


async def test_without_pgvector_vectors_live_in_real_arrays(plain_dsn: str, uid: str) -> None:
    migrate(plain_dsn)
    with psycopg.connect(plain_dsn) as conn:
        row = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'user_profiles'::regclass AND attname = 'vector_sum'"
        ).fetchone()
    assert row is not None and row[0] == "real[]"
    entries = [entry(f"{uid}-1", "u", 1, 0), entry(f"{uid}-2", "u", 2, 1)]
    async with PostgresStore(plain_dsn) as plain:
        assert (await plain.apply_batch(entries, updater)).applied == 2
        assert (await plain.apply_batch(entries, updater)).applied == 0
        profile = await plain.get_profile("u")
    assert profile is not None
    np.testing.assert_allclose(profile.state.vector_sum, updater({}, entries)["u"].vector_sum, rtol=1e-6)


async def test_with_pgvector_the_column_is_a_vector(migrated_dsn: str) -> None:
    with psycopg.connect(migrated_dsn) as conn:
        has_vector = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'").fetchone()
        row = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'user_profiles'::regclass AND attname = 'vector_sum'"
        ).fetchone()
    assert has_vector is not None and row is not None
    assert row[0] == ("vector" if has_vector[0] else "real[]")
