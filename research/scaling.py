"""Inference time against data set size (the paper's Figure 7), for any model factory in the harness.

``inference_time_curve`` draws growing shares of the users (nested: each share contains the smaller ones,
drawn with the seed), keeps their interactions, splits each subset by protocol (a), fits the model on its
training part and times ``score`` for a fixed number of users (the same count at every size, so the figure
is time per user as the data grows, not total time). Scoring excludes sorting and metric computation.
Every point also records the fit time. Timings on a shared machine are noisy: compare models measured in
the same call.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ranker.interactions import InteractionData
from research.evaluate import Features, ModelFactory, fit_on_split
from research.splits import random_split


@dataclass(frozen=True)
class TimingPoint:
    share: float
    users: int
    items: int
    interactions: int
    fit_s: float
    infer_ms_per_user: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "share": self.share,
            "users": self.users,
            "items": self.items,
            "interactions": self.interactions,
            "fit_s": self.fit_s,
            "infer_ms_per_user": self.infer_ms_per_user,
        }


def inference_time_curve(
    factory: ModelFactory,
    data: InteractionData,
    shares: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
    *,
    seed: int = 42,
    scored_users: int = 128,
    repeats: int = 3,
    item_features: Features | None = None,
) -> list[TimingPoint]:
    """One point per share; ``infer_ms_per_user`` is the best of ``repeats`` timings of scoring
    ``scored_users`` users (the least disturbed by neighbours), divided by that count. ``item_features``
    rows follow ``data``'s items and are subset along with them."""
    order = np.random.default_rng(seed).permutation(data.n_users)
    points = []
    for share in sorted(shares):
        chosen = np.sort(order[: max(3, round(share * data.n_users))])
        rows = np.flatnonzero(np.isin(data.users, chosen))
        subset = data.subset(rows)
        features = None
        if item_features is not None:
            kept_items = np.unique(data.items[rows])
            features = item_features[kept_items]
        split = random_split(subset, seed)
        started = time.perf_counter()
        model = fit_on_split(factory(seed), split, features)
        fit_s = time.perf_counter() - started
        users = np.arange(min(scored_users, subset.n_users), dtype=np.int64)
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            model.score(users)
            best = min(best, time.perf_counter() - started)
        points.append(
            TimingPoint(
                share,
                subset.n_users,
                subset.n_items,
                subset.n_interactions,
                fit_s,
                1000.0 * best / users.size,
            )
        )
    return points
