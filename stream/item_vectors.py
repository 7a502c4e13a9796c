"""Item embeddings for the preference update, in the same space as the API's FAISS index.

The worker reads only ``item_ids.npy`` and ``embeddings.npy`` of the saved index (``ranker.retrieval``'s
``load_item_vectors``), so it needs no FAISS. An item without a vector is unknown to the recommender:
its events go to the dead-letter topic, because they could move no profile and no recommendation could
ever show the item.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from llmrec.artifacts import load_item_vectors
from llmrec.item_ids import item_key
from llmrec.logs import get_logger
from llmrec.preference_state import Vector
from llmrec.store.interface import CatalogueStore, StoredItem

log = get_logger(__name__)


class ItemVectors(Protocol):
    @property
    def dim(self) -> int: ...

    def get(self, item_id: int) -> Vector | None:
        """The item's unit embedding, or None for an item that is not indexed."""
        ...


class ArrayItemVectors:
    """Ids and rows held as two arrays (a 12k x 384 catalogue is 18 MB), with a dict from id to row."""

    def __init__(self, item_ids: npt.ArrayLike, embeddings: npt.ArrayLike) -> None:
        ids = np.asarray(item_ids, dtype=np.int64).reshape(-1)
        vectors = np.asarray(embeddings, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(ids):
            raise ValueError(f"{len(ids)} item ids but embeddings of shape {vectors.shape}")
        order = np.argsort(ids, kind="stable")
        self._ids = ids[order]
        self._vectors = vectors[order]
        self._vectors.setflags(write=False)
        # A dict lookup per event instead of a numpy binary search: the worker looks every event's item up
        # twice (validation and the profile update), and np.searchsorted's call overhead dominated.
        self._rows = {int(item_id): row for row, item_id in enumerate(self._ids.tolist())}

    @classmethod
    def load(cls, index_dir: Path) -> ArrayItemVectors:
        ids, embeddings = load_item_vectors(index_dir)
        return cls(ids, embeddings)

    @property
    def dim(self) -> int:
        return int(self._vectors.shape[1])

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, item_id: int) -> Vector | None:
        pos = self._rows.get(item_id)
        if pos is None:
            return None
        row: Vector = self._vectors[pos]
        return row


class LiveItemVectors:
    """The published index's vectors, overlaid with the catalogue's (PostgreSQL, fed by the items topic).

    An item upserted on the items topic is known as soon as the worker stored it (``apply``), or, for an
    item another worker stored, once ``refresh`` has followed the catalogue's change feed past it. A
    deleted item is unknown from then on, even when the index still holds it; a hidden one stays known
    (its interactions still happened and still move profiles; hiding only keeps it out of answers).
    """

    def __init__(self, base: ArrayItemVectors, store: CatalogueStore | None = None, page: int = 1000) -> None:
        self._base = base
        self._store = store
        self._page = page
        self._overlay: dict[int, Vector] = {}
        self._gone: set[int] = set()
        self._cursor = 0
        self._refreshing = asyncio.Lock()

    @property
    def dim(self) -> int:
        return self._base.dim

    @property
    def cursor(self) -> int:
        """The highest catalogue ``change_seq`` applied."""
        return self._cursor

    @property
    def catalogue_items(self) -> int:
        """Items with a vector from the catalogue (new, or re-embedded since the index was built)."""
        return len(self._overlay)

    def get(self, item_id: int) -> Vector | None:
        vector = self._overlay.get(item_id)
        if vector is not None:
            return vector
        if item_id in self._gone:
            return None
        return self._base.get(item_id)

    def apply(self, items: Iterable[StoredItem]) -> None:
        """Take catalogue rows as stored (from this worker's writes or from the change feed)."""
        for item in items:
            key = item_key(item.item_id)
            self._cursor = max(self._cursor, item.change_seq)
            if item.deleted:
                self._overlay.pop(key, None)
                self._gone.add(key)
            elif item.live and item.vector is not None:
                if item.vector.shape != (self.dim,):
                    log.warning(
                        "catalogue vector of another dimension ignored",
                        item_id=item.item_id,
                        dim=int(item.vector.shape[0]),
                        index_dim=self.dim,
                    )
                    continue
                norm = float(np.linalg.norm(item.vector))
                if norm == 0.0:
                    continue
                unit: Vector = (item.vector / norm).astype(np.float32)
                unit.setflags(write=False)
                self._overlay[key] = unit
                self._gone.discard(key)

    async def refresh(self) -> int:
        """Follow the catalogue's change feed to its end; returns the rows read. A no-op without a store."""
        if self._store is None:
            return 0
        read = 0
        async with self._refreshing:
            while True:
                rows, cursor = await self._store.items_changed_since(self._cursor, self._page)
                self.apply(rows)
                self._cursor = max(self._cursor, cursor)
                read += len(rows)
                if len(rows) < self._page:
                    return read
