"""The API's live catalogue: catalogue rows, as the store's change feed gives them, become snapshots."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from grpc_api.live_catalogue import COMPACT_FRACTION, CatalogueFollower
from grpc_api.service import RecommendationService, Snapshot
from llmrec.catalogue import Item
from llmrec.store import ItemChangeKind
from llmrec.store.fake import FakeStore
from llmrec_client.errors import NotFound
from ranker.retrieval import ItemIndex
from tests.catalogue_changes import DIM, change, upsert, vec

BASE = [Item(item_id=i, title=f"anime {i}", genres=("Drama",), members=100 - i) for i in range(1, 9)]


def base_snapshot() -> Snapshot:
    vectors = np.stack([vec(100 + i) for i in range(len(BASE))])
    return Snapshot(ItemIndex.build([i.key for i in BASE], vectors), BASE)


async def follow(store: FakeStore, snapshot: Snapshot, follower: CatalogueFollower | None = None) -> Snapshot:
    follower = follower or CatalogueFollower(store)
    served, _ = await follower.catch_up(snapshot)
    return served


async def similar(snapshot: Snapshot, item_id: str, k: int = 20) -> list[str]:
    service = RecommendationService(FakeStore(), snapshot)
    return [i.item_id for i in (await service.similar_items(item_id, k)).items]


async def test_a_new_item_is_served_and_similar_to_its_neighbour() -> None:
    store = FakeStore()
    # Its vector is anime 3's, nudged: its nearest neighbour must be anime 3.
    await store.apply_item_changes([upsert("shop:kettle", 1, "e1", title="Kettle", vector_seed=102)])
    snapshot = await follow(store, base_snapshot())
    assert await similar(snapshot, "shop:kettle", 1) == ["mal:3"]
    assert "shop:kettle" in await similar(snapshot, "mal:3")
    assert snapshot.index.version.endswith("+c1") and len(snapshot.index) == len(BASE) + 1


async def test_hidden_and_deleted_items_are_never_served_and_unhidden_ones_come_back() -> None:
    store = FakeStore()
    await store.apply_item_changes(
        [upsert("shop:a", 1, "a1", vector_seed=1), upsert("shop:b", 1, "b1", vector_seed=2)]
    )
    follower = CatalogueFollower(store)
    snapshot = await follow(store, base_snapshot(), follower)
    await store.apply_item_changes(
        [
            change("shop:a", ItemChangeKind.HIDE, 2, "a2"),
            change("shop:b", ItemChangeKind.DELETE, 2, "b2"),
            change("mal:2", ItemChangeKind.HIDE, 2, "m2"),
        ]
    )
    snapshot = await follow(store, snapshot, follower)
    for gone in ("shop:a", "shop:b", "mal:2"):
        with pytest.raises(NotFound):
            await similar(snapshot, gone)
    for item in BASE:
        if item.external_id != "mal:2":
            assert not {"shop:a", "shop:b", "mal:2"} & set(await similar(snapshot, item.external_id))
    cold = await RecommendationService(FakeStore(), snapshot).recommend("nobody", k=20)
    assert not {"shop:a", "shop:b", "mal:2"} & {i.item_id for i in cold.items}

    # Unhidden, both come back: the catalogue's item and the index's own (no body in the catalogue).
    await store.apply_item_changes(
        [change("shop:a", ItemChangeKind.UNHIDE, 3, "a3"), change("mal:2", ItemChangeKind.UNHIDE, 3, "m3")]
    )
    snapshot = await follow(store, snapshot, follower)
    assert {"shop:a", "mal:2"} <= set(await similar(snapshot, "mal:1"))
    assert await similar(snapshot, "mal:2")


async def test_an_unchanged_vector_updates_metadata_without_touching_the_index() -> None:
    store = FakeStore()
    third = BASE[2]
    await store.apply_item_changes(
        [upsert(third.external_id, 1, "t1", title="Renamed", categories=["Comedy"], vector_seed=102)]
    )
    before = base_snapshot()
    snapshot = await follow(store, before)
    assert snapshot.index is before.index
    row = int(snapshot.index.rows([third.key])[0])
    assert snapshot.titles[row] == "Renamed" and snapshot.genres[row] == ("Comedy",)


async def test_a_changed_vector_retires_the_old_row() -> None:
    store = FakeStore()
    await store.apply_item_changes([upsert("mal:1", 1, "x1", vector_seed=104)])  # now anime 5's vector
    snapshot = await follow(store, base_snapshot())
    assert snapshot.index.retired_rows == 1
    assert (await similar(snapshot, "mal:1", 1)) == ["mal:5"]
    assert (await similar(snapshot, "mal:5")).count("mal:1") == 1  # found once, at its new row


async def test_retired_rows_beyond_the_limit_are_compacted_away() -> None:
    store = FakeStore()
    # The fewest changed vectors whose retired rows exceed the fraction of the grown index.
    changes = int(COMPACT_FRACTION * len(BASE) / (1 - COMPACT_FRACTION)) + 1
    await store.apply_item_changes(
        [upsert(item.external_id, 1, f"c{n}", vector_seed=500 + n) for n, item in enumerate(BASE[:changes])]
    )
    snapshot = await follow(store, base_snapshot())
    assert snapshot.index.retired_rows == 0 and len(snapshot.index) == len(BASE)
    np.testing.assert_allclose(
        snapshot.index.vector(BASE[0].key), vec(500) / np.linalg.norm(vec(500)), rtol=1e-5
    )


async def test_a_row_without_a_usable_vector_is_not_served() -> None:
    store = FakeStore()
    wide = upsert("shop:wide", 1, "w1")
    await store.apply_item_changes(
        [
            upsert("shop:novector", 1, "n1", vector_seed=None),
            dataclasses.replace(wide, vector=np.ones(DIM + 1, dtype=np.float32)),
        ]
    )
    snapshot = await follow(store, base_snapshot())
    for item_id in ("shop:novector", "shop:wide"):
        with pytest.raises(NotFound):
            await similar(snapshot, item_id)


def test_with_changes_refuses_an_id_that_is_already_live() -> None:
    index = base_snapshot().index
    with pytest.raises(ValueError, match="new or retired"):
        index.with_changes([BASE[0].key], vec(1)[None, :], [], "v")
    changed = index.with_changes([BASE[0].key], vec(1)[None, :], [BASE[0].key], "v")
    assert int(changed.rows([BASE[0].key])[0]) == len(BASE)  # the appended row
    assert len(index) == len(BASE) and index.retired_rows == 0  # the original is untouched


async def test_similar_items_searches_past_hidden_neighbours_to_fill_k() -> None:
    store = FakeStore()
    hidden = [item.external_id for item in BASE[1:4]]
    await store.apply_item_changes(
        [change(item_id, ItemChangeKind.HIDE, 1, f"h{n}") for n, item_id in enumerate(hidden)]
    )
    snapshot = await follow(store, base_snapshot())
    answer = await similar(snapshot, "mal:1", k=len(BASE) - 1 - len(hidden))
    assert len(answer) == len(BASE) - 1 - len(hidden) and not set(hidden) & set(answer)


async def test_a_catalogue_of_its_own_starts_from_an_empty_index() -> None:
    """catalogue_source = "items": nothing is indexed at start; the items topic brings everything."""
    empty = Snapshot(ItemIndex.empty(DIM), [])
    assert (await RecommendationService(FakeStore(), empty).recommend("anyone", k=5)).items == ()
    with pytest.raises(NotFound):
        await similar(empty, "shop:a")
    assert empty.index.search(vec(1), 5)[1].shape == (1, 0)

    store = FakeStore()
    await store.apply_item_changes(
        [upsert(f"shop:{n}", 1, f"e{n}", title=f"thing {n}", vector_seed=n) for n in range(5)]
    )
    follower = CatalogueFollower(store)
    snapshot = await follow(store, empty, follower)
    assert len(await similar(snapshot, "shop:0", k=10)) == 4
    await store.apply_item_changes([change(f"shop:{n}", ItemChangeKind.DELETE, 2, f"d{n}") for n in range(5)])
    snapshot = await follow(store, snapshot, follower)
    assert len(snapshot.index) == 0  # every row retired, then compacted back to an empty index
