"""Baselines that can score an item nobody has interacted with yet (protocol (e), cold items), from its text
(``FitContext.item_features``, one row per item index, cold items included).

- ``ContentKNN`` (``content_knn``): item-based k-NN whose similarity is the cosine of the items' text vectors
  instead of their co-consumption: a user's score for item j is ``sum over their training items i of
  sim(i, j) ** exponent``, where each target j keeps only its ``neighbours`` most similar items (as
  ``ItemKNN`` does). Only items with training interactions can be neighbours: no user has a cold item in
  their history, so a cold neighbour would only take a slot. Negative cosines count as 0 (unrelated, not
  "anti-liked"), which also keeps a fractional ``exponent`` defined. Sum and mean over the user's items rank
  alike (the mean divides a user's whole row by one number), so there is no mean option. A cold item is
  placed by its text alone, a warm one the same way, so this is also a pure content baseline on (a)-(d).
- ``MFTextMap`` (``mf_textmap``): collaborative factors learnt from interactions, and a linear map from
  text to those factors that gives a cold item factors of its own. The item factors are ``mf``'s (iALS,
  ``factor_models.ImplicitMF``) fitted on the training matrix; a ridge regression from the items' unit text
  vectors to their factors is fitted on the items that have training interactions; each item without any
  takes the mapped factors, the others keep their learnt ones. This is the attribute-to-factor mapping of
  Gantner et al. 2010 ("Learning Attribute-to-Feature Mappings for Cold-Start Recommendations", ICDM; the
  linear, least-squares variant) and, with a linear regressor, van den Oord, Dieleman and Schrauwen 2013
  ("Deep content-based music recommendation", NeurIPS), who regressed WMF item factors from audio.
  Fold-in: the iALS user step on the completed item factors.

Both are deterministic (``mf_textmap`` given its seed; ``content_knn`` has no randomness).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ranker.interactions import IntArray
from ranker.model.base import Matrix, Recommender
from research.baselines import _UserRowsModel, ridge_fold_in
from research.factor_models import ImplicitMF, MFConfig

F64 = npt.NDArray[np.float64]


def unit_rows(features: npt.NDArray[np.floating]) -> Matrix:
    """Rows scaled to unit L2 norm; all-zero rows (items without text) stay zero."""
    x = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: Matrix = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    return out


def checked_features(features: Matrix | None, n_items: int, model: str) -> Matrix:
    """The fit context's item text features, checked to cover every item index."""
    if features is None or features.shape[0] != n_items:
        raise ValueError(f"{model} needs FitContext.item_features, one row per item")
    return features


def pruned_text_similarity(
    unit: Matrix, sources: npt.NDArray[np.bool_], neighbours: int, exponent: float, block: int = 1024
) -> Matrix:
    """Item x item ``max(cos, 0) ** exponent`` from unit text rows, with a zero diagonal, zero rows for items
    that are not ``sources``, and each column (target item) keeping its ``neighbours`` largest entries.
    Built a block of target columns at a time, so the temporaries stay a fraction of the n x n result."""
    n = unit.shape[0]
    sim = np.zeros((n, n), dtype=np.float32)
    k = min(neighbours, n - 1)
    for start in range(0, n, block):
        stop = min(start + block, n)
        part = np.maximum(unit @ unit[start:stop].T, 0.0)
        if exponent != 1.0:
            part = part**exponent
        part[~sources] = 0.0
        cols = np.arange(start, stop)
        part[cols, cols - start] = 0.0
        if 0 < k < n - 1:
            drop = np.argpartition(part, n - k, axis=0)[: n - k]
            np.put_along_axis(part, drop, 0.0, axis=0)
        sim[:, start:stop] = part
    return sim


class ContentKNN(_UserRowsModel):
    name = "content_knn"

    def __init__(self, neighbours: int = 100, exponent: float = 1.0) -> None:
        super().__init__()
        self.neighbours = neighbours
        # > 1 sharpens: sentence-embedding cosines sit in a narrow band, where raw sums favour items that
        # are mildly similar to everything.
        self.exponent = exponent

    def _fit(self, train: Matrix) -> None:
        unit = unit_rows(checked_features(self._context.item_features, train.shape[1], self.name))
        self._keep_rows(train)
        self._sim = pruned_text_similarity(unit, train.sum(axis=0) > 0, self.neighbours, self.exponent)

    def _item_matrix(self) -> Matrix:
        return self._sim


def fit_text_map(text: F64, factors: F64, reg: float) -> tuple[F64, F64]:
    """Ridge regression with an unpenalised intercept from ``text`` (items x dim) to ``factors`` (items x f):
    ``(weights, intercept)`` with ``factors ~ text @ weights + intercept``. Both sides are centred on their
    means, so the intercept is the mean factor and ``reg`` shrinks only the text's effect."""
    text_mean = text.mean(axis=0)
    factor_mean = factors.mean(axis=0)
    x = text - text_mean
    gram = x.T @ x + reg * np.eye(x.shape[1])
    weights: F64 = np.linalg.solve(gram, x.T @ (factors - factor_mean))
    intercept: F64 = factor_mean - text_mean @ weights
    return weights, intercept


@dataclass(frozen=True)
class TextMapConfig:
    factors: int = 64
    reg: float = 1.0  # iALS's L2 (the ``mf`` baseline's ``reg``)
    alpha: float = 10.0
    iterations: int = 8
    map_reg: float = 1.0  # the text -> factor ridge's L2
    seed: int = 42


class MFTextMap(Recommender):
    name = "mf_textmap"

    def __init__(self, config: TextMapConfig | None = None) -> None:
        super().__init__()
        self.config = config or TextMapConfig()

    def _fit(self, train: Matrix) -> None:
        cfg = self.config
        unit = unit_rows(checked_features(self._context.item_features, train.shape[1], self.name)).astype(
            np.float64
        )
        mf_config = MFConfig(cfg.factors, cfg.reg, cfg.alpha, cfg.iterations, cfg.seed)
        mf = ImplicitMF(mf_config).fit(train)
        items = mf.item_factors.copy()
        warm = train.sum(axis=0) > 0
        if warm.all() or not warm.any():
            self._users, self._items, self.mapped = mf.user_factors, items, np.zeros(0, dtype=np.int64)
            return
        weights, intercept = fit_text_map(unit[warm], items[warm], cfg.map_reg)
        items[~warm] = unit[~warm] @ weights + intercept
        self._users, self._items = mf.user_factors, items
        self.mapped = np.flatnonzero(~warm).astype(np.int64)  # the items that took mapped factors

    def _score(self, users: IntArray) -> Matrix:
        return (self._users[users] @ self._items.T).astype(np.float32)

    def _score_history(self, history: Matrix, sequences: Sequence[IntArray] | None) -> Matrix:
        cfg = self.config
        users = ridge_fold_in(history, self._items, cfg.reg, cfg.alpha)
        return (users @ self._items.T).astype(np.float32)
