"""Shared contract for every baseline (a mixin run once per model) on a tiny planted-structure data set."""

from __future__ import annotations

import numpy as np
import pytest

from ranker.evaluation.baselines import (
    BPRMF,
    EASE,
    BPRConfig,
    ItemKNN,
    Popularity,
    Recommender,
    exclude_known,
)

N_USERS, N_ITEMS = 60, 40


def planted(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two taste groups: users 0-29 like items 0-19, users 30-59 like items 20-39, with a popularity skew
    inside each group (lower index = more likely). One liked item per user is held out as the target."""
    rng = np.random.default_rng(seed)
    train = np.zeros((N_USERS, N_ITEMS), dtype=np.float32)
    target = np.zeros(N_USERS, dtype=np.int64)
    weights = 1.0 / np.arange(1, 21)
    weights /= weights.sum()
    for u in range(N_USERS):
        offset = 0 if u < N_USERS // 2 else 20
        liked = offset + rng.choice(20, size=8, replace=False, p=weights)
        train[u, liked[1:]] = 1.0
        target[u] = liked[0]
    return train, target


def hit_rate_at(model: Recommender, train: np.ndarray, target: np.ndarray, k: int) -> float:
    scores = exclude_known(model.score(np.arange(N_USERS)), train)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean([target[u] in top[u] for u in range(N_USERS)]))


class BaselineContract:
    def make(self, seed: int = 42) -> Recommender:
        raise NotImplementedError

    def test_scores_shape_and_dtype(self) -> None:
        train, _ = planted()
        scores = self.make().fit(train).score(np.array([0, 5, 59]))
        assert scores.shape == (3, N_ITEMS) and scores.dtype == np.float32
        assert np.isfinite(scores).all()

    def test_deterministic_with_seed(self) -> None:
        train, _ = planted()
        users = np.arange(N_USERS)
        a = self.make(seed=3).fit(train).score(users)
        b = self.make(seed=3).fit(train).score(users)
        np.testing.assert_array_equal(a, b)

    def test_training_items_can_be_excluded(self) -> None:
        train, _ = planted()
        scores = exclude_known(self.make().fit(train).score(np.arange(N_USERS)), train)
        top = np.argsort(-scores, axis=1)[:, :10]
        assert not train[np.arange(N_USERS)[:, None], top].any()

    def test_beats_random(self) -> None:
        train, target = planted()
        # A random list of 5 from the 33 unseen items finds the target with probability 5/33 ~ 0.15.
        random_rate = 5 / (N_ITEMS - 7)
        assert hit_rate_at(self.make().fit(train), train, target, 5) > random_rate + 0.15

    def test_score_before_fit_fails(self) -> None:
        with pytest.raises((RuntimeError, AttributeError)):
            self.make().score(np.array([0]))


class TestPopularity(BaselineContract):
    def make(self, seed: int = 42) -> Recommender:
        return Popularity()


class TestItemKNN(BaselineContract):
    def make(self, seed: int = 42) -> Recommender:
        return ItemKNN(neighbours=10)

    def test_keeps_k_neighbours_per_item(self) -> None:
        train, _ = planted()
        model = ItemKNN(neighbours=5).fit(train)
        assert ((model._sim > 0).sum(axis=0) <= 5).all()
        assert np.diag(model._sim).max() == 0.0


class TestEASE(BaselineContract):
    def make(self, seed: int = 42) -> Recommender:
        return EASE(reg=10.0)

    def test_zero_diagonal_and_closed_form(self) -> None:
        train, _ = planted()
        model = EASE(reg=10.0).fit(train)
        assert np.abs(np.diag(model._b)).max() == 0.0
        # B minimises ||X - XB||^2 + reg ||B||^2 with diag(B) = 0: column 0 = ridge on the other columns.
        x = train.astype(np.float64)
        others = np.arange(1, N_ITEMS)
        a = x[:, others]
        coef = np.linalg.solve(a.T @ a + 10.0 * np.eye(others.size), a.T @ x[:, 0])
        np.testing.assert_allclose(model._b[others, 0], coef, atol=1e-4)


class TestBPRMF(BaselineContract):
    def make(self, seed: int = 42) -> Recommender:
        return BPRMF(BPRConfig(factors=8, epochs=20, batch_size=128, lr=0.05, seed=seed))
