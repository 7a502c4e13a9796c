"""Shared contract for every baseline (a mixin run once per model) on a tiny planted-structure data set."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from ranker.model.base import FitContext, Recommender
from ranker.model.ease import ease_matrix
from research import baselines
from research.baselines import BPRMF, EASE, BPRConfig, ItemKNN, Popularity, exclude_known
from research.cold_start import ContentKNN, MFTextMap, TextMapConfig
from research.factor_models import (
    ImplicitMF,
    LightGCN,
    LightGCNConfig,
    MFConfig,
    NCFConfig,
    NeuMF,
    VBPRConfig,
    VBPRText,
)
from research.library_models import ImplicitALS, ImplicitALSConfig, ImplicitBPR, ImplicitBPRConfig
from research.sequential import BERT4Rec, SASRec, SequentialConfig

N_USERS, N_ITEMS = 60, 40


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """These models run thousands of tiny ops; on a busy 2-core machine a second intra-op thread makes
    them many times slower (the threads wait for each other), so the tests use one and restore it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


def shuffled_sequences(train: np.ndarray) -> list[np.ndarray]:
    """Each user's training items in a seeded random order (planted data has no time order; index order
    would teach a sequential model "the next index", which crosses into the other taste group)."""
    rng = np.random.default_rng(7)
    return [rng.permutation(np.flatnonzero(row)).astype(np.int64) for row in train]


def group_features() -> np.ndarray:
    """Text features that reveal each item's taste group (plus noise), for vbpr_text."""
    rng = np.random.default_rng(1)
    feats = rng.normal(0.0, 0.3, size=(N_ITEMS, 8)).astype(np.float32)
    feats[:20, 0] += 1.0
    feats[20:, 1] += 1.0
    return feats


def context(train: np.ndarray) -> FitContext:
    return FitContext(sequences=shuffled_sequences(train), item_features=group_features())


class BaselineContract:
    # Fold-in: a new user with 4 items of one taste group should get mostly that group's items: at least
    # `fold_in_in_group` of the two test users' 10 top-5 picks.
    folds_in_by_group = True
    fold_in_in_group = 8

    def make(self, seed: int = 42) -> Recommender:
        raise NotImplementedError

    def fitted(self, train: np.ndarray, seed: int = 42) -> Recommender:
        return self.make(seed).fit(train, context(train))

    def test_scores_shape_and_dtype(self) -> None:
        train, _ = planted()
        scores = self.fitted(train).score(np.array([0, 5, 59]))
        assert scores.shape == (3, N_ITEMS) and scores.dtype == np.float32
        assert np.isfinite(scores).all()

    def test_deterministic_with_seed(self) -> None:
        train, _ = planted()
        users = np.arange(N_USERS)
        a = self.fitted(train, seed=3).score(users)
        b = self.fitted(train, seed=3).score(users)
        np.testing.assert_array_equal(a, b)

    def test_training_items_can_be_excluded(self) -> None:
        train, _ = planted()
        scores = exclude_known(self.fitted(train).score(np.arange(N_USERS)), train)
        top = np.argsort(-scores, axis=1)[:, :10]
        assert not train[np.arange(N_USERS)[:, None], top].any()

    def test_beats_random(self) -> None:
        train, target = planted()
        # A random list of 5 from the 33 unseen items finds the target with probability 5/33 ~ 0.15.
        random_rate = 5 / (N_ITEMS - 7)
        assert hit_rate_at(self.fitted(train), train, target, 5) > random_rate + 0.15

    def test_fold_in_scores_new_users_from_their_history(self) -> None:
        train, _ = planted()
        model = self.fitted(train)
        history = np.zeros((2, N_ITEMS), dtype=np.float32)
        given = [np.array([1, 3, 5, 7]), np.array([21, 23, 25, 27])]
        for row, items in enumerate(given):
            history[row, items] = 1.0
        scores = model.score_history(history, given)
        assert scores.shape == (2, N_ITEMS) and np.isfinite(scores).all()
        top = np.argsort(-exclude_known(scores, history), axis=1, kind="stable")[:, :5]
        if self.folds_in_by_group:
            # of the 10 picks, a random model puts ~5 in the user's own group
            assert (top[0] < 20).sum() + (top[1] >= 20).sum() >= self.fold_in_in_group

    def test_score_before_fit_fails(self) -> None:
        with pytest.raises((RuntimeError, AttributeError)):
            self.make().score(np.array([0]))


