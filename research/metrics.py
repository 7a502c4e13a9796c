"""Top-K ranking metrics for one user's ranked list against a held-out relevant set, plus list-set metrics
(diversity, coverage, long tail). Pure functions, no I/O.

Conventions (the paper names its metrics but not their exact definitions, so they are fixed here):
- ``ranked`` is a sequence of item indices, best first, with the user's training items already removed.
  Only its first ``k`` entries count for the ``@k`` metrics; a list shorter than ``k`` is treated as padded
  with misses (precision still divides by ``k``).
- Relevance is binary: an item is relevant when it is in the user's held-out set.
- ``recall@k`` divides by ``|relevant|`` (the usual definition, so it cannot reach 1 when ``|relevant| > k``);
  ``ndcg@k`` and ``map@k`` normalise by the best achievable list, ``min(k, |relevant|)`` hits at the top.
- ``mrr`` is the reciprocal rank of the *first* relevant item. With ``k=None`` it searches the whole ranked
  list (the evaluation passes the full ranking over all items, so a user never scores 0 just because the hit
  sits at position 21); with ``k`` it is cut there (0 beyond).
- An empty relevant set is a caller error: those users are skipped by the evaluator, never averaged in as 0.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Sequence

import numpy as np
import numpy.typing as npt

Ranked = Sequence[int] | npt.NDArray[np.integer]


def _check(relevant: Collection[int], k: int | None) -> None:
    if k is not None and k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if len(relevant) == 0:
        raise ValueError("relevant set is empty: skip this user instead of scoring it")


def _hits(ranked: Ranked, relevant: Collection[int], k: int) -> list[bool]:
    return [int(item) in relevant for item in ranked[:k]]


def precision_at_k(ranked: Ranked, relevant: Collection[int], k: int) -> float:
    _check(relevant, k)
    return sum(_hits(ranked, relevant, k)) / k


def recall_at_k(ranked: Ranked, relevant: Collection[int], k: int) -> float:
    _check(relevant, k)
    return sum(_hits(ranked, relevant, k)) / len(relevant)


def hit_at_k(ranked: Ranked, relevant: Collection[int], k: int) -> float:
    _check(relevant, k)
    return 1.0 if any(_hits(ranked, relevant, k)) else 0.0


def _dcg(hits: Iterable[bool]) -> float:
    # Position i (0-based) is discounted by log2(i + 2): rank 1 -> 1, rank 2 -> 1/log2(3), ...
    return sum(1.0 / math.log2(i + 2) for i, hit in enumerate(hits) if hit)


def ndcg_at_k(ranked: Ranked, relevant: Collection[int], k: int) -> float:
    _check(relevant, k)
    ideal = _dcg([True] * min(k, len(relevant)))
    return _dcg(_hits(ranked, relevant, k)) / ideal


def average_precision_at_k(ranked: Ranked, relevant: Collection[int], k: int) -> float:
    """AP@k = (1 / min(k, |relevant|)) * sum over hit positions i <= k of precision@i."""
    _check(relevant, k)
    total, found = 0.0, 0
    for i, hit in enumerate(_hits(ranked, relevant, k), start=1):
        if hit:
            found += 1
            total += found / i
    return total / min(k, len(relevant))


def reciprocal_rank(ranked: Ranked, relevant: Collection[int], k: int | None = None) -> float:
    """1 / rank of the first relevant item; 0 when none is found (within ``k`` when given)."""
    _check(relevant, k)
    if isinstance(ranked, np.ndarray) and k is None:
        # The evaluator passes full rankings (thousands of items): find the first hit vectorised.
        positions = np.flatnonzero(np.isin(ranked, np.fromiter(relevant, dtype=np.int64)))
        return 1.0 / (int(positions[0]) + 1) if positions.size else 0.0
    limit = len(ranked) if k is None else k
    for i, item in enumerate(ranked[:limit], start=1):
        if int(item) in relevant:
            return 1.0 / i
    return 0.0


def intra_list_distance(items: Ranked, embeddings: npt.NDArray[np.floating]) -> float:
    """Mean pairwise cosine distance (1 - cosine similarity) between the items' embedding rows.

    A list of fewer than two items has no pairs and scores 0. A zero vector counts as orthogonal to all
    (distance 1) rather than raising, since an item with no signal is not similar to anything."""
    idx = np.asarray(items, dtype=np.int64)
    n = idx.size
    if n < 2:
        return 0.0
    vectors = np.asarray(embeddings[idx], dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    sims = unit @ unit.T
    # Sum over the strict upper triangle = (sum of all - trace) / 2; the diagonal is 1 (or 0 for zero rows).
    pair_sim = (sims.sum() - np.trace(sims)) / 2.0
    pairs = n * (n - 1) / 2.0
    return float(1.0 - pair_sim / pairs)


def catalogue_coverage(lists: Iterable[Ranked], n_items: int) -> float:
    """Share of the catalogue's ``n_items`` items that appear in at least one recommendation list."""
    if n_items <= 0:
        raise ValueError("n_items must be positive")
    seen: set[int] = set()
    for items in lists:
        seen.update(int(i) for i in items)
    return len(seen) / n_items


def head_items(
    interaction_counts: npt.NDArray[np.integer] | Sequence[int], head_share: float = 0.8
) -> set[int]:
    """The most popular items that together make up ``head_share`` of all interactions (the "short head").

    Items are taken by count, descending (ties by index), until their cumulative count reaches the share; the
    item that crosses the threshold is in the head."""
    counts = np.asarray(interaction_counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return set()
    order = np.argsort(-counts, kind="stable")
    cumulative = np.cumsum(counts[order])
    n_head = int(np.searchsorted(cumulative, head_share * total - 1e-9 * total)) + 1
    return {int(i) for i in order[:n_head]}


def long_tail_share(lists: Iterable[Ranked], head: Collection[int]) -> float:
    """Share of all recommended slots (counted with repetition across users) filled by items outside ``head``
    (see ``head_items``). 0 when nothing was recommended."""
    counts: Counter[bool] = Counter()
    for items in lists:
        for item in items:
            counts[int(item) in head] += 1
    total = counts[True] + counts[False]
    return counts[False] / total if total else 0.0
