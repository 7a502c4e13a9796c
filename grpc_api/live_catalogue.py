"""The live catalogue: the API follows PostgreSQL's catalogue and serves each change within a poll.

The worker writes item events to ``catalogue_items`` (the catalogue's source of truth); every API process
follows its change feed (``items_changed_since``, in commit order) on its own, so several processes
converge on the same catalogue without talking to each other, and a restarted one catches up from the
start of the feed before it reports SERVING.

A batch of changed rows becomes a new immutable ``Snapshot`` (``apply_catalogue_rows``), swapped in
whole, so a request sees one catalogue version from start to end:
- a visible item with a vector is served: a new one (or one whose vector changed) is appended to the
  index (``ItemIndex.with_changes``: the old row is retired), an unchanged one only updates its title,
  categories and popularity;
- a hidden item is kept with its row but marked hidden, so no answer names it (``Snapshot.servable``)
  and ``SimilarItems`` of it is NOT_FOUND until it is unhidden; an item the catalogue only hides or
  unhides (no body there, e.g. one of the index built from the data files) keeps the index's content;
- a deleted item, or one without a usable vector, is dropped and its row retired;
- once retired rows make up ``COMPACT_FRACTION`` of the index, it is rebuilt without them (in the same
  background thread, before the swap).

A poll costs its changed rows, not the catalogue's size: appended rows are searched exactly next to the
FAISS index ("the delta", ``ItemIndex.delta_rows``) and the snapshot's metadata is derived from the last
one (``Snapshot.with_rows``). Once the delta reaches ``DELTA_MERGE_ROWS``, the follower adds it to a copy of
the FAISS index in a background thread (``ItemIndex.merged``) and the next poll adopts that copy
(``ItemIndex.rebased``: same rows, so nothing else changes); past ``DELTA_MAX_ROWS`` (a backlog faster than
merges) a poll merges before its swap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from grpc_api.catalogue_rows import CatalogueItem
from grpc_api.service import Snapshot
from llmrec.item_ids import item_key
from llmrec.logs import get_logger
from llmrec.store.interface import CatalogueStore, StoredItem
from ranker.retrieval import ItemIndex

log = get_logger(__name__)

# Of the index's rows: above this share of retired rows the index is rebuilt without them.
COMPACT_FRACTION = 0.2
# An unchanged vector comes back from the encoder equal to within float noise (batching changes the last
# bits); cosine above this counts as unchanged.
SAME_VECTOR_COSINE = 1.0 - 1e-4
POPULARITY_ATTRIBUTE = "members"  # the MAL importer's popularity; any catalogue may set it
FEED_PAGE = 5000
# Delta rows: merged into the FAISS index in the background from this many (a query scans them all: 4k x 384
# is about 0.3 ms on one core), and before the swap beyond the larger bound.
DELTA_MERGE_ROWS = 4096
DELTA_MAX_ROWS = 65_536


@dataclass(frozen=True)
class LiveItem:
    """A catalogue row as the API serves it (``CatalogueItem``)."""

    key: int
    external_id: str
    title: str
    genres: tuple[str, ...]
    members: int


def live_item(row: StoredItem) -> LiveItem:
    members = row.attributes.get(POPULARITY_ATTRIBUTE)
    count = members if isinstance(members, int) and not isinstance(members, bool) and members > 0 else 0
    return LiveItem(item_key(row.item_id), row.item_id, row.title or "", tuple(row.categories), count)


def apply_catalogue_rows(
    snapshot: Snapshot, rows: Sequence[StoredItem], cursor: int, merged: ItemIndex | None = None
) -> Snapshot:
    """The snapshot that serves ``rows`` (changed catalogue rows, in feed order) on top of ``snapshot``;
    ``merged`` (an ``ItemIndex.merged`` of this snapshot's index or an older one) is adopted first."""
    if merged is not None:
        snapshot = adopt_merged(snapshot, merged)
    items: dict[int, CatalogueItem] = dict(snapshot.items)
    hidden = set(snapshot.hidden)
    index = snapshot.index
    latest = {item_key(row.item_id): row for row in rows}  # a later row of an item wins
    appended_keys: list[int] = []
    appended: list[npt.NDArray[np.float32]] = []
    retired: list[int] = []
    for key, row in latest.items():
        current = int(index.rows([key])[0])
        if row.hidden:
            hidden.add(key)
        else:
            hidden.discard(key)
        if row.deleted:
            items.pop(key, None)
            if current >= 0:
                retired.append(key)
            continue
        if row.title is None:
            # Only hidden or unhidden: the catalogue holds no body, the index's item stays as it is.
            continue
        vector = _unit(row, index.dim)
        if vector is None:
            items.pop(key, None)  # a body without a usable vector cannot be searched
            if current >= 0:
                retired.append(key)
            continue
        if current < 0 or float(index.embeddings[current] @ vector) < SAME_VECTOR_COSINE:
            if current >= 0:
                retired.append(key)
            appended_keys.append(key)
            appended.append(vector)
        items[key] = live_item(row)
    if appended_keys or retired:
        vectors = np.stack(appended) if appended else np.zeros((0, index.dim), dtype=np.float32)
        base_version = snapshot.index.version.split("+", 1)[0]
        index = index.with_changes(appended_keys, vectors, retired, f"{base_version}+c{cursor}")
        if index.retired_rows > COMPACT_FRACTION * len(index):
            log.info("compacting the item index", rows=len(index), retired=index.retired_rows)
            index = index.compacted()
        elif index.delta_rows > DELTA_MAX_ROWS:
            log.info("merging new rows into the item index", rows=len(index), delta=index.delta_rows)
            index = index.merged()
    return snapshot.with_rows(index, items, frozenset(hidden), latest.keys())


def adopt_merged(snapshot: Snapshot, merged: ItemIndex) -> Snapshot:
    """``snapshot`` searched through ``merged``'s FAISS index when it holds its rows (else as it is)."""
    index = snapshot.index.rebased(merged)
    if index is snapshot.index:
        return snapshot
    return snapshot.with_rows(index, snapshot.items, snapshot.hidden, ())


def _unit(row: StoredItem, dim: int) -> npt.NDArray[np.float32] | None:
    if row.vector is None or row.vector.shape != (dim,):
        if row.vector is not None:
            log.warning("catalogue vector of another dimension not served", item_id=row.item_id, dim=dim)
        return None
    norm = float(np.linalg.norm(row.vector))
    return (row.vector / norm).astype(np.float32) if norm > 0.0 else None


class CatalogueFollower:
    """Reads the change feed from a cursor and turns each page into a snapshot."""

    def __init__(self, store: CatalogueStore, page: int = FEED_PAGE) -> None:
        self._store = store
        self._page = page
        self.cursor = 0
        # The background merge of the served index's delta rows (at most one at a time).
        self._merging: asyncio.Task[ItemIndex] | None = None

    async def catch_up(self, snapshot: Snapshot) -> tuple[Snapshot, int]:
        """``snapshot`` with every change since the cursor applied; returns it and the rows read. Raises
        ``StoreUnavailable`` when the database is (the cursor then stays where the last page ended)."""
        read = 0
        while True:
            rows, cursor = await self._store.items_changed_since(self.cursor, self._page)
            if rows:
                snapshot = await asyncio.to_thread(
                    apply_catalogue_rows, snapshot, rows, cursor, self._merge_result()
                )
                self._start_merge(snapshot.index)
            self.cursor = cursor
            read += len(rows)
            if len(rows) < self._page:
                return snapshot, read

    @property
    def merging(self) -> bool:
        """Whether a background merge is still running."""
        return self._merging is not None and not self._merging.done()

    def _merge_result(self) -> ItemIndex | None:
        """The finished background merge, once (None while it runs, or if it failed)."""
        task = self._merging
        if task is None or not task.done():
            return None
        self._merging = None
        if task.cancelled():
            return None
        if (error := task.exception()) is not None:
            log.warning("merging the item index failed; retrying", error=repr(error))
            return None
        return task.result()

    def _start_merge(self, index: ItemIndex) -> None:
        if self._merging is None and index.delta_rows >= DELTA_MERGE_ROWS:
            self._merging = asyncio.create_task(asyncio.to_thread(index.merged), name="llmrec-index-merge")
