"""Reference implementations from an established library, run through the same harness as our baselines
(same split, same tuning budget, full ranking, same metrics), to check that ours land close to them:
``implicit`` (benfred/implicit, C++ on CPU) for BPR and for implicit ALS.

- ``implicit-bpr``: ``implicit.bpr.BayesianPersonalizedRanking`` (SGD over sampled triples, item biases);
  our counterpart is ``bpr`` (``baselines.BPRMF``).
- ``implicit-als``: ``implicit.als.AlternatingLeastSquares`` (Hu, Koren and Volinsky 2008, conjugate
  gradient); our counterpart is ``mf`` (``factor_models.ImplicitMF``), the same model.

Scores are the dot product of the library's user and item factors (its BPR carries the item bias in an
extra factor). One thread, like the rest of the harness. New users (protocol (d) cold) are folded in by
the weighted-ridge user step on the library's item factors, as our ``bpr`` and ``mf`` do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from ranker.interactions import IntArray
from ranker.model.base import Matrix, Recommender
from research.baselines import bpr_fold_in, ridge_fold_in


@dataclass(frozen=True)
class ImplicitBPRConfig:
    factors: int = 64
    learning_rate: float = 0.01
    regularization: float = 0.01
    iterations: int = 100
    seed: int = 42


@dataclass(frozen=True)
class ImplicitALSConfig:
    factors: int = 64
    regularization: float = 0.01
    alpha: float = 1.0
    iterations: int = 15
    seed: int = 42


class _ImplicitModel(Recommender):
    def _library_model(self) -> Any:
        raise NotImplementedError

    def _fit(self, train: Matrix) -> None:
        model = self._library_model()
        model.fit(sp.csr_matrix(train), show_progress=False)
        self._users = np.asarray(model.user_factors, dtype=np.float32)
        self._items = np.asarray(model.item_factors, dtype=np.float32)

    def _score(self, users: IntArray) -> Matrix:
        out: Matrix = self._users[users] @ self._items.T
        return out

    def _score_history(self, history: Matrix, sequences: Sequence[IntArray] | None) -> Matrix:
        return self._fold_in(history)

    def _fold_in(self, history: Matrix) -> Matrix:
        raise NotImplementedError


class ImplicitBPR(_ImplicitModel):
    name = "implicit-bpr"

    def __init__(self, config: ImplicitBPRConfig | None = None) -> None:
        super().__init__()
        self.config = config or ImplicitBPRConfig()

    def _library_model(self) -> Any:
        from implicit.bpr import BayesianPersonalizedRanking  # heavy, optional: only these models use it

        c = self.config
        return BayesianPersonalizedRanking(
            factors=c.factors,
            learning_rate=c.learning_rate,
            regularization=c.regularization,
            iterations=c.iterations,
            random_state=c.seed,
            num_threads=1,
        )

    def _fold_in(self, history: Matrix) -> Matrix:
        # The last factor is the item bias (the user side holds a constant 1 there).
        return bpr_fold_in(history, self._items[:, :-1], self._items[:, -1])


class ImplicitALS(_ImplicitModel):
    name = "implicit-als"

    def __init__(self, config: ImplicitALSConfig | None = None) -> None:
        super().__init__()
        self.config = config or ImplicitALSConfig()

    def _library_model(self) -> Any:
        from implicit.als import AlternatingLeastSquares  # heavy, optional: only these models use it

        c = self.config
        return AlternatingLeastSquares(
            factors=c.factors,
            regularization=c.regularization,
            alpha=c.alpha,
            iterations=c.iterations,
            random_state=c.seed,
            num_threads=1,
        )

    def _fold_in(self, history: Matrix) -> Matrix:
        c = self.config
        users = ridge_fold_in(history, self._items, c.regularization, c.alpha)
        return (users @ self._items.T).astype(np.float32)
