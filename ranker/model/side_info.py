"""Side information the llmrec model receives by constructor injection, aligned with a data set's indices.

- ``item_vectors``: one unit-length semantic embedding per item of the data set (row ``i`` = item index
  ``i``), taken from an embedding source: a saved item index folder (``item_ids.npy`` + ``embeddings.npy``,
  e.g. ``artifacts/index`` = the MAL catalogue encoded by MiniLM, or a fine-tuned variant's folder) or,
  for MovieLens, titles and genres encoded in-process by the offline encoder.
- ``ratings`` / ``timestamps``: dense user x item matrices over the *whole* data set (NaN = unknown). The
  model only ever reads the cells its training matrix marks, so held-out ratings never reach it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ranker.evaluation.baselines import FitContext
from ranker.evaluation.datasets import MOVIELENS, InteractionData

FloatMatrix = npt.NDArray[np.float32]

# MovieLens rates 0.5..5 stars; the preference math expects MAL's 1..10 scale.
RATING_SCALE: dict[str, float] = {MOVIELENS: 2.0}


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


def aligned_vectors(
    item_ids: tuple[int, ...], source_ids: npt.ArrayLike, source_vectors: npt.ArrayLike
) -> FloatMatrix:
    """Rows of ``source_vectors`` re-ordered to ``item_ids``; ``KeyError`` naming the missing ids."""
    ids = np.asarray(source_ids, dtype=np.int64)
    pos = {int(i): r for r, i in enumerate(ids.tolist())}
    missing = [i for i in item_ids if i not in pos]
    if missing:
        raise KeyError(f"{len(missing)} items have no embedding, e.g. {missing[:5]}")
    rows = np.array([pos[i] for i in item_ids], dtype=np.int64)
    return _unit_rows(np.asarray(source_vectors, dtype=np.float32)[rows])


def vectors_from_index_dir(item_ids: tuple[int, ...], folder: Path) -> FloatMatrix:
    ids = np.load(folder / "item_ids.npy", allow_pickle=False)
    vectors = np.load(folder / "embeddings.npy", allow_pickle=False)
    return aligned_vectors(item_ids, ids, vectors)


def movielens_texts(data_dir: Path, item_ids: tuple[int, ...]) -> list[str]:
    """``"Toy Story (1995). Genres: Adventure, Animation"`` per movie id, in ``item_ids`` order."""
    texts: dict[int, str] = {}
    with (data_dir / "movielens-latest-small" / "movies.csv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            genres = row["genres"].replace("|", ", ")
            texts[int(row["movieId"])] = f"{row['title']}. Genres: {genres}"
    return [texts.get(i, f"movie {i}") for i in item_ids]


def vectors_from_encoder(texts: list[str]) -> FloatMatrix:
    """Encode in-process with the offline MiniLM (no Triton needed for an offline evaluation)."""
    from encoder_triton.encoder import Encoder  # heavy: transformers

    return _unit_rows(Encoder.from_pretrained().embed(texts))


def interaction_matrices(data: InteractionData) -> tuple[FloatMatrix, FloatMatrix]:
    """Dense ratings (rescaled to 1..10) and timestamps, NaN where a pair has none."""
    scale = RATING_SCALE.get(data.name, 1.0)
    ratings = np.full((data.n_users, data.n_items), np.nan, dtype=np.float32)
    times = np.full((data.n_users, data.n_items), np.nan, dtype=np.float32)
    ratings[data.users, data.items] = data.ratings * scale
    # float32 holds Unix seconds to ~2 minutes: plenty for a decay measured in 30-day units.
    times[data.users, data.items] = data.timestamps
    return ratings, times


def side_information(data: InteractionData, item_vectors: FloatMatrix, source: str) -> SideInformation:
    if item_vectors.shape[0] != data.n_items:
        raise ValueError(f"{item_vectors.shape[0]} item vectors for {data.n_items} items")
    ratings, times = interaction_matrices(data)
    return SideInformation(_unit_rows(item_vectors), ratings, times, source)


def load_side_information(data: InteractionData, data_dir: Path, embeddings_dir: Path) -> SideInformation:
    """MAL sets: vectors from ``embeddings_dir`` (an index folder); MovieLens: encoded in-process."""
    if data.name == MOVIELENS:
        vectors = vectors_from_encoder(movielens_texts(data_dir, data.item_ids))
        return side_information(data, vectors, "minilm:movielens-title-genres")
    return side_information(data, vectors_from_index_dir(data.item_ids, embeddings_dir), str(embeddings_dir))


def side_from_context(context: FitContext, shape: tuple[int, ...]) -> SideInformation:
    """Side information from the harness: its item text features and the *training* rows' ratings and
    timestamps (held-out rows are never read)."""
    data, rows, features = context.data, context.train_rows, context.item_features
    if data is None or rows is None or features is None:
        raise ValueError("llmrec needs the data set, its training rows and item text features")
    if features.shape[0] != shape[1] or data.n_users != shape[0]:
        raise ValueError(f"side information does not match a {shape} training matrix")
    scale = RATING_SCALE.get(data.name, 1.0)
    ratings = np.full(shape, np.nan, dtype=np.float32)
    times = np.full(shape, np.nan, dtype=np.float32)
    ratings[data.users[rows], data.items[rows]] = data.ratings[rows] * scale
    times[data.users[rows], data.items[rows]] = data.timestamps[rows]
    return SideInformation(_unit_rows(features), ratings, times, "harness item text features")
