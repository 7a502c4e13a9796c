"""The integration (fusion) layer: turns branch features and semantic representations into one score.

Inputs per (user, item): the standardised branch features ``x`` [F] (``features.FEATURES``) and the two
semantic representations, user ``u`` and item ``v`` (both [dim]). A learned projection ``A`` (dim -> d)
maps both into a small joint space, ``h = (A u) * (A v)`` (elementwise, [d]).

- **late** fusion: every branch scores on its own and the scores are mixed by learned scalars,
  ``s = w . x + c * sum(h) + b``: no interaction between branches before scoring.
- **early** fusion: the representations are concatenated *before* scoring and one network scores them,
  ``s = MLP([x, h])`` (one hidden ReLU layer, dropout).
- **hybrid** fusion: both, trained jointly, ``s = late(x, h) + early(x, h)``: the late path keeps each
  branch's own ranking available, the early path learns where they disagree.
- **none** (the ``llmrec-no-fusion`` ablation): no fusion layer and no training; the collaborative and
  semantic branch scores are added with unit weights, ``s = x[collab_pref] + x[semantic]``.

With ``id_items`` the representations also carry learned item ID embeddings [n_items, d] (the user side
adds the history-weighted mean of them, like FISM; an item with no interactions has none). Without
``text`` (the ``llmrec-no-lm`` ablation) there is no projection of the language model's vectors and the
text feature columns (``semantic``, ``behaviour``) are zeroed: ID embeddings and collaborative features
only, so the ablation differs from ``llmrec`` by the language model alone.
"""

from __future__ import annotations

from enum import StrEnum

import torch
from torch import nn

from ranker.model.features import COLD as COLD_COLUMN
from ranker.model.features import COLLAB as COLLAB_COLUMN
from ranker.model.features import COLLAB_PREF as COLLAB_PREF_COLUMN
from ranker.model.features import SEMANTIC as SEMANTIC_COLUMN
from ranker.model.features import TEXT_FEATURES


class Fusion(StrEnum):
    EARLY = "early"
    LATE = "late"
    HYBRID = "hybrid"
    NONE = "none"


class FusionNet(nn.Module):
    def __init__(
        self,
        n_features: int,
        semantic_dim: int,
        d: int,
        hidden: int,
        dropout: float,
        fusion: Fusion,
        id_items: int | None = None,
        text: bool = True,
    ) -> None:
        super().__init__()
        self.fusion = fusion
        self.id_items = id_items
        self.text = text
        if id_items is not None:
            # Row id_items is the padding row for items outside the universe: always zero.
            self.item_ids = nn.Embedding(id_items + 1, d, padding_idx=id_items)
            nn.init.normal_(self.item_ids.weight, std=0.1)
            with torch.no_grad():
                self.item_ids.weight[id_items].zero_()
        if text:
            self.project = nn.Linear(semantic_dim, d, bias=False)
        self.late = nn.Linear(n_features + 1, 1)
        # The late path's weights for cold items (``features.COLD`` = 1), added to the warm ones: the best
        # mix for an item known only by its text (text neighbours, behaviour) is not the one for an item
        # with interactions (collaborative first), and one linear layer cannot hold both.
        self.cold_late = nn.Linear(n_features + 1, 1)
        self.early = nn.Sequential(
            nn.Linear(n_features + d, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1)
        )
        # Start from the collaborative branch's own ranking (the strongest single signal): the late path
        # weighs only ``collab`` and the early path's output layer starts at zero, so training moves away
        # from that ranking only where the pairs say so.
        with torch.no_grad():
            self.late.weight.zero_()
            self.late.weight[0, COLLAB_COLUMN] = 1.0
            self.late.bias.zero_()
            self.cold_late.weight.zero_()
            self.cold_late.bias.zero_()
            if fusion is Fusion.HYBRID:
                last = self.early[-1]
                assert isinstance(last, nn.Linear)
                last.weight.zero_()
                last.bias.zero_()

    def user_side(self, preference: torch.Tensor, history_weights: torch.Tensor) -> torch.Tensor:
        """[b, d]: the projected preference vector plus the weighted mean of the history's learned ID
        vectors (FISM), each where the net has it."""
        out = torch.zeros(preference.shape[0], self._d(), dtype=preference.dtype)
        if self.id_items is not None:
            ids = self.item_ids.weight[: self.id_items]
            total = history_weights.abs().sum(dim=1, keepdim=True).clamp(min=1e-6)
            out = out + (history_weights @ ids) / total
        if self.text:
            out = out + self.project(preference)
        return out

    def item_side(self, vectors: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """[..., d] for items given by semantic vectors and ID rows (-1: no ID vector, as for an item with
        no interactions): the projected vector plus the learned ID vector, each where the net has it."""
        out = torch.zeros(*rows.shape, self._d(), dtype=vectors.dtype)
        if self.id_items is not None:
            safe = torch.where(rows >= 0, rows, torch.full_like(rows, self.id_items))
            out = out + self.item_ids(safe)
        if self.text:
            out = out + self.project(vectors)
        return out

    def _d(self) -> int:
        return int(self.item_ids.embedding_dim if self.id_items is not None else self.project.out_features)

    def forward(self, features: torch.Tensor, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """Scores of shape ``features.shape[:-1]``; ``user`` and ``item`` broadcast to ``[..., d]``."""
        if not self.text:
            features = features.clone()
            features[..., list(TEXT_FEATURES)] = 0.0
        if self.fusion is Fusion.NONE:
            return features[..., COLLAB_PREF_COLUMN] + features[..., SEMANTIC_COLUMN]
        h = user * item
        late_in = torch.cat([features, h.sum(dim=-1, keepdim=True)], dim=-1)
        late: torch.Tensor = self.late(late_in) + features[..., COLD_COLUMN, None] * self.cold_late(late_in)
        late = late.squeeze(-1)
        if self.fusion is Fusion.LATE:
            return late
        early: torch.Tensor = self.early(torch.cat([features, h], dim=-1)).squeeze(-1)
        if self.fusion is Fusion.EARLY:
            return early
        hybrid: torch.Tensor = early + late
        return hybrid
