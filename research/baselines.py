"""Collaborative-filtering baselines for the ranking report, behind one small contract.

``fit(train)`` takes the dense binary user x item training matrix; ``score(users)`` returns a dense
``(len(users), n_items)`` float32 score matrix, higher = better. Scores are not masked: the evaluator removes
each user's known items (``exclude_known``) so every model is excluded the same way.

- ``Popularity``: training interaction count per item, the same list for everyone.
- ``ItemKNN``: item-item cosine similarity over the users' binary vectors, each item keeping its ``k`` most
  similar neighbours; a user's score for j = sum of sim(i, j) over the items i they have.
- ``EASE`` (Steck 2019): closed-form item-item ridge regression with a zero diagonal,
  ``B = I - P / diag(P)`` (off-diagonal ``-P_ij / P_jj``) where ``P = (X^T X + lambda I)^-1``: the domain's
  ``ranker.model.ease.ease_matrix``, the same function the llmrec model's collaborative branch fits.
- ``BPRMF`` (``bpr``): matrix factorisation trained with the BPR pairwise loss in PyTorch on CPU (uniform
  negatives).

The learned models (``mf``, ``ncf``, ``lightgcn``, ``vbpr_text``, ``sasrec``, ``bert4rec``) live in
``factor_models`` and ``sequential``. Every model is deterministic given its ``seed``.

Fold-in (``score_history``): a user absent from training arrives with a few interactions and is scored
without retraining. Popularity ignores the history; ItemKNN and EASE multiply the history row with their
item x item matrix (exactly how they score known users); BPR solves the user factor by weighted ridge
regression on its item factors (``ridge_fold_in``). Each other model documents its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ranker.interactions import IntArray
from ranker.model.base import Matrix, Recommender
from ranker.model.ease import ease_matrix


def exclude_known(scores: Matrix, known: Matrix) -> Matrix:
    """Scores with the users' known items set to -inf, so they sort last and never enter a top-K list.
    ``known`` holds the rows of the same users (binary)."""
    out = scores.copy()
    out[known > 0] = -np.inf
    return out


def ridge_fold_in(
    history: Matrix, item_factors: npt.NDArray[np.floating[Any]], reg: float, alpha: float = 10.0
) -> npt.NDArray[np.float64]:
    """User factors for new users, by the weighted-ridge user step of implicit ALS (Hu et al. 2008): each
    history item is a target of 1 with confidence ``1 + alpha``, every other item a target of 0 with
    confidence 1, and ``u = (V^T V + alpha V_p^T V_p + reg I)^-1 (1 + alpha) V_p^T 1``. With a binary
    training matrix as ``history`` it is also the exact iALS half-step (``factor_models.ImplicitMF``)."""
    v = item_factors.astype(np.float64)
    gram = v.T @ v + reg * np.eye(v.shape[1])
    out = np.zeros((history.shape[0], v.shape[1]))
    for row in range(history.shape[0]):
        vp = v[history[row] > 0]
        if vp.shape[0] == 0:
            continue
        out[row] = np.linalg.solve(gram + alpha * vp.T @ vp, (1.0 + alpha) * vp.sum(axis=0))
    return out


def bpr_fold_in(history: Matrix, item_factors: Matrix, item_bias: Matrix) -> Matrix:
    """Scores for new users of a factor model trained with the BPR loss (``bpr``, ``vbpr_text``,
    ``implicit-bpr``): their factors by ``ridge_fold_in``, regularised relative to the item factors' scale
    (so one setting suits any trained embedding size), dotted with the item factors, plus the item bias."""
    reg = 0.1 * float(np.mean(np.sum(item_factors**2, axis=1))) + 1e-6
    users = ridge_fold_in(history, item_factors, reg)
    scores: Matrix = (users @ item_factors.T + item_bias[None, :]).astype(np.float32)
    return scores


def positives(train: Matrix) -> tuple[IntArray, IntArray]:
    """The (user, item) indices of the training matrix's interactions, row by row."""
    users, items = np.nonzero(train)
    return users.astype(np.int64), items.astype(np.int64)


def bpr_triples(
    users: IntArray,
    items: IntArray,
    n_items: int,
    epochs: int,
    batch_size: int,
    rng: np.random.Generator,
    negatives_from: IntArray | None = None,
) -> Iterator[tuple[IntArray, IntArray, IntArray]]:
    """The (user, positive, negative) mini-batches of BPR training: each epoch shuffles the positives and
    draws one uniform negative per positive, from ``negatives_from`` when given (else every item; passing
    every item draws exactly the same negatives). A sampled negative is occasionally a positive (densities
    are a few per cent), which BPR tolerates and which keeps sampling vectorised."""
    pool_size = n_items if negatives_from is None else int(negatives_from.size)
    for _ in range(epochs):
        order = rng.permutation(users.size)
        negatives = rng.integers(0, pool_size, size=users.size)
        if negatives_from is not None:
            negatives = negatives_from[negatives]
        for start in range(0, order.size, batch_size):
            sel = order[start : start + batch_size]
            yield users[sel], items[sel], negatives[sel]


