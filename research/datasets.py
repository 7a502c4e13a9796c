"""Implicit-feedback interaction data for offline evaluation, built from the real data sets.

Every (user, item) pair a user interacted with is one implicit positive, whatever its rating: a completed or
watched title is evidence of interest, and all three sources are dominated by positive ratings anyway. The
rating and timestamp ride along as side columns (NaN when the source has none) so that a split can order by
time and a later study can weight by rating.

Loaders (the only I/O in ``research`` besides the report writer):
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
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

from llmrec.catalogue import build_catalogue
from llmrec.data_source import find_data_file, open_data_file
from llmrec.datasets import ReplaySummary, TitleIndex, read_watchlists
from llmrec.datasets.movielens import RATING_SCALE as MOVIELENS_RATING_SCALE
from llmrec.events.schema import RatingEvent, WatchEvent
from llmrec.item_ids import MAL_NAMESPACE, MOVIELENS_NAMESPACE, item_key, namespaced_id, native_id
from ranker.interactions import InteractionData, k_core

MAL_COMPLETED = "mal-completed"
MAL_RATING23 = "mal-rating23"
MOVIELENS = "movielens-small"

_COOPERUNION_DIR = "mal-cooperunion-anime-recommendations"
_MOVIELENS_DIR = "movielens-latest-small"


def load_mal_completed(data_dir: Path) -> InteractionData:
    catalogue = build_catalogue(data_dir)
    titles = TitleIndex.from_data(data_dir, catalogue)
    pairs: dict[tuple[str, int], float] = {}
    for event in read_watchlists(data_dir, catalogue, titles, ReplaySummary()):
        key = (event.user_id, int(native_id(MAL_NAMESPACE, event.item_id)))
        if isinstance(event, WatchEvent):
            pairs.setdefault(key, math.nan)
        elif isinstance(event, RatingEvent):
            pairs[key] = float(event.rating)
    users = [u for u, _ in pairs]
    items = [i for _, i in pairs]
    return InteractionData.from_records(MAL_COMPLETED, users, items, list(pairs.values()))


def load_mal_rating23(data_dir: Path) -> InteractionData:
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
    # MovieLens rates 0.5..5 stars; the preference math expects MAL's 1..10 scale.
    return InteractionData.from_records(
        MOVIELENS, users, items, ratings, times, rating_scale=MOVIELENS_RATING_SCALE
    )


LOADERS: dict[str, Callable[[Path], InteractionData]] = {
    MAL_COMPLETED: load_mal_completed,
    MAL_RATING23: load_mal_rating23,
    MOVIELENS: load_movielens,
}


# The catalogue namespace of each data set's item ids (``llmrec.item_ids``): ``mal:5114`` is the item the
# stream and the API know as MAL anime 5114.
ITEM_NAMESPACES: dict[str, str] = {
    MAL_COMPLETED: MAL_NAMESPACE,
    MAL_RATING23: MAL_NAMESPACE,
    MOVIELENS: MOVIELENS_NAMESPACE,
}


def with_serving_keys(name: str, data: InteractionData) -> InteractionData:
    """``data`` with each item id replaced by its serving key: the ids of the item index and the ledger."""
    namespace = ITEM_NAMESPACES[name]
    keys = tuple(item_key(namespaced_id(namespace, i)) for i in data.item_ids)
    return dataclasses.replace(data, item_ids=keys)


def load_dataset(name: str, data_dir: Path, *, core: int = 5) -> InteractionData:
    """A named data set (``LOADERS``), ``core``-core filtered (``core=0`` or 1 keeps everything)."""
    try:
        loader = LOADERS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(LOADERS)}") from None
    data = loader(data_dir)
    return k_core(data, core) if core > 1 else data
