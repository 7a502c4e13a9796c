"""Item text features for ``vbpr_text`` (and any model that wants them): one row per dataset item.

- MAL sets: the item index's embeddings (``llmrec.artifacts.load_item_vectors``: the encoder's embedding of
  each title's synopsis and metadata), looked up by the keys of the dataset's items (``mal:<anime_id>``).
  Items missing from the index get a zero row (and say so in the log).
- MovieLens: "title. genres" from ``movies.csv`` encoded in-process by the project's encoder
  (``encoder_triton.encoder.Encoder``, the offline MiniLM by default), cached as ``.npy`` next to the index
  so later runs skip the encoding.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import numpy.typing as npt

from llmrec.artifacts import align_rows, load_item_vectors
from llmrec.logs import get_logger
from ranker.interactions import InteractionData
from research.datasets import MOVIELENS, with_serving_keys

log = get_logger(__name__)
Features = npt.NDArray[np.float32]


def _movielens_texts(data_dir: Path) -> dict[int, str]:
    texts: dict[int, str] = {}
    with (data_dir / "movielens-latest-small" / "movies.csv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            genres = row["genres"].replace("|", ", ")
            texts[int(row["movieId"])] = f"{row['title']}. {genres}"
    return texts


def item_text_features(data: InteractionData, data_dir: Path, index_dir: Path) -> Features:
    if data.name == MOVIELENS:
        cache = index_dir.parent / "eval" / "movielens_text.npz"
        stored = np.load(cache) if cache.is_file() else None
        if stored is not None and np.isin(np.array(data.item_ids), stored["ids"]).all():
            ids, vectors = stored["ids"], stored["vectors"]
        else:
            # Lazy: the encoder pulls transformers, needed only when the cache misses.
            from encoder_triton.encoder import Encoder

            texts = _movielens_texts(data_dir)
            # Only the data set's movies (the 5-core keeps about a third of the catalogue).
            ids = np.array([i for i in data.item_ids if i in texts], dtype=np.int64)
            log.info("encoding movie texts", extra={"movies": int(ids.size)})
            vectors = Encoder.from_pretrained().embed([texts[int(i)] for i in ids]).astype(np.float32)
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, ids=ids, vectors=vectors)
        out = align_rows(data.item_ids, ids, vectors, missing="zero")
    else:
        # The index is keyed by item keys (``mal:<anime_id>`` hashed); the data set by anime ids.
        ids, vectors = load_item_vectors(index_dir)
        out = align_rows(with_serving_keys(data.name, data).item_ids, ids, vectors, missing="zero")
    missing = int((np.abs(out).sum(axis=1) == 0).sum())
    log.info("item text features", extra={"dataset": data.name, "items": data.n_items, "missing": missing})
    return out
