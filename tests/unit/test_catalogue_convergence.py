"""The catalogue in the one in-memory store (``llmrec.store.fake``) and its convergence rule
(``llmrec.store.item_merge``): any order or replay of the same changes gives one state; stale versus
duplicate changes; tombstones; the hidden flag; the change feed and its cursor; the records' checks."""

from __future__ import annotations

import random
from datetime import datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrec.store import (
    CatalogueChange,
    ItemApplyResult,
    ItemChange,
    ItemRecord,
    StoreUnavailable,
    item_content_hash,
)
from llmrec.store.fake import FakeStore
from tests.catalogue_changes import (
    DELETE,
    EXPECTED,
    HIDE,
    UNHIDE,
    at,
    change,
    follow,
    read_state,
    scenario,
    state,
    upsert,
    vec,
)


def applied_in_batches(changes: list[CatalogueChange], rng: random.Random) -> FakeStore:
    """A fresh fake after ``changes`` in random batches, each batch sent once or twice."""
    store = FakeStore()
    i = 0
    while i < len(changes):
        size = rng.randint(1, 5)
        batch = changes[i : i + size]
        store.apply_items(batch)
        if rng.random() < 0.3:
            store.apply_items(batch)  # a redelivered batch
        i += size
    return store


async def test_the_scenario_ends_in_the_expected_state() -> None:
    store = FakeStore()
    result = await store.apply_item_changes(scenario(""))
    assert result == ItemApplyResult(applied=15, stale=4, duplicates=0)
    items = await store.get_items(list(EXPECTED))
    got = {
        item_id: (
            item.title,
            item.deleted,
            item.hidden,
            item.body_version.event_id if item.body_version else None,
            item.hidden_version.event_id if item.hidden_version else None,
        )
        for item_id, item in items.items()
    }
    assert got == EXPECTED
    assert items["a"].text == "second" and items["a"].categories == ("x",)
    np.testing.assert_array_equal(items["a"].vector, vec(2))
    assert items["c"].attributes == {"year": 2009, "tags": ["tv", "long"]}
    assert items["f"].vector_source == "user"
    tombstone = items["e"]
    assert (tombstone.title, tombstone.vector, tombstone.content_hash) == (None, None, None)
    assert tombstone.version == tombstone.body_version and tombstone.body_version.event_time == at(3)
    assert items["a"].version.event_id == "e04"  # the row's version: the newest of its two registers


@pytest.mark.parametrize("seed", range(20))
async def test_every_order_and_batching_of_the_changes_converges(seed: int) -> None:
    rng = random.Random(seed)
    changes = scenario("")
    reference = await read_state(applied_in_batches(changes, rng), "")
    shuffled = changes[:]
    rng.shuffle(shuffled)
    replayed = shuffled + rng.sample(changes, k=8)  # some changes again, out of order
    store = applied_in_batches(replayed, rng)
    assert await read_state(store, "") == reference
    assert reference == state((await follow(store))[0])
    # Everything once more in one batch: nothing applies, nothing changes.
    before = dict(store.items)
    again = store.apply_items(shuffled)
    assert again.applied == 0 and again.stale + again.duplicates == len(changes)
    assert store.items == before


item_ids = st.sampled_from(["i1", "i2", "i3"])
change_strategy = st.one_of(
    st.builds(
        lambda item, hours, eid, title, seed: upsert(item, hours, eid, title=title, vector_seed=seed),
        item_ids,
        st.integers(0, 5),
        st.sampled_from(["e1", "e2", "e3", "e4"]),
        st.sampled_from(["t1", "t2"]),
        st.sampled_from([None, 1, 2]),
    ),
    st.builds(
        change,
        item_ids,
        st.sampled_from([HIDE, UNHIDE, DELETE]),
        st.integers(0, 5),
        st.sampled_from(["e5", "e6", "e7"]),
    ),
)


def distinct_versions(changes: list[CatalogueChange]) -> list[CatalogueChange]:
    """One change per (register, version): a version names one change, as event ids do."""
    seen: dict[tuple[str, bool, datetime, str], CatalogueChange] = {}
    for c in changes:
        body = isinstance(c, ItemRecord) or c.kind is DELETE
        seen.setdefault((c.item_id, body, c.event_time, c.event_id), c)
    return list(seen.values())