class Popularity(Recommender):
    name = "pop"

    def _fit(self, train: Matrix) -> None:
        self._counts = train.sum(axis=0)

    def _score(self, users: IntArray) -> Matrix:
        return np.broadcast_to(self._counts, (users.size, self._counts.size)).copy()

    def _score_history(self, history: Matrix, sequences: Sequence[IntArray] | None) -> Matrix:
        return self._score(np.arange(history.shape[0]))


class _UserRowsModel(Recommender, ABC):
    """Models that score a user by multiplying their training row with an item x item matrix."""

    def _keep_rows(self, train: Matrix) -> None:
        self._train = train

    def _score_with(self, users: IntArray, item_matrix: Matrix) -> Matrix:
        return self._train[users] @ item_matrix

    @abstractmethod
    def _item_matrix(self) -> Matrix: ...

    def _score(self, users: IntArray) -> Matrix:
        return self._score_with(users, self._item_matrix())

    def _score_history(self, history: Matrix, sequences: Sequence[IntArray] | None) -> Matrix:
        return history @ self._item_matrix()


class ItemKNN(_UserRowsModel):
    name = "itemknn"

    def __init__(self, neighbours: int = 50, shrink: float = 0.0) -> None:
        super().__init__()
        self.neighbours = neighbours
        # Shrinkage damps similarities between items with few users in common (Koren-style |u|/(|u|+shrink)).
        self.shrink = shrink

    def _fit(self, train: Matrix) -> None:
        self._keep_rows(train)
        co = train.T @ train  # co-occurrence counts, item x item
        norms = np.sqrt(np.diag(co)).astype(np.float32)
        denom = np.outer(norms, norms) + self.shrink + 1e-12
        sim = (co / denom).astype(np.float32)
        np.fill_diagonal(sim, 0.0)
        n = sim.shape[0]
        k = min(self.neighbours, n - 1)
        if 0 < k < n - 1:
            # Keep, for each target item j (a column), its k most similar items; zero the rest.
            drop = np.argpartition(sim, n - k, axis=0)[: n - k]
            np.put_along_axis(sim, drop, 0.0, axis=0)
        self._sim = sim

    def _item_matrix(self) -> Matrix:
        return self._sim


class EASE(_UserRowsModel):
    name = "ease"

    def __init__(self, reg: float = 200.0) -> None:
        super().__init__()
        self.reg = reg

    def _fit(self, train: Matrix) -> None:
        self._keep_rows(train)
        self._b = ease_matrix(train, self.reg)

    def _item_matrix(self) -> Matrix:
        return self._b


@dataclass(frozen=True)
class BPRConfig:
    factors: int = 64
    epochs: int = 30
    batch_size: int = 2048
    lr: float = 0.005
    # L2 on the embeddings used in each batch, per example. 1e-5 overfits these sets badly (validation
    # NDCG@10 0.15 vs 0.20 at 1e-2 on mal-completed); 5e-2 underfits.
    weight_decay: float = 0.01
    seed: int = 42


class BPRMF(Recommender):
    name = "bpr"

    def __init__(self, config: BPRConfig | None = None) -> None:
        super().__init__()
        self.config = config or BPRConfig()

    def _fit(self, train: Matrix) -> None:
        import torch  # a heavy import kept out of the metrics/splits path

        torch.manual_seed(self.config.seed)
        cfg = self.config
        n_users, n_items = train.shape
        users, items = positives(train)
        rng = np.random.default_rng(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        user_emb = torch.nn.Parameter(torch.randn(n_users, cfg.factors, generator=gen) * 0.01)
        item_emb = torch.nn.Parameter(torch.randn(n_items, cfg.factors, generator=gen) * 0.01)
        item_bias = torch.nn.Parameter(torch.zeros(n_items))
        opt = torch.optim.Adam([user_emb, item_emb, item_bias], lr=cfg.lr)
        for batch in bpr_triples(users, items, n_items, cfg.epochs, cfg.batch_size, rng):
            u, i, j = (torch.from_numpy(x) for x in batch)
            eu, ei, ej = user_emb[u], item_emb[i], item_emb[j]
            diff = (eu * (ei - ej)).sum(dim=1) + item_bias[i] - item_bias[j]
            reg = eu.pow(2).sum() + ei.pow(2).sum() + ej.pow(2).sum()
            loss = -torch.nn.functional.logsigmoid(diff).mean() + cfg.weight_decay * reg / u.numel()
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
        with torch.no_grad():
            self._users = user_emb.detach().numpy().copy()
            self._items = item_emb.detach().numpy().copy()
            self._bias = item_bias.detach().numpy().copy()

    def _score(self, users: IntArray) -> Matrix:
        scores: Matrix = self._users[users] @ self._items.T + self._bias[None, :]
        return scores

    def _score_history(self, history: Matrix, sequences: Sequence[IntArray] | None) -> Matrix:
        return bpr_fold_in(history, self._items, self._bias)