class TestPopularity(BaselineContract):
    folds_in_by_group = False  # the same list for everyone, new or not

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

    def test_item_matrix_is_the_domain_closed_form(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # The headline "llmrec against EASE" compares the model with its own collaborative branch only if
        # the baseline's B is the domain's ``ease_matrix`` (the one the llmrec model fits), not a copy of it.
        train, _ = planted()
        calls: list[np.ndarray] = []

        def spy(x: np.ndarray, reg: float) -> np.ndarray:
            calls.append(ease_matrix(x, reg))
            return calls[-1]

        monkeypatch.setattr(baselines, "ease_matrix", spy)
        model = EASE(reg=10.0).fit(train)
        assert len(calls) == 1 and model._item_matrix() is calls[0]
        np.testing.assert_array_equal(model._item_matrix(), ease_matrix(train, 10.0))


class TestBPRMF(BaselineContract):
    def make(self, seed: int = 42) -> Recommender:
        return BPRMF(BPRConfig(factors=8, epochs=20, batch_size=128, lr=0.05, seed=seed))


class TestImplicitMF(BaselineContract):
    def make(self, seed: int = 42) -> Recommender:
        return ImplicitMF(MFConfig(factors=8, reg=0.1, alpha=10.0, iterations=6, seed=seed))

    def test_fold_in_matches_the_trained_user_step(self) -> None:
        # The fold-in is the ALS user step: a trained user's row folded in again gives (almost) their scores.
        train, _ = planted()
        model = self.fitted(train)
        np.testing.assert_allclose(model.score_history(train[:3]), model.score(np.arange(3)), atol=1e-3)


class TestNeuMF(BaselineContract):
    def make(self, seed: int = 42) -> Recommender:
        cfg = NCFConfig(factors=8, mlp_layers=(16, 8), epochs=20, batch_size=256, lr=0.01, seed=seed)
        return NeuMF(cfg)


class TestLightGCN(BaselineContract):
    def make(self, seed: int = 42) -> Recommender:
        return LightGCN(LightGCNConfig(factors=8, layers=2, epochs=30, batch_size=256, lr=0.02, seed=seed))


class TestVBPRText(BaselineContract):
    def make(self, seed: int = 42) -> Recommender:
        cfg = VBPRConfig(factors=4, text_factors=4, epochs=20, batch_size=256, lr=0.02, seed=seed)
        return VBPRText(cfg)

    def test_needs_item_features(self) -> None:
        train, _ = planted()
        with pytest.raises(ValueError, match="item_features"):
            self.make().fit(train)


class TestContentKNN(BaselineContract):
    """Scores by text similarity alone (cold items: tests/unit/test_cold_items.py)."""

    def make(self, seed: int = 42) -> Recommender:
        return ContentKNN(neighbours=10, exponent=2.0)

    def test_beats_random(self) -> None:
        # The text tells the taste group, not which of the group's items are popular (the planted target
        # favours those): it should fill the top 5 with the user's own group and beat a random list, but
        # not by the margin of a model that sees the popularity skew.
        train, target = planted()
        model = self.fitted(train)
        scores = exclude_known(model.score(np.arange(N_USERS)), train)
        top = np.argsort(-scores, axis=1, kind="stable")[:, :5]
        assert (top[: N_USERS // 2] < 20).all() and (top[N_USERS // 2 :] >= 20).all()
        assert hit_rate_at(model, train, target, 5) > 5 / (N_ITEMS - 7)


class TestMFTextMap(BaselineContract):
    """With every item trained on, it is iALS (``mf``); the text map only serves items with no rows."""

    def make(self, seed: int = 42) -> Recommender:
        return MFTextMap(TextMapConfig(factors=8, reg=0.1, alpha=10.0, iterations=6, seed=seed))


class TestImplicitBPR(BaselineContract):
    """The library reference for ``bpr`` (``library_models``)."""

    def make(self, seed: int = 42) -> Recommender:
        return ImplicitBPR(ImplicitBPRConfig(factors=8, learning_rate=0.1, iterations=500, seed=seed))


class TestImplicitALS(BaselineContract):
    """The library reference for ``mf``."""

    def make(self, seed: int = 42) -> Recommender:
        return ImplicitALS(ImplicitALSConfig(factors=8, regularization=0.1, alpha=10.0, seed=seed))


SEQ = SequentialConfig(dim=16, blocks=1, heads=2, max_len=8, dropout=0.1, epochs=40, batch_size=32, lr=5e-3)


def chained_sequences(n_users: int = 80, length: int = 7, seed: int = 0) -> list[np.ndarray]:
    """Each user walks the catalogue in steps of +1 (mod N_ITEMS) from a random start: the next item is
    always the last one plus one, a pattern only a model of order can find."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, N_ITEMS) + np.arange(length)) % N_ITEMS for _ in range(n_users)]


class SequentialContract(BaselineContract):
    # Trained on 60 shuffled 7-item sequences, a 4-item query is a weaker signal for these models.
    fold_in_in_group = 7

    def test_learns_the_next_item(self) -> None:
        seqs = chained_sequences()
        train = np.zeros((len(seqs), N_ITEMS), dtype=np.float32)
        for u, s in enumerate(seqs):
            train[u, s[:-1]] = 1.0
        model = self.make().fit(train, FitContext(sequences=[s[:-1] for s in seqs]))
        scores = exclude_known(model.score(np.arange(len(seqs))), train)
        top = np.argsort(-scores, axis=1)[:, :3]
        hit = np.mean([s[-1] in top[u] for u, s in enumerate(seqs)])
        # random: 3 of 34 unseen items ~ 0.09; an order-blind model does no better (every item is equally
        # likely the next one). SASRec's original loss (one sampled negative per position) learns more
        # slowly than a softmax, hence a bar of 0.5 rather than higher.
        assert hit > 0.5

    def test_needs_sequences(self) -> None:
        train, _ = planted()
        with pytest.raises(ValueError, match="sequences"):
            self.make().fit(train)


class TestSASRec(SequentialContract):
    def make(self, seed: int = 42) -> Recommender:
        return SASRec(SequentialConfig(**{**SEQ.__dict__, "seed": seed}))


class TestSASRecSampledLoss(SequentialContract):
    def make(self, seed: int = 42) -> Recommender:
        return SASRec(SequentialConfig(**{**SEQ.__dict__, "seed": seed, "loss": "bce"}))


class TestBERT4Rec(SequentialContract):
    def make(self, seed: int = 42) -> Recommender:
        return BERT4Rec(SequentialConfig(**{**SEQ.__dict__, "seed": seed, "epochs": 60}))
