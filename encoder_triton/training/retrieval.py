"""The item-level retrieval measure: can a held-out review find its own anime among all reviewed anime?

Each query is a review of a held-out title (no stage trained on any text of that title); the candidates
are the item texts of every anime with a review in the corpus (``Item.embedding_text``: title, type,
genres, themes, synopsis, what the platform's FAISS index embeds), ranked by cosine similarity.

Why this measure: the recommender places users and items in one embedding space and retrieves items near
what a user wrote and watched, so the encoder must put a text about a show near that show and away from
the other shows. A review rarely repeats the synopsis; it names characters, events, tone and genre, so
finding the right item among ~1,300 (train and held-out titles together) needs exactly the item-telling
semantics that SimCSE training targets. Recall@10 is the headline (a top-10 recommendation list); MRR
and recall@1 are reported too. Chance recall@10 is 10 / candidates.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tqdm import tqdm

from encoder_triton.encoder import Encoder, validate_text
from encoder_triton.training.corpus import Corpus

MEASURE = "recall@10: a held-out review retrieves its own anime among the candidate items (cosine)"


def ranks_of_truth(similarity: np.ndarray[Any, Any], truth: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """1-based rank of column ``truth[i]`` in row i (ties count against the truth)."""
    own = similarity[np.arange(len(truth)), truth]
    return np.asarray((similarity >= own[:, None]).sum(axis=1), dtype=np.int64)


def retrieval_metrics(ranks: np.ndarray[Any, Any], candidates: int) -> dict[str, float]:
    return {
        "recall@1": float(np.mean(ranks <= 1)),
        "recall@10": float(np.mean(ranks <= 10)),
        "mrr": float(np.mean(1.0 / ranks)),
        "median_rank": float(np.median(ranks)),
        "queries": len(ranks),
        "candidates": int(candidates),
        "chance_recall@10": min(1.0, 10.0 / max(candidates, 1)),
    }


def embed_with_progress(
    encoder: Encoder, texts: list[str], desc: str, progress: bool, chunk: int = 128
) -> Any:
    parts = []
    with tqdm(total=len(texts), desc=desc, unit="text", disable=not progress) as bar:
        for start in range(0, len(texts), chunk):
            parts.append(encoder.embed(texts[start : start + chunk]))
            bar.update(len(parts[-1]))
    return np.concatenate(parts) if parts else np.zeros((0, encoder.dim), dtype=np.float32)


def evaluate_retrieval(
    encoder: Encoder, corpus: Corpus, progress: bool = True, label: str = ""
) -> dict[str, float]:
    item_ids = list(corpus.items)
    column = {item_id: i for i, item_id in enumerate(item_ids)}
    texts = [validate_text(corpus.item_text(i)) for i in item_ids] + [
        validate_text(q.review) for q in corpus.queries
    ]
    vectors = embed_with_progress(encoder, texts, f"retrieval {label}".strip(), progress)
    items, queries = vectors[: len(item_ids)], vectors[len(item_ids) :]
    truth = np.asarray([column[q.item_id] for q in corpus.queries], dtype=np.int64)
    return retrieval_metrics(ranks_of_truth(queries @ items.T, truth), len(item_ids))