@settings(max_examples=150, deadline=None)
@given(st.lists(change_strategy, max_size=14), st.randoms(use_true_random=False))
def test_any_permutation_with_repeats_converges_to_the_newest_change_per_register(
    changes: list[CatalogueChange], rng: random.Random
) -> None:
    changes = distinct_versions(changes)
    first = applied_in_batches(changes, rng)
    shuffled = changes + rng.sample(changes, k=len(changes) // 2)
    rng.shuffle(shuffled)
    second = applied_in_batches(shuffled, rng)
    assert state(first.items.values()) == state(second.items.values())
    for item_id, item in first.items.items():
        mine = [c for c in changes if c.item_id == item_id]
        body = [c for c in mine if isinstance(c, ItemRecord) or c.kind is DELETE]
        flag = [c for c in mine if isinstance(c, ItemChange) and c.kind is not DELETE]
        newest_body = max(body, key=lambda c: c.version, default=None)
        newest_flag = max(flag, key=lambda c: c.version, default=None)
        assert item.body_version == (newest_body.version if newest_body else None)
        assert item.hidden_version == (newest_flag.version if newest_flag else None)
        assert item.deleted == (isinstance(newest_body, ItemChange))
        assert item.hidden == (newest_flag is not None and newest_flag.kind is HIDE)
        if isinstance(newest_body, ItemRecord):
            assert (item.title, item.content_hash) == (newest_body.title, newest_body.content_hash)
        else:
            assert item.title is None and item.vector is None
    assert set(first.items) == {c.item_id for c in changes}


async def test_the_stored_event_is_a_duplicate_an_older_one_is_stale() -> None:
    store = FakeStore()
    first, second = upsert("i", 1, "e1", title="one"), upsert("i", 2, "e2", title="two")
    assert await store.apply_item_changes([first, second]) == ItemApplyResult(2, 0, 0)
    assert await store.apply_item_changes([second, first]) == ItemApplyResult(0, 1, 1)
    # Within a batch: the repeat of an applied change is a duplicate, in the batch's order.
    third = upsert("i", 3, "e3", title="three")
    assert await store.apply_item_changes([third, third, first]) == ItemApplyResult(1, 1, 1)
    hide = change("i", HIDE, 0, "h1")  # older than every upsert, but the hidden flag has no version yet
    assert await store.apply_item_changes([hide, hide]) == ItemApplyResult(1, 0, 1)
    item = (await store.get_items(["i"]))["i"]
    assert (item.title, item.hidden, item.version.event_id) == ("three", True, "e3")


async def test_a_delete_leaves_a_tombstone_that_only_a_newer_upsert_lifts() -> None:
    store = FakeStore()
    await store.apply_item_changes([upsert("i", 1, "e1"), upsert("j", 1, "e2")])
    assert await store.count_items() == 2
    assert await store.apply_item_changes([change("i", DELETE, 5, "d1")]) == ItemApplyResult(1, 0, 0)
    assert await store.count_items() == 1
    assert await store.item_content_hashes(["i", "j"]) == {"j": item_content_hash("title", "", ())}
    assert await store.apply_item_changes([upsert("i", 4, "e3", title="late")]) == ItemApplyResult(0, 1, 0)
    tombstone = (await store.get_items(["i"]))["i"]
    assert (tombstone.deleted, tombstone.live, tombstone.title) == (True, False, None)
    assert await store.apply_item_changes([upsert("i", 6, "e4", title="back")]) == ItemApplyResult(1, 0, 0)
    item = (await store.get_items(["i"]))["i"]
    assert (item.deleted, item.live, item.title) == (False, True, "back")
    # A delete of an item never seen leaves a tombstone too.
    await store.apply_item_changes([change("k", DELETE, 5, "d2"), upsert("k", 4, "e5")])
    assert (await store.get_items(["k"]))["k"].deleted
    assert await store.count_items(include_hidden=True) == 2


async def test_hidden_is_its_own_flag_kept_across_upserts_and_counted_apart() -> None:
    store = FakeStore()
    await store.apply_item_changes([change("i", HIDE, 1, "h1")])  # unknown item: a flag-only row
    row = (await store.get_items(["i"]))["i"]
    assert (row.hidden, row.live, row.visible, row.title) == (True, False, False, None)
    assert await store.count_items(include_hidden=True) == 0
    await store.apply_item_changes([upsert("i", 2, "e1"), upsert("j", 2, "e2")])
    assert (await store.count_items(), await store.count_items(include_hidden=True)) == (1, 2)
    await store.apply_item_changes([upsert("i", 3, "e3", title="edited")])
    assert (await store.get_items(["i"]))["i"].hidden  # an upsert does not unhide
    await store.apply_item_changes([change("i", UNHIDE, 4, "u1")])
    item = (await store.get_items(["i"]))["i"]
    assert (item.hidden, item.visible, item.title) == (False, True, "edited")
    assert await store.count_items() == 2


async def test_the_change_feed_pages_through_changed_rows_once_each() -> None:
    store = FakeStore()
    await store.apply_item_changes(scenario(""))
    items, cursor = await follow(store, page=2)
    assert sorted(i.item_id for i in items) == sorted(EXPECTED)  # one bump per row per batch
    assert [i.change_seq for i in items] == sorted(i.change_seq for i in items)
    assert [i.item_id for i in items] == sorted(EXPECTED)  # a batch numbers its rows in id order
    assert cursor == items[-1].change_seq
    assert await store.items_changed_since(cursor) == ([], cursor)
    # Stale and duplicate changes bump nothing; applied ones bump only their rows.
    await store.apply_item_changes(scenario(""))
    assert await store.items_changed_since(cursor) == ([], cursor)
    await store.apply_item_changes([change("c", UNHIDE, 9, "u9"), change("b", DELETE, 9, "d9")])
    changed, cursor2 = await store.items_changed_since(cursor)
    assert [i.item_id for i in changed] == ["b", "c"] and cursor2 == changed[-1].change_seq
    assert changed[0].deleted and not changed[1].hidden
    later, _ = await store.items_changed_since(0, limit=100)
    assert [i.item_id for i in later][-2:] == ["b", "c"]


async def test_content_hashes_cover_title_text_and_categories_only() -> None:
    base = upsert("i", 1, "e1", title="T", text="body", categories=["a", "b"], vector_seed=1)
    same_text = upsert(
        "i", 2, "e2", title="T", text="body", categories=["a", "b"], vector_seed=2, attributes={"price": 3}
    )
    assert base.content_hash == same_text.content_hash == item_content_hash("T", "body", ["a", "b"])
    for other in (
        upsert("i", 1, "e", title="T2", text="body", categories=["a", "b"]),
        upsert("i", 1, "e", title="T", text="body2", categories=["a", "b"]),
        upsert("i", 1, "e", title="T", text="body", categories=["b", "a"]),
        upsert("i", 1, "e", title="Tb", text="ody", categories=["a", "b"]),
    ):
        assert other.content_hash != base.content_hash
    store = FakeStore()
    await store.apply_item_changes([base, change("j", HIDE, 1, "h")])
    assert await store.item_content_hashes(["i", "j", "nope"]) == {"i": base.content_hash}


def test_records_refuse_what_the_database_could_not_store_or_order() -> None:
    naive = datetime(2024, 1, 1)
    with pytest.raises(ValueError, match="timezone"):
        ItemRecord(item_id="i", event_time=naive, event_id="e", title="t")
    with pytest.raises(ValueError, match="timezone"):
        ItemChange(item_id="i", kind=HIDE, event_time=naive, event_id="e")
    with pytest.raises(ValueError, match="empty"):
        ItemRecord(item_id="", event_time=at(0), event_id="e", title="t")
    with pytest.raises(ValueError, match="together"):
        ItemRecord(item_id="i", event_time=at(0), event_id="e", title="t", vector=vec(1))
    with pytest.raises(ValueError, match="non-empty"):
        ItemRecord(
            item_id="i", event_time=at(0), event_id="e", title="t", vector=np.zeros(0), vector_source="u"
        )
    with pytest.raises(ValueError, match="non-empty"):
        ItemRecord(item_id="i", event_time=at(0), event_id="e", title="t", vector=[np.nan], vector_source="u")
    with pytest.raises(ValueError):
        ItemRecord(item_id="i", event_time=at(0), event_id="e", title="t", attributes={"x": float("nan")})
    with pytest.raises(ValueError, match="NUL"):
        ItemRecord(item_id="i", event_time=at(0), event_id="e", title="t\x00")
    with pytest.raises(ValueError):
        ItemChange(item_id="i", kind="archive", event_time=at(0), event_id="e")  # type: ignore[arg-type]
    record = ItemRecord(
        item_id="i",
        event_time=at(0),
        event_id="e",
        title="t",
        categories=["a"],  # type: ignore[arg-type]
        attributes={"k": (1, 2)},
        vector=[[1.0, 2.0]],
        vector_source="user",
    )
    assert record.categories == ("a",) and record.attributes == {"k": [1, 2]}  # as jsonb gives it back
    assert record.vector is not None and record.vector.dtype == np.float32 and record.vector.shape == (2,)
    assert not record.vector.flags.writeable
    assert ItemChange(item_id="i", kind="hide", event_time=at(0), event_id="e").kind is HIDE  # type: ignore[arg-type]


async def test_the_failure_knobs_cover_the_catalogue_and_calls_are_counted() -> None:
    store = FakeStore(fail=1)
    with pytest.raises(StoreUnavailable):
        await store.apply_item_changes([upsert("i", 1, "e1")])
    assert store.items == {}
    assert (await store.apply_item_changes([upsert("i", 1, "e1")])).applied == 1
    store.unavailable = True
    for call in (store.get_items(["i"]), store.item_content_hashes(["i"]), store.count_items()):
        with pytest.raises(StoreUnavailable):
            await call
    with pytest.raises(StoreUnavailable):
        await store.items_changed_since(0)
    assert store.calls["apply_item_changes"] == 2 and store.calls["items_changed_since"] == 1
    assert await FakeStore().apply_item_changes([]) == ItemApplyResult(0, 0, 0)
