"""Item embeddings for the preference update, in the same space as the API's FAISS index.

The worker reads only ``item_ids.npy`` and ``embeddings.npy`` of the saved index (``ranker.retrieval``'s
``load_item_vectors``), so it needs no FAISS. An item without a vector is unknown to the recommender:
its events go to the dead-letter topic, because they could move no profile and no recommendation could
ever show the item.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from llmrec.artifacts import load_item_vectors
from llmrec.preference_state import Vector


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
