"""Side information the llmrec model receives by constructor injection, aligned with a data set's indices.

- ``item_vectors``: one unit-length semantic embedding per item of the data set (row ``i`` = item index
  ``i``): the served item index's embeddings (``jobs.train_ranker``) or the harness's item text features
  (``research.item_text``).
- ``ratings`` / ``timestamps``: dense user x item matrices over the *whole* data set (NaN = unknown). The
  model only ever reads the cells its training matrix marks, so held-out ratings never reach it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ranker.interactions import IntArray, InteractionData
from ranker.model.base import FitContext

FloatMatrix = npt.NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class SideInformation:
    item_vectors: FloatMatrix  # [n_items, dim], unit rows
    ratings: FloatMatrix  # [n_users, n_items] on the 1..10 scale, NaN = none
    timestamps: FloatMatrix  # [n_users, n_items] Unix seconds, NaN = none
    source: str  # where the item vectors came from, recorded in reports and artifacts

    @property
    def dim(self) -> int:
        return int(self.item_vectors.shape[1])


def _unit_rows(matrix: npt.ArrayLike) -> FloatMatrix:
    m = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    out: FloatMatrix = (m / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


def interaction_matrices(
    data: InteractionData, rows: IntArray | None = None, shape: tuple[int, ...] | None = None
) -> tuple[FloatMatrix, FloatMatrix]:
    """Dense ratings (rescaled to 1..10) and timestamps of the given interaction rows (all by default), NaN
    where a pair has none; ``shape`` defaults to users x items."""
    sel = slice(None) if rows is None else rows
    size = shape or (data.n_users, data.n_items)
    ratings = np.full(size, np.nan, dtype=np.float32)
    times = np.full(size, np.nan, dtype=np.float32)
    users, items = data.users[sel], data.items[sel]
    ratings[users, items] = data.ratings[sel] * data.rating_scale
    # float32 holds Unix seconds to ~2 minutes: plenty for a decay measured in 30-day units.
    times[users, items] = data.timestamps[sel]
    return ratings, times


def side_information(data: InteractionData, item_vectors: FloatMatrix, source: str) -> SideInformation:
    if item_vectors.shape[0] != data.n_items:
        raise ValueError(f"{item_vectors.shape[0]} item vectors for {data.n_items} items")
    ratings, times = interaction_matrices(data)
    return SideInformation(_unit_rows(item_vectors), ratings, times, source)


def side_from_context(context: FitContext, shape: tuple[int, ...]) -> SideInformation:
    """Side information from the harness: its item text features and the *training* rows' ratings and
    timestamps (held-out rows are never read)."""
    data, rows, features = context.data, context.train_rows, context.item_features
    if data is None or rows is None or features is None:
        raise ValueError("llmrec needs the data set, its training rows and item text features")
    if features.shape[0] != shape[1] or data.n_users != shape[0]:
        raise ValueError(f"side information does not match a {shape} training matrix")
    ratings, times = interaction_matrices(data, rows, shape)
    return SideInformation(_unit_rows(features), ratings, times, "harness item text features")
