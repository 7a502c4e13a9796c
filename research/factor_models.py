"""Learned latent-factor baselines for implicit feedback, written here in NumPy / PyTorch (CPU-sized).

- ``ImplicitMF`` (``mf``): weighted matrix factorisation trained by alternating least squares (Hu, Koren and
  Volinsky 2008, "iALS"): every user x item cell is a target (1 for an interaction, 0 otherwise) with
  confidence ``1 + alpha`` for interactions and 1 for the rest; L2 ``reg`` on both factor sets. Each
  half-step is solved by 3 conjugate-gradient iterations (the final user step exactly), so it needs no
  learning rate and no negative sampling. Fold-in: the exact user step.
- ``NeuMF`` (``ncf``, He et al. 2017): a GMF branch (element-wise product of user and item factors) and an
  MLP branch over concatenated user and item embeddings, joined by one output layer; pointwise binary
  cross-entropy with ``negatives`` uniformly sampled negatives per positive. Fold-in: the user's GMF and MLP
  embeddings are fitted by gradient steps on the same loss against the history row (every non-history item a
  negative), item side and network frozen.
- ``LightGCN`` (He et al. 2020): ID embeddings propagated over the symmetric-normalised user-item graph for
  ``layers`` layers, final embedding = mean of the layer outputs; BPR loss with one uniform negative per
  positive and L2 on the batch's layer-0 embeddings. Fold-in: the new user is one more graph node; its layer
  k+1 embedding is the normalised sum of its items' layer-k embeddings (its own layer 0 is unknown, taken as
  zero), averaged over layers exactly as for trained users.
- ``VBPRText`` (``vbpr_text``, He and McAuley 2016, with text instead of images):
  ``s(u, i) = b_i + g_u . g_i + t_u . (E f_i) + beta . f_i`` where ``f_i`` is the item's L2-normalised text
  embedding (``FitContext.item_features``) and ``E`` a learned projection; BPR loss. Fold-in: weighted
  ridge on the concatenated item vectors ``[g_i, E f_i]`` (``ridge_fold_in``). An item with no training
  interaction (protocol (e)'s cold items) is never drawn as a negative, since a new item would not have
  existed when the model was trained and drawing it would teach the text branch that its text is disliked;
  its ID factors ``g_i`` and bias ``b_i`` are zero (no evidence), so its score is the text terms alone.

All are deterministic for a given ``seed`` (torch and NumPy generators seeded per fit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from ranker.interactions import IntArray
from ranker.model.base import Matrix, Recommender
from research.baselines import bpr_fold_in, bpr_triples, positives, ridge_fold_in

F64 = npt.NDArray[np.float64]


def _cg_side(x: Matrix, other: F64, start: F64, reg: float, alpha: float, steps: int = 3) -> F64:
    """An approximate iALS half-step for all rows at once: ``steps`` conjugate-gradient iterations on each
    row's system ``(V^T V + reg I + alpha V_p^T V_p) u = (1 + alpha) V_p^T 1``, warm-started from ``start``
    (Takacs, Pilaszy and Tikk 2011). Dense matrix products only, which a Python loop of small solves cannot
    match on these sizes."""
    gram = other.T @ other + reg * np.eye(other.shape[1])
    xd = x.astype(np.float64)

    def apply(u: F64) -> F64:
        out: F64 = u @ gram + alpha * ((xd * (u @ other.T)) @ other)
        return out

    u = start.copy()
    residual = (1.0 + alpha) * (xd @ other) - apply(u)
    direction = residual.copy()
    rs = np.sum(residual**2, axis=1)
    for _ in range(steps):
        moved = apply(direction)
        step = rs / np.maximum(np.sum(direction * moved, axis=1), 1e-12)
        u += step[:, None] * direction
        residual -= step[:, None] * moved
        rs_new = np.sum(residual**2, axis=1)
        direction = residual + (rs_new / np.maximum(rs, 1e-12))[:, None] * direction
        rs = rs_new
    return u


@dataclass(frozen=True)
class MFConfig:
    factors: int = 64
    reg: float = 1.0
    alpha: float = 10.0
    iterations: int = 10
    seed: int = 42


class ImplicitMF(Recommender):
    name = "mf"

    def __init__(self, config: MFConfig | None = None) -> None:
        super().__init__()
        self.config = config or MFConfig()

    def _fit(self, train: Matrix) -> None:
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        users = rng.normal(0.0, 0.01, size=(train.shape[0], cfg.factors))
        items = np.zeros((train.shape[1], cfg.factors))
        train_t = np.ascontiguousarray(train.T)
        # Conjugate-gradient half-steps, item side first; the last user step is exact, so the stored users
        # are the exact solve for the final items (folding a trained user's row in reproduces their scores).
        for _ in range(cfg.iterations):
            items = _cg_side(train_t, users, items, cfg.reg, cfg.alpha)
            users = _cg_side(train, items, users, cfg.reg, cfg.alpha)
        users = ridge_fold_in(train, items, cfg.reg, cfg.alpha)
        self._users, self._items = users, items

    @property
    def user_factors(self) -> F64:
        """Fitted user factors, users x factors (for models built on this one, e.g. ``mf_textmap``)."""
        return self._users

    @property
    def item_factors(self) -> F64:
        """Fitted item factors, items x factors; zero rows for items with no training interaction."""
        return self._items

    def _score(self, users: IntArray) -> Matrix:
        return (self._users[users] @ self._items.T).astype(np.float32)

    def _score_history(self, history: Matrix, sequences: Sequence[IntArray] | None) -> Matrix:
        cfg = self.config
        users = ridge_fold_in(history, self._items.astype(np.float32), cfg.reg, cfg.alpha)
        return (users @ self._items.T).astype(np.float32)


def _seed_torch(seed: int) -> None:
    torch.manual_seed(seed)


@dataclass(frozen=True)
class NCFConfig:
    factors: int = 32  # GMF factors
    mlp_layers: tuple[int, ...] = (64, 32, 16)  # the paper's Table 7 layers; the first is the concat width
    epochs: int = 4
    batch_size: int = 4096
    lr: float = 2e-3
    negatives: int = 4
    weight_decay: float = 1e-6
    seed: int = 42


class NeuMF(Recommender):
    name = "ncf"

    def __init__(self, config: NCFConfig | None = None) -> None:
        super().__init__()
        self.config = config or NCFConfig()

    def _build(self, n_users: int, n_items: int) -> None:
        cfg = self.config
        half = cfg.mlp_layers[0] // 2
        self._gmf_u = torch.nn.Embedding(n_users, cfg.factors)
        self._gmf_i = torch.nn.Embedding(n_items, cfg.factors)
        self._mlp_u = torch.nn.Embedding(n_users, half)
        self._mlp_i = torch.nn.Embedding(n_items, half)
        for emb in (self._gmf_u, self._gmf_i, self._mlp_u, self._mlp_i):
            torch.nn.init.normal_(emb.weight, std=0.01)
        layers: list[torch.nn.Module] = []
        width = 2 * half
        for size in cfg.mlp_layers[1:]:
            layers += [torch.nn.Linear(width, size), torch.nn.ReLU()]
            width = size
        self._mlp = torch.nn.Sequential(*layers)
        self._out = torch.nn.Linear(cfg.factors + width, 1)

    def _logits(self, gu: torch.Tensor, mu: torch.Tensor, gi: torch.Tensor, mi: torch.Tensor) -> torch.Tensor:
        hidden = torch.cat([gu * gi, self._mlp(torch.cat([mu, mi], dim=-1))], dim=-1)
        out: torch.Tensor = self._out(hidden).squeeze(-1)
        return out

    def _fit(self, train: Matrix) -> None:
        cfg = self.config
        _seed_torch(cfg.seed)
        n_users, n_items = train.shape
        self._build(n_users, n_items)
        params = [
            *self._gmf_u.parameters(),
            *self._gmf_i.parameters(),
            *self._mlp_u.parameters(),
            *self._mlp_i.parameters(),
            *self._mlp.parameters(),
            *self._out.parameters(),
        ]
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        pos_u, pos_i = positives(train)
        rng = np.random.default_rng(cfg.seed)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        for _ in range(cfg.epochs):
            # Each positive plus `negatives` uniform items labelled 0 (a rare false negative is tolerated).
            users = np.repeat(pos_u, 1 + cfg.negatives)
            items = rng.integers(0, n_items, size=users.size)
            items[:: 1 + cfg.negatives] = pos_i
            labels = np.zeros(users.size, dtype=np.float32)
            labels[:: 1 + cfg.negatives] = 1.0
            order = rng.permutation(users.size)
            for start in range(0, order.size, cfg.batch_size):
                sel = order[start : start + cfg.batch_size]
                u = torch.from_numpy(users[sel])
                i = torch.from_numpy(items[sel])
                logits = self._logits(self._gmf_u(u), self._mlp_u(u), self._gmf_i(i), self._mlp_i(i))
                loss = loss_fn(logits, torch.from_numpy(labels[sel]))
                opt.zero_grad()
                loss.backward()
                opt.step()

    def _score_vectors(self, gu: torch.Tensor, mu: torch.Tensor) -> Matrix:
        with torch.no_grad():
            n_items = self._gmf_i.weight.shape[0]
            gi, mi = self._gmf_i.weight, self._mlp_i.weight
            rows = [
                self._logits(gu[r].expand(n_items, -1), mu[r].expand(n_items, -1), gi, mi).numpy()
                for r in range(gu.shape[0])
            ]
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, n_items), np.float32)

    def _score(self, users: IntArray) -> Matrix:
        u = torch.from_numpy(users)
        with torch.no_grad():
            return self._score_vectors(self._gmf_u(u), self._mlp_u(u))

    def _score_history(self, history: Matrix, sequences: Sequence[IntArray] | None) -> Matrix:
        _seed_torch(self.config.seed)
        n = history.shape[0]
        gu = torch.zeros(n, self._gmf_u.weight.shape[1], requires_grad=True)
        mu = torch.zeros(n, self._mlp_u.weight.shape[1], requires_grad=True)
        target = torch.from_numpy(history)
        # Positives weighted up to balance the many negatives, as the training ratio did.
        weight = 1.0 + target * (history.shape[1] / max(1.0, float(history.sum(axis=1).mean())) - 1.0)
        opt = torch.optim.Adam([gu, mu], lr=0.05)
        gi, mi = self._gmf_i.weight.detach(), self._mlp_i.weight.detach()
        n_items = gi.shape[0]
        for _ in range(50):
            logits = torch.stack(
                [self._logits(gu[r].expand(n_items, -1), mu[r].expand(n_items, -1), gi, mi) for r in range(n)]
            )
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, weight=weight)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
        return self._score_vectors(gu.detach(), mu.detach())


@dataclass(frozen=True)
class LightGCNConfig:
    factors: int = 64
    layers: int = 3
    epochs: int = 20
    batch_size: int = 8192
    lr: float = 5e-3
    reg: float = 1e-4
    seed: int = 42


class LightGCN(Recommender):
    name = "lightgcn"

    def __init__(self, config: LightGCNConfig | None = None) -> None:
        super().__init__()
        self.config = config or LightGCNConfig()

    def _fit(self, train: Matrix) -> None:
        cfg = self.config
        _seed_torch(cfg.seed)
        n_users, n_items = train.shape
        pos_u, pos_i = positives(train)
        user_deg = np.maximum(train.sum(axis=1), 1.0)
        item_deg = np.maximum(train.sum(axis=0), 1.0)
        norm = 1.0 / np.sqrt(user_deg[pos_u] * item_deg[pos_i])
        rows = np.concatenate([pos_u, n_users + pos_i])
        cols = np.concatenate([n_users + pos_i, pos_u])
        adj = torch.sparse_coo_tensor(
            torch.from_numpy(np.stack([rows, cols])),
            torch.from_numpy(np.concatenate([norm, norm]).astype(np.float32)),
            (n_users + n_items, n_users + n_items),
            check_invariants=False,
        ).coalesce()
        ego = torch.nn.Parameter(torch.randn(n_users + n_items, cfg.factors) * 0.1)
        opt = torch.optim.Adam([ego], lr=cfg.lr)
        rng = np.random.default_rng(cfg.seed)

        def propagate() -> list[torch.Tensor]:
            out: list[torch.Tensor] = [ego]
            for _ in range(cfg.layers):
                out.append(torch.sparse.mm(adj, out[-1]))
            return out

        for users, items, negatives in bpr_triples(pos_u, pos_i, n_items, cfg.epochs, cfg.batch_size, rng):
            final = torch.stack(propagate()).mean(dim=0)
            u = torch.from_numpy(users)
            i = torch.from_numpy(n_users + items)
            j = torch.from_numpy(n_users + negatives)
            diff = (final[u] * (final[i] - final[j])).sum(dim=1)
            reg = ego[u].pow(2).sum() + ego[i].pow(2).sum() + ego[j].pow(2).sum()
            loss = -torch.nn.functional.logsigmoid(diff).mean() + cfg.reg * reg / users.size
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
        with torch.no_grad():
            layers = [t.numpy().copy() for t in propagate()]
        final_np = np.mean(layers, axis=0)
        self._users = final_np[:n_users]
        self._items = final_np[n_users:]
        self._item_layers = [layer[n_users:] for layer in layers]
        self._item_deg = item_deg

    def _score(self, users: IntArray) -> Matrix:
        scores: Matrix = (self._users[users] @ self._items.T).astype(np.float32)
        return scores

    def _score_history(self, history: Matrix, sequences: Sequence[IntArray] | None) -> Matrix:
        degree = np.maximum(history.sum(axis=1, keepdims=True), 1.0)
        weights = history / np.sqrt(degree * self._item_deg[None, :])
        # Layer k+1 of the user = normalised sum of its items' layer k; layer 0 unknown (zero).
        layers = [np.zeros((history.shape[0], self._items.shape[1]), np.float32)]
        layers += [weights @ item_layer for item_layer in self._item_layers[:-1]]
        users = np.mean(layers, axis=0)
        scores: Matrix = (users @ self._items.T).astype(np.float32)
        return scores


@dataclass(frozen=True)
class VBPRConfig:
    factors: int = 32
    text_factors: int = 32
    epochs: int = 15
    batch_size: int = 4096
    lr: float = 5e-3
    reg: float = 1e-2
    seed: int = 42


class VBPRText(Recommender):
    name = "vbpr_text"

    def __init__(self, config: VBPRConfig | None = None) -> None:
        super().__init__()
        self.config = config or VBPRConfig()

    def _fit(self, train: Matrix) -> None:
        features = self._context.item_features
        if features is None or features.shape[0] != train.shape[1]:
            raise ValueError("vbpr_text needs FitContext.item_features, one row per item")
        cfg = self.config
        _seed_torch(cfg.seed)
        n_users, n_items = train.shape
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        feats = torch.from_numpy(
            np.divide(features, norms, out=np.zeros_like(features), where=norms > 0).astype(np.float32)
        )
        gu = torch.nn.Parameter(torch.randn(n_users, cfg.factors) * 0.01)
        gi = torch.nn.Parameter(torch.randn(n_items, cfg.factors) * 0.01)
        tu = torch.nn.Parameter(torch.randn(n_users, cfg.text_factors) * 0.01)
        proj = torch.nn.Parameter(torch.randn(feats.shape[1], cfg.text_factors) * 0.01)
        beta = torch.nn.Parameter(torch.zeros(feats.shape[1]))
        bias = torch.nn.Parameter(torch.zeros(n_items))
        opt = torch.optim.Adam([gu, gi, tu, proj, beta, bias], lr=cfg.lr)
        pos_u, pos_i = positives(train)
        rng = np.random.default_rng(cfg.seed)
        has_rows = train.sum(axis=0) > 0
        warm = np.flatnonzero(has_rows).astype(np.int64)

        def item_score(u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
            f = feats[i]
            return bias[i] + (gu[u] * gi[i]).sum(1) + (tu[u] * (f @ proj)).sum(1) + f @ beta

        for batch in bpr_triples(pos_u, pos_i, n_items, cfg.epochs, cfg.batch_size, rng, warm):
            u, i, j = (torch.from_numpy(x) for x in batch)
            diff = item_score(u, i) - item_score(u, j)
            reg = gu[u].pow(2).sum() + gi[i].pow(2).sum() + gi[j].pow(2).sum() + tu[u].pow(2).sum()
            loss = -torch.nn.functional.logsigmoid(diff).mean() + cfg.reg * reg / u.numel()
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
        with torch.no_grad():
            # Untrained ID parameters are their random initialisation: noise, not evidence.
            cold = torch.from_numpy(~has_rows)
            gi[cold] = 0.0
            bias[cold] = 0.0
            self._users = torch.cat([gu, tu], dim=1).numpy().copy()
            self._items = torch.cat([gi, feats @ proj], dim=1).numpy().copy()
            self._bias = (bias + feats @ beta).numpy().copy()

    def _score(self, users: IntArray) -> Matrix:
        scores: Matrix = (self._users[users] @ self._items.T + self._bias[None, :]).astype(np.float32)
        return scores

    def _score_history(self, history: Matrix, sequences: Sequence[IntArray] | None) -> Matrix:
        return bpr_fold_in(history, self._items, self._bias)
