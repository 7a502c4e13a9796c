"""Implicit-feedback interaction data for offline evaluation, built from the real data sets.

Every (user, item) pair a user interacted with is one implicit positive, whatever its rating: a completed or
watched title is evidence of interest, and all three sources are dominated by positive ratings anyway. The
rating and timestamp ride along as side columns (NaN when the source has none) so that a split can order by
time and a later study can weight by rating.

Loaders (the only I/O in ``ranker.evaluation`` besides the report writer):
- ``load_mal_completed``: Matthew1906's Completed lists, read through ``llmrec.datasets.read_watchlists``
  (titles mapped to anime_id by the same ``TitleIndex`` the replay uses). Its event times are synthetic
  hashes, not observations, so timestamps are left NaN here.
- ``load_mal_rating23``: CooperUnion's ``rating_23.csv`` (no header, CRLF, ``user_id,anime_id,rating``;
  -1 = watched, not rated -> rating NaN, still a positive).
- ``load_movielens``: MovieLens latest-small ``ratings.csv`` with Unix timestamps.

Matrices are dense NumPy arrays: the largest set here is about 1,400 users x 10,000 items (55 MB in float32),
which keeps the code free of a sparse-matrix dependency.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

MAL_COMPLETED = "mal-completed"
MAL_RATING23 = "mal-rating23"
MOVIELENS = "movielens-small"

_COOPERUNION_DIR = "mal-cooperunion-anime-recommendations"
_MOVIELENS_DIR = "movielens-latest-small"


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
        return cls(name, user_ids, item_ids, u[keep], it[keep], rating_arr[keep], time_arr[keep])

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


# --- loaders ---


def load_mal_completed(data_dir: Path) -> InteractionData:
    # Imported here so that the metrics, splits and baselines stay importable without the llmrec readers.
    from llmrec.catalogue import build_catalogue
    from llmrec.datasets import ReplaySummary, TitleIndex, read_watchlists
    from llmrec.events.schema import RatingEvent, WatchEvent

    catalogue = build_catalogue(data_dir)
    titles = TitleIndex.from_data(data_dir, catalogue)
    pairs: dict[tuple[str, int], float] = {}
    for event in read_watchlists(data_dir, catalogue, titles, ReplaySummary()):
        key = (event.user_id, event.item_id)
        if isinstance(event, WatchEvent):
            pairs.setdefault(key, math.nan)
        elif isinstance(event, RatingEvent):
            pairs[key] = float(event.rating)
    users = [u for u, _ in pairs]
    items = [i for _, i in pairs]
    return InteractionData.from_records(MAL_COMPLETED, users, items, list(pairs.values()))


def load_mal_rating23(data_dir: Path) -> InteractionData:
    from llmrec.data_source import find_data_file, open_data_file

    path = find_data_file(data_dir / _COOPERUNION_DIR, "rating_23.csv")
    if path is None:
        raise FileNotFoundError(f"rating_23.csv not found under {data_dir / _COOPERUNION_DIR}")
    users: list[str] = []
    items: list[int] = []
    ratings: list[float] = []
    with open_data_file(path) as handle:  # newline="" lets csv take the CRLF line ends
        for row in csv.reader(handle):
            if len(row) != 3:
                continue
            user, item, rating = row
            # "cu:" keeps these numeric ids apart from the "mal:<name>" users of the other MAL set.
            users.append(f"cu:{int(user)}")
            items.append(int(item))
            value = float(rating)
            ratings.append(math.nan if value < 0 else value)  # -1 = watched, not rated
    return InteractionData.from_records(MAL_RATING23, users, items, ratings)


def load_movielens(data_dir: Path) -> InteractionData:
    path = data_dir / _MOVIELENS_DIR / "ratings.csv"
    users: list[str] = []
    items: list[int] = []
    ratings: list[float] = []
    times: list[float] = []
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            users.append(f"ml:{int(row['userId'])}")
            items.append(int(row["movieId"]))
            ratings.append(float(row["rating"]))
            times.append(float(row["timestamp"]))
    return InteractionData.from_records(MOVIELENS, users, items, ratings, times)


LOADERS: dict[str, Callable[[Path], InteractionData]] = {
    MAL_COMPLETED: load_mal_completed,
    MAL_RATING23: load_mal_rating23,
    MOVIELENS: load_movielens,
}


def load_dataset(name: str, data_dir: Path, *, core: int = 5) -> InteractionData:
    """A named data set (``LOADERS``), ``core``-core filtered (``core=0`` or 1 keeps everything)."""
    try:
        loader = LOADERS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(LOADERS)}") from None
    data = loader(data_dir)
    return k_core(data, core) if core > 1 else data
