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
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from grpc_api.service import CatalogueItem, Snapshot
from llmrec.item_ids import item_key
from llmrec.logs import get_logger
from llmrec.store.interface import CatalogueStore, StoredItem

log = get_logger(__name__)

# Of the index's rows: above this share of retired rows the index is rebuilt without them.
COMPACT_FRACTION = 0.2
# An unchanged vector comes back from the encoder equal to within float noise (batching changes the last
# bits); cosine above this counts as unchanged.
SAME_VECTOR_COSINE = 1.0 - 1e-4
POPULARITY_ATTRIBUTE = "members"  # the MAL importer's popularity; any catalogue may set it
FEED_PAGE = 5000


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


def apply_catalogue_rows(snapshot: Snapshot, rows: Sequence[StoredItem], cursor: int) -> Snapshot:
    """The snapshot that serves ``rows`` (changed catalogue rows, in feed order) on top of ``snapshot``."""
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
    return Snapshot(index, items.values(), snapshot.ranker, snapshot.learned, frozenset(hidden))


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

    async def catch_up(self, snapshot: Snapshot) -> tuple[Snapshot, int]:
        """``snapshot`` with every change since the cursor applied; returns it and the rows read. Raises
        ``StoreUnavailable`` when the database is (the cursor then stays where the last page ended)."""
        read = 0
        while True:
            rows, cursor = await self._store.items_changed_since(self.cursor, self._page)
            if rows:
                snapshot = await asyncio.to_thread(apply_catalogue_rows, snapshot, rows, cursor)
            self.cursor = cursor
            read += len(rows)
            if len(rows) < self._page:
                return snapshot, read
