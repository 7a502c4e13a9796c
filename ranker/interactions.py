"""Interaction data as the models see it: one row per unique (user, item) pair, dense indices into the raw
ids, with ratings and timestamps as side columns. The data-set loaders that build it live in
``research.datasets``; the served model's training job builds it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class DatasetStats:
    name: str
    users: int
    items: int
    interactions: int
    density: float
    rated_share: float  # interactions that carry an explicit rating
    has_timestamps: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "users": self.users,
            "items": self.items,
            "interactions": self.interactions,
            "density": self.density,
            "rated_share": self.rated_share,
            "has_timestamps": self.has_timestamps,
        }


@dataclass(frozen=True, eq=False)
class InteractionData:
    """One row per unique (user, item) pair. ``users``/``items`` are dense indices into ``user_ids`` /
    ``item_ids`` (the raw ids: strings for users, integers for items, as in the rest of llmrec)."""

    name: str
    user_ids: tuple[str, ...]
    item_ids: tuple[int, ...]
    users: IntArray
    items: IntArray
    ratings: FloatArray  # NaN = no explicit rating
    timestamps: FloatArray  # Unix seconds; NaN = unknown
    # Multiplier that puts ``ratings`` on the 1..10 scale the preference math expects (MovieLens: 2).
    rating_scale: float = 1.0

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return int(self.users.size)

    @property
    def has_timestamps(self) -> bool:
        return self.n_interactions > 0 and not bool(np.isnan(self.timestamps).any())

    def stats(self) -> DatasetStats:
        n = self.n_interactions
        cells = self.n_users * self.n_items
        return DatasetStats(
            name=self.name,
            users=self.n_users,
            items=self.n_items,
            interactions=n,
            density=n / cells if cells else 0.0,
            rated_share=float((~np.isnan(self.ratings)).mean()) if n else 0.0,
            has_timestamps=self.has_timestamps,
        )

    def item_counts(self) -> IntArray:
        return np.bincount(self.items, minlength=self.n_items).astype(np.int64)

    def matrix(self, rows: IntArray | None = None) -> npt.NDArray[np.float32]:
        """Binary user x item matrix of the given interaction rows (all rows by default)."""
        out = np.zeros((self.n_users, self.n_items), dtype=np.float32)
        sel = slice(None) if rows is None else rows
        out[self.users[sel], self.items[sel]] = 1.0
        return out

    @classmethod
    def from_records(
        cls,
        name: str,
        users: Sequence[str],
        items: Sequence[int],
        ratings: Sequence[float] | None = None,
        timestamps: Sequence[float] | None = None,
        *,
        rating_scale: float = 1.0,
    ) -> InteractionData:
        """Index raw records. Repeated (user, item) pairs keep their first occurrence (the sources have
        almost none; a pair is one positive however often it was logged). Ids are indexed in sorted order so
        the same records give the same indices whatever their file order."""
        n = len(users)
        if len(items) != n:
            raise ValueError("users and items differ in length")
        rating_arr = np.full(n, np.nan) if ratings is None else np.asarray(ratings, dtype=np.float64)
        time_arr = np.full(n, np.nan) if timestamps is None else np.asarray(timestamps, dtype=np.float64)
        user_ids = tuple(sorted(set(users)))
        item_ids = tuple(sorted(set(items)))
        user_pos = {u: i for i, u in enumerate(user_ids)}
        item_pos = {it: i for i, it in enumerate(item_ids)}
        u = np.fromiter((user_pos[x] for x in users), dtype=np.int64, count=n)
        it = np.fromiter((item_pos[x] for x in items), dtype=np.int64, count=n)
        # First occurrence of each (user, item) pair, kept in input order.
        _, first = np.unique(u * max(len(item_ids), 1) + it, return_index=True)
        keep = np.sort(first)
        return cls(
            name, user_ids, item_ids, u[keep], it[keep], rating_arr[keep], time_arr[keep], rating_scale
        )

    def subset(self, rows: IntArray) -> InteractionData:
        """The given interaction rows, re-indexed compactly (ids that lose every row are dropped)."""
        users_kept = np.unique(self.users[rows])
        items_kept = np.unique(self.items[rows])
        user_map = np.full(self.n_users, -1, dtype=np.int64)
        user_map[users_kept] = np.arange(users_kept.size)
        item_map = np.full(self.n_items, -1, dtype=np.int64)
        item_map[items_kept] = np.arange(items_kept.size)
        return InteractionData(
            name=self.name,
            user_ids=tuple(self.user_ids[i] for i in users_kept),
            item_ids=tuple(self.item_ids[i] for i in items_kept),
            users=user_map[self.users[rows]],
            items=item_map[self.items[rows]],
            ratings=self.ratings[rows],
            timestamps=self.timestamps[rows],
            rating_scale=self.rating_scale,
        )


def k_core(data: InteractionData, k: int = 5) -> InteractionData:
    """Iteratively drop users and items with fewer than ``k`` interactions until every remaining user and
    item has at least ``k`` (dropping items can push a user below ``k`` and vice versa, hence the loop)."""
    keep = np.ones(data.n_interactions, dtype=bool)
    while True:
        user_counts = np.bincount(data.users[keep], minlength=data.n_users)
        item_counts = np.bincount(data.items[keep], minlength=data.n_items)
        still = keep & (user_counts[data.users] >= k) & (item_counts[data.items] >= k)
        if np.array_equal(still, keep):
            break
        keep = still
    return data.subset(np.flatnonzero(keep))
