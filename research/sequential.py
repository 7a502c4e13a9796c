"""Sequential baselines: SASRec (Kang and McAuley 2018) and BERT4Rec (Sun et al. 2019), small PyTorch
transformers over each user's training items in order (``FitContext.sequences``: time order where the data
has timestamps; the harness runs them only on such data by default).

Shared choices, sized for a 2-core CPU:
- Item tokens are ``item + 1`` (0 pads); BERT4Rec adds a mask token ``n_items + 1``. Learned positions.
- Every training item is used: a user's sequence is cut, from its end, into windows of ``max_len`` (+1 for
  SASRec's shifted targets) rather than keeping only the last window.
- SASRec: causal self-attention; position t predicts item t+1. Trained by default with softmax
  cross-entropy over the whole catalogue at every position (``loss="ce"``, RecBole's default for SASRec);
  ``loss="bce"`` is the original paper's binary cross-entropy against one sampled negative per position.
  On MovieLens (protocol (c), seed 42) the sampled loss left SASRec level with popularity; the catalogues
  here are small enough (a few thousand items) for the full softmax on a CPU. Scoring reads the last
  position's output.
- BERT4Rec: bidirectional; a share ``mask_prob`` of positions (at least one per window) are replaced by the
  mask token and predicted (cloze) with softmax cross-entropy over the catalogue, as in the original paper.
  Scoring appends one mask token after the last ``max_len - 1`` items.
- Fold-in is native: a new user's given items, in order, are the input sequence. At test every user's
  input is every item known before the test part (train and validation; ``reads_history_at_test``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ranker.interactions import IntArray
from ranker.model.base import Matrix, Recommender


@dataclass(frozen=True)
class SequentialConfig:
    dim: int = 64
    blocks: int = 2
    heads: int = 2
    max_len: int = 50
    dropout: float = 0.2
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    mask_prob: float = 0.2  # BERT4Rec only
    loss: str = "ce"  # SASRec only: "ce" (full softmax) or "bce" (one sampled negative per position)
    seed: int = 42


def windows(sequence: IntArray, length: int, step: int | None = None) -> list[IntArray]:
    """``sequence`` cut from its end into windows of at most ``length`` items, each starting ``step`` (default
    ``length``) items before the next (the first may be shorter); empty input gives none."""
    out = []
    end = sequence.size
    while end > 0:
        out.append(sequence[max(0, end - length) : end])
        if end - length <= 0:
            break
        end -= step or length
    return out[::-1]


def _left_pad(rows: Sequence[IntArray], length: int) -> IntArray:
    out = np.zeros((len(rows), length), dtype=np.int64)
    for r, row in enumerate(rows):
        if row.size:
            out[r, -row.size :] = row[-length:]
    return out


class _Transformer:
    """Token + position embeddings, a stack of pre-norm encoder layers, output tied to the item embeddings."""

    def __init__(self, n_tokens: int, cfg: SequentialConfig) -> None:
        self.tokens = torch.nn.Embedding(n_tokens, cfg.dim, padding_idx=0)
        self.positions = torch.nn.Embedding(cfg.max_len, cfg.dim)
        # Small initial embeddings (BERT's 0.02): with torch's default N(0, 1) the output scores of rarely
        # trained items stay dominated by their random norms, and the lists fill with long-tail noise.
        for table in (self.tokens, self.positions):
            torch.nn.init.normal_(table.weight, std=0.02)
        with torch.no_grad():
            self.tokens.weight[0].zero_()
        layer = torch.nn.TransformerEncoderLayer(
            cfg.dim, cfg.heads, 2 * cfg.dim, cfg.dropout, batch_first=True, norm_first=True
        )
        self.encoder = torch.nn.TransformerEncoder(layer, cfg.blocks, enable_nested_tensor=False)
        self.norm = torch.nn.LayerNorm(cfg.dim)
        self.dropout = torch.nn.Dropout(cfg.dropout)
        self.modules = torch.nn.ModuleList(
            [self.tokens, self.positions, self.encoder, self.norm, self.dropout]
        )

    def hidden(self, tokens: torch.Tensor, causal: bool) -> torch.Tensor:
        length = tokens.shape[1]
        pos = torch.arange(length).unsqueeze(0)
        x = self.dropout(self.tokens(tokens) + self.positions(pos))
        # Boolean like the padding mask (True = may not attend): position t sees positions <= t only.
        mask = torch.triu(torch.ones(length, length, dtype=torch.bool), 1) if causal else None
        out: torch.Tensor = self.norm(self.encoder(x, mask=mask, src_key_padding_mask=tokens == 0))
        return out

    def item_logits(self, hidden: torch.Tensor, n_items: int) -> torch.Tensor:
        # Items are tokens 1..n_items; the pad (0) and mask tokens are never predicted.
        out: torch.Tensor = hidden @ self.tokens.weight[1 : n_items + 1].T
        return out


class _SequentialRecommender(Recommender):
    causal: bool = True
    reads_history_at_test = True

    def __init__(self, config: SequentialConfig | None = None) -> None:
        super().__init__()
        self.config = config or SequentialConfig()

    def _examples(self, rng: np.random.Generator, seqs: list[IntArray]) -> tuple[IntArray, IntArray]:
        raise NotImplementedError

    def _query(self, sequence: IntArray) -> IntArray:
        raise NotImplementedError

    def _fit(self, train: Matrix) -> None:
        sequences = self._context.sequences
        if sequences is None or len(sequences) != train.shape[0]:
            raise ValueError(f"{self.name} needs FitContext.sequences, one per user")
        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        n_items = train.shape[1]
        self._net = _Transformer(n_items + 2, cfg)
        self._sequences = [np.asarray(s, dtype=np.int64) + 1 for s in sequences]
        opt = torch.optim.Adam(self._net.modules.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self._net.modules.train()
        for _ in range(cfg.epochs):
            inputs, targets = self._examples(rng, self._sequences)
            order = rng.permutation(inputs.shape[0])
            for start in range(0, order.size, cfg.batch_size):
                sel = order[start : start + cfg.batch_size]
                x = torch.from_numpy(inputs[sel])
                y = torch.from_numpy(targets[sel])
                keep = y > 0
                if not bool(keep.any()):
                    continue
                loss = self._loss(self._net.hidden(x, self.causal)[keep], y[keep] - 1, n_items, rng)
                opt.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
        self._net.modules.eval()

    def _loss(
        self, hidden: torch.Tensor, targets: torch.Tensor, n_items: int, rng: np.random.Generator
    ) -> torch.Tensor:
        """Full softmax cross-entropy over the catalogue (BERT4Rec); SASRec overrides it."""
        logits = self._net.item_logits(hidden, n_items)
        return torch.nn.functional.cross_entropy(logits, targets)

    def _score_sequences(self, sequences: Sequence[IntArray]) -> Matrix:
        queries = _left_pad([self._query(s) for s in sequences], self.config.max_len)
        out = []
        with torch.no_grad():
            for start in range(0, queries.shape[0], 256):
                x = torch.from_numpy(queries[start : start + 256])
                last = self._net.hidden(x, self.causal)[:, -1]
                out.append(self._net.item_logits(last, self.n_items).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.n_items), np.float32)

    def _score(self, users: IntArray) -> Matrix:
        return self._score_sequences([self._sequences[u] for u in users.tolist()])

    def _score_history(self, history: Matrix, sequences: Sequence[IntArray] | None) -> Matrix:
        if sequences is None:
            raise ValueError(f"{self.name} folds in from ordered sequences")
        return self._score_sequences([np.asarray(s, dtype=np.int64) + 1 for s in sequences])


class SASRec(_SequentialRecommender):
    name = "sasrec"
    causal = True

    def _examples(self, rng: np.random.Generator, seqs: list[IntArray]) -> tuple[IntArray, IntArray]:
        length = self.config.max_len
        # Windows of length+1 overlapping by one item, so every next-item pair is used exactly once.
        cuts = [w for s in seqs for w in windows(s, length + 1, length) if w.size > 1]
        return _left_pad([c[:-1] for c in cuts], length), _left_pad([c[1:] for c in cuts], length)

    def _query(self, sequence: IntArray) -> IntArray:
        return sequence[-self.config.max_len :]

    def _loss(
        self, hidden: torch.Tensor, targets: torch.Tensor, n_items: int, rng: np.random.Generator
    ) -> torch.Tensor:
        if self.config.loss == "ce":
            return super()._loss(hidden, targets, n_items, rng)
        if self.config.loss != "bce":
            raise ValueError(f"unknown SASRec loss {self.config.loss!r}; use 'ce' or 'bce'")
        negatives = torch.from_numpy(rng.integers(0, n_items, size=targets.shape[0]))
        items = self._net.tokens.weight[1 : n_items + 1]
        pos = (hidden * items[targets]).sum(dim=1)
        neg = (hidden * items[negatives]).sum(dim=1)
        fn = torch.nn.functional.binary_cross_entropy_with_logits
        return fn(pos, torch.ones_like(pos)) + fn(neg, torch.zeros_like(neg))


class BERT4Rec(_SequentialRecommender):
    name = "bert4rec"
    causal = False

    def _examples(self, rng: np.random.Generator, seqs: list[IntArray]) -> tuple[IntArray, IntArray]:
        cfg = self.config
        mask_token = self.n_items + 1
        cuts = [w for s in seqs for w in windows(s, cfg.max_len)]
        inputs = _left_pad(cuts, cfg.max_len)
        real = inputs > 0
        masked = (rng.random(inputs.shape) < cfg.mask_prob) & real
        # At least one masked position per window: its last item, which is also what scoring asks for.
        masked[:, -1] |= real[:, -1]
        targets = np.where(masked, inputs, 0)
        return np.where(masked, mask_token, inputs), targets

    def _query(self, sequence: IntArray) -> IntArray:
        return np.append(sequence[-(self.config.max_len - 1) :], self.n_items + 1)
