"""Incremental snapshots (issue 13): a live change is derived from the last snapshot at the cost of its
rows (``Snapshot.with_rows``, ``ItemIndex.with_changes``, ``ranker.columns.Column``) and must equal a full
build of the same index and catalogue, answer for answer, while every older snapshot stays as it was."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import numpy as np
import pytest

from grpc_api import live_catalogue
from grpc_api.live_catalogue import CatalogueFollower, adopt_merged, apply_catalogue_rows
from grpc_api.service import RecommendationService, Snapshot
from llmrec.catalogue import Item
from llmrec.store import CatalogueChange
from llmrec.store.fake import FakeStore
from llmrec_client.errors import NotFound
from ranker.columns import Column
from ranker.retrieval import ItemIndex, index_kind
from tests.catalogue_changes import DELETE, DIM, HIDE, UNHIDE, change, upsert, vec

GENRES = ("Drama", "Comedy", "Action", "Romance")
# Members with ties, so the popularity order's tie-break (item id, then row) is exercised.
BASE = [
    Item(item_id=i, title=f"anime {i}", genres=(GENRES[i % 3], GENRES[(i + 1) % 4]), members=(i % 5) * 10)
    for i in range(1, 31)
]


def base_snapshot(kind: str = "flat") -> Snapshot:
    vectors = np.stack([vec(1000 + i, DIM) for i in range(len(BASE))])
    return Snapshot(ItemIndex.build([i.key for i in BASE], vectors, index_kind(kind)), BASE)


def rebuilt(snapshot: Snapshot) -> Snapshot:
    """A full build of what ``snapshot`` serves: its index, its catalogue, its hidden keys."""
    return Snapshot(snapshot.index, list(snapshot.items.values()), hidden=snapshot.hidden)


def metadata(snapshot: Snapshot) -> dict[str, Any]:
    """Everything a snapshot derives per row, as plain comparable values (deep copies)."""
    return {
        "servable": snapshot.servable.tolist(),
        "external_ids": list(snapshot.external_ids),
        "titles": list(snapshot.titles),
        "genres": list(snapshot.genres),
        "popularity": snapshot.popularity.tolist(),
        "by_popularity": snapshot.by_popularity.tolist(),
        "genre_rows": {name: mask.tolist() for name, mask in snapshot.genre_rows.items()},
        "genre_names": dict(snapshot.genre_names),
        "missing_metadata": snapshot.missing_metadata,
        "rows": len(snapshot.index),
        "item_ids": snapshot.index.item_ids.tolist(),
    }


async def answers(snapshot: Snapshot) -> dict[str, Any]:
    """SimilarItems of every item the catalogue knows and cold-start answers with genre filters."""
    service = RecommendationService(FakeStore(), snapshot)
    out: dict[str, Any] = {}
    for item in sorted(snapshot.items.values(), key=lambda i: i.external_id):
        try:
            similar = await service.similar_items(item.external_id, 8)
            out[item.external_id] = [(i.item_id, round(i.score, 4), i.reason) for i in similar.items]
        except NotFound:
            out[item.external_id] = None
    for include in ((), ("Drama",), ("comedy", "Romance")):
        known = [g for g in include if g.casefold() in snapshot.genre_names]
        cold = await service.recommend("nobody", k=50, include_genres=known)
        out[f"cold{include}"] = [(i.item_id, i.title, i.genres, i.score, i.reason) for i in cold.items]
    return out


def poll_changes(poll: int, rng: np.random.Generator) -> list[CatalogueChange]:
    """One poll's worth of random changes: new items, edits with the same or another vector, hides,
    unhides, deletes, items without a vector, and a new most popular item now and then."""
    hours = 10.0 * poll
    out: list[CatalogueChange] = []
    for n in range(int(rng.integers(2, 6))):
        out.append(
            upsert(
                f"shop:{poll}-{n}",
                hours,
                f"new{poll}-{n}",
                title=f"new {poll}-{n}",
                categories=[GENRES[int(rng.integers(4))], "Shop"],
                attributes={"members": int(rng.integers(0, 40)) if n else 1000 * poll * (poll % 2)},
                vector_seed=int(rng.integers(1_000_000)),
            )
        )
    for j, pick in enumerate(rng.choice(len(BASE), size=6, replace=False).tolist()):
        item = BASE[pick]
        what = int(rng.integers(6))
        ext, at, event = item.external_id, hours + j / 10, f"{item.external_id}-{poll}-{j}"
        if what == 0:  # metadata only: the same vector
            out.append(
                upsert(ext, at, event, title=f"{item.title} v{poll}", categories=["Drama"],
                       attributes={"members": int(rng.integers(0, 60))}, vector_seed=1000 + item.item_id - 1)
            )  # fmt: skip
        elif what == 1:  # another vector
            out.append(upsert(ext, at, event, title=item.title, vector_seed=int(rng.integers(1_000_000))))
        elif what == 2:
            out.append(change(ext, HIDE, at, event))
        elif what == 3:
            out.append(change(ext, UNHIDE, at, event))
        elif what == 4:
            out.append(change(ext, DELETE, at, event))
        else:
            out.append(upsert(ext, at, event, title="no vector", vector_seed=None))
    return out


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
async def test_every_derived_snapshot_equals_a_full_build_and_older_ones_stay_as_they_were(kind: str) -> None:
    rng = np.random.default_rng(5)
    store = FakeStore()
    follower = CatalogueFollower(store)
    snapshot = base_snapshot(kind)
    history: list[tuple[Snapshot, dict[str, Any], dict[str, Any]]] = []
    for poll in range(1, 9):
        await store.apply_item_changes(poll_changes(poll, rng))
        snapshot, read = await follower.catch_up(snapshot)
        assert read
        full = rebuilt(snapshot)
        assert metadata(snapshot) == metadata(full), poll
        seen = await answers(snapshot)
        if kind == "flat":  # exact search: the same answers; HNSW's graph differs from a full build's
            assert seen == await answers(full), poll
        history.append((snapshot, copy.deepcopy(metadata(snapshot)), seen))
    # Later polls appended to and patched shared columns: no earlier snapshot saw any of it.
    for old, before, seen in history:
        assert metadata(old) == before
        assert await answers(old) == seen


async def test_a_poll_of_new_items_appends_to_shared_columns_without_copying() -> None:
    store = FakeStore()
    follower = CatalogueFollower(store)
    await store.apply_item_changes([upsert("shop:a", 1, "a", categories=["Drama"], vector_seed=1)])
    first, _ = await follower.catch_up(base_snapshot())
    await store.apply_item_changes([upsert("shop:b", 2, "b", categories=["Drama"], vector_seed=2)])
    second, _ = await follower.catch_up(first)
    for name in ("titles", "external_ids", "genres", "servable", "popularity"):
        old, new = getattr(first, name), getattr(second, name)
        assert np.shares_memory(old, new) and len(new) == len(old) + 1, name
    assert np.shares_memory(first.index.embeddings, second.index.embeddings)
    assert np.shares_memory(first.genre_rows["Drama"], second.genre_rows["Drama"])
    assert list(first.titles) == list(rebuilt(first).titles)


async def test_two_snapshots_derived_from_one_do_not_see_each_other() -> None:
    base = base_snapshot()
    left_store, right_store = FakeStore(), FakeStore()
    await left_store.apply_item_changes([upsert("shop:left", 1, "l", title="Left", vector_seed=1)])
    await right_store.apply_item_changes(
        [upsert("shop:right", 1, "r", title="Right", vector_seed=2), change("mal:1", HIDE, 1, "h")]
    )
    left, _ = await CatalogueFollower(left_store).catch_up(base)
    right, _ = await CatalogueFollower(right_store).catch_up(base)
    assert metadata(left) == metadata(rebuilt(left)) and metadata(right) == metadata(rebuilt(right))
    assert "Left" in list(left.titles) and "Left" not in list(right.titles)
    assert "Right" in list(right.titles) and "Right" not in list(left.titles)
    assert metadata(base) == metadata(base_snapshot())


def test_index_derivations_search_like_a_fresh_build_and_leave_the_old_index_alone() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((300, 8)).astype(np.float32)
    ids = np.arange(1, 301)
    base = ItemIndex.build(ids[:200], vectors[:200])
    queries = rng.standard_normal((25, 8)).astype(np.float32)
    before = base.search(queries, 20)
    first = base.with_changes(ids[200:250], vectors[200:250], [3, 4, 5], "v1")
    second = first.with_changes(ids[250:], vectors[250:], [7, 220, 4], "v2")
    third = second.with_changes([3], rng.standard_normal((1, 8)), [], "v3")  # a retired id comes back
    for index in (first, second, third):
        live = index.item_ids >= 0
        fresh = ItemIndex.build(index.item_ids[live], index.embeddings[live])
        scores, found = index.search(queries, len(index))
        fresh_scores, fresh_found = fresh.search(queries, len(fresh))
        for row in range(len(queries)):
            hit = found[row] >= 0
            assert found[row][hit].tolist() == fresh_found[row].tolist()
            np.testing.assert_allclose(scores[row][hit], fresh_scores[row], rtol=1e-5, atol=1e-5)
        assert index.rows(fresh.item_ids).tolist() == np.flatnonzero(live).tolist()
    assert third.delta_rows == 101 and third.retired_rows == 5 and 4 not in third and 3 in third
    # The older indexes are as they were.
    assert len(base) == 200 and base.retired_rows == 0 and base.delta_rows == 0
    np.testing.assert_array_equal(base.search(queries, 20)[1], before[1])
    assert len(first) == 250 and first.retired_rows == 3 and int(first.rows([220])[0]) == 219


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_a_merged_base_moves_onto_later_indexes_of_its_line_only(kind: str) -> None:
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((2600, 8)).astype(np.float32)
    ids = np.arange(1, 2601)
    base = ItemIndex.build(ids[:2000], vectors[:2000], index_kind(kind))
    grown = base.with_changes(ids[2000:2300], vectors[2000:2300], [1, 2], "v1")
    merged = grown.merged()
    assert merged.delta_rows == 0 and merged.item_ids is grown.item_ids
    later = grown.with_changes(ids[2300:], vectors[2300:], [2001], "v2")
    moved = later.rebased(merged)
    assert moved.delta_rows == 300 and moved.version == later.version
    np.testing.assert_array_equal(moved.item_ids, later.item_ids)
    # Each new item is its own nearest neighbour, through the merged base or the delta.
    for index in (merged, moved):
        _, found = index.search(index.embeddings[2100:2600:50], 1)
        expected = index.item_ids[2100:2600:50]
        assert (found[:, 0] == expected)[expected >= 0].all()
    assert later.rebased(base) is later  # an older base: nothing to gain
    branch = grown.with_changes(ids[2300:2310], vectors[2300:2310], [], "branch")  # not the newest: copies
    assert not np.shares_memory(branch.embeddings, later.embeddings)
    other = branch.merged()
    assert later.rebased(other) is later  # another line's rows: refused


async def test_the_follower_merges_the_delta_in_the_background(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_catalogue, "DELTA_MERGE_ROWS", 4)
    store = FakeStore()
    follower = CatalogueFollower(store)
    await store.apply_item_changes([upsert(f"shop:{n}", 1, f"a{n}", vector_seed=n) for n in range(5)])
    snapshot, _ = await follower.catch_up(base_snapshot())
    assert snapshot.index.delta_rows == 5
    for _ in range(200):
        if not follower.merging:
            break
        await asyncio.sleep(0.01)
    await store.apply_item_changes([upsert("shop:late", 2, "late", vector_seed=99)])
    snapshot, _ = await follower.catch_up(snapshot)
    assert snapshot.index.delta_rows == 1 and len(snapshot.index) == len(BASE) + 6
    assert metadata(snapshot) == metadata(rebuilt(snapshot))
    assert await answers(snapshot) == await answers(rebuilt(snapshot))


def test_past_the_delta_bound_a_poll_merges_before_its_swap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_catalogue, "DELTA_MAX_ROWS", 3)
    store = FakeStore()
    store.apply_items([upsert(f"shop:{n}", 1, f"a{n}", vector_seed=n) for n in range(5)])
    rows = list(store.items.values())
    snapshot = apply_catalogue_rows(base_snapshot(), rows, cursor=5)
    assert snapshot.index.delta_rows == 0 and len(snapshot.index) == len(BASE) + 5
    assert adopt_merged(snapshot, snapshot.index) is snapshot


def test_a_column_appends_in_place_only_at_its_tip() -> None:
    first = Column.of(np.array([1, 2, 3]), spare=True)
    second = first.derive(np.array([4]))
    assert np.shares_memory(first.values, second.values) and first.values.tolist() == [1, 2, 3]
    branch = first.derive(np.array([5]))  # second already wrote row 3: a copy, another line
    assert branch.values.tolist() == [1, 2, 3, 5] and second.values.tolist() == [1, 2, 3, 4]
    assert branch.lineage is not second.lineage and second.lineage is first.lineage
    patched = second.derive(np.array([6]), np.array([0]), np.array([9]))
    assert patched.values.tolist() == [9, 2, 3, 4, 6] and second.values.tolist() == [1, 2, 3, 4]
    assert not second.values.flags.writeable
    full = Column.of(np.array([1]))  # no spare room: the tip moves to a larger buffer, same line
    grown = full.derive(np.array([2]))
    assert grown.lineage is full.lineage and full.derive(np.array([3])).lineage is not full.lineage
