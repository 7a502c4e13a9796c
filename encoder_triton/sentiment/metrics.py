"""Plain-numpy metrics: macro-F1, accuracy, Spearman with average ranks for ties, 3-class thresholds."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
N_CLASSES = 3


def to_classes(scores: npt.ArrayLike, low: float, high: float) -> npt.NDArray[np.int64]:
    """score < low -> 0 (not recommended), low <= score < high -> 1 (mixed), score >= high -> 2."""
    s = np.asarray(scores, dtype=np.float64)
    return np.where(s < low, 0, np.where(s < high, 1, 2)).astype(np.int64)


def macro_f1(y_true: npt.ArrayLike, y_pred: npt.ArrayLike, n_classes: int = N_CLASSES) -> float:
    """Unweighted mean of per-class F1; a class with no true and no predicted member scores 0."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    f1s = []
    for c in range(n_classes):
        tp = float(np.sum((t == c) & (p == c)))
        denom = float(np.sum(t == c) + np.sum(p == c))
        f1s.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(f1s))


def accuracy(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def average_ranks(x: npt.ArrayLike) -> Array:
    """Ranks 1..n; tied values share the mean of the ranks they span."""
    a = np.asarray(x, dtype=np.float64)
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    ranks = np.empty(len(a), dtype=np.float64)
    start = 0
    while start < len(a):
        end = start
        while end + 1 < len(a) and sorted_a[end + 1] == sorted_a[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def spearman(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Pearson correlation of average ranks; NaN when either side is constant."""
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = float(np.sqrt(np.sum(rx * rx) * np.sum(ry * ry)))
    return float(np.sum(rx * ry) / denom) if denom else float("nan")


def fit_thresholds(scores: npt.ArrayLike, tags: npt.ArrayLike, grid: int = 101) -> tuple[float, float]:
    """The (low, high) pair on a grid over the scores' quantiles that maximises macro-F1 on these data.

    Quantiles, not a fixed 0..1 grid, so a scorer that lives in a narrow band (VADER's compound saturates
    near 1 on long reviews) gets as fine a search as one spread over [0, 1].
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(tags)
    cuts = np.unique(np.quantile(s, np.linspace(0.0, 1.0, grid)))
    best = (-1.0, float(cuts[0]), float(cuts[-1]))
    for i, low in enumerate(cuts):
        for high in cuts[i:]:
            f1 = macro_f1(t, to_classes(s, low, high))
            if f1 > best[0]:
                best = (f1, float(low), float(high))
    return best[1], best[2]


def evaluate(
    scores: npt.ArrayLike, tags: npt.ArrayLike, ratings: npt.ArrayLike, low: float, high: float
) -> dict[str, float]:
    pred = to_classes(scores, low, high)
    return {
        "accuracy": accuracy(tags, pred),
        "macro_f1": macro_f1(tags, pred),
        "spearman_vs_score": spearman(scores, ratings),
        "spearman_vs_tag": spearman(scores, tags),
    }
