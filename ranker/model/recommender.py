"""``LLMRec``: the paper's model on our data, behind the evaluation harness's ``Recommender`` contract.

Three parts (see each module): the user preference module (``profiles``), the branch features over a
collaborative (EASE) and a semantic (language-model item vectors) branch (``features``), and the fusion
layer trained with the pairwise hinge loss (``network``, ``training``).

Variants (the harness registers them for ``llmrec eval --models`` in ``research.llmrec_specs``):

- ``llmrec``: hybrid fusion, dynamic preference profiles, MiniLM item vectors;
- ``llmrec-no-pref``: the preference module replaced by uniform weights (every history item 1: no
  ratings, no completion, no decay), both in the profile vector and in the weighted collaborative row;
- ``llmrec-no-lm``: no language-model vectors: learned item ID embeddings instead, semantic cosine off;
- ``llmrec-no-fusion``: no fusion layer and no training: collaborative + semantic branch scores added.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from ranker.interactions import IntArray
from ranker.model.base import Recommender
from ranker.model.features import (
    COLLAB,
    N_FEATURES,
    ItemSide,
    UserInputs,
    candidate_mask,
    universe_features,
)
from ranker.model.memo import fingerprint, memo
from ranker.model.network import Fusion, FusionNet
from ranker.model.profiles import ProfileKind, history_weights, preference_vectors
from ranker.model.side_info import SideInformation, side_from_context
from ranker.model.training import TrainingConfig, hold_back, sample_negatives, train_pairwise
from ranker.preferences import DecayPolicy

FloatMatrix = npt.NDArray[np.float32]

# Score offset of the items outside the candidate set: far below any fusion score (z-score inputs).
OUTSIDE = -1000.0


@dataclass(frozen=True)
class LLMRecConfig:
    fusion: Fusion = Fusion.HYBRID
    profile: ProfileKind = ProfileKind.DYNAMIC
    use_lm: bool = True
    reg: float = 200.0  # EASE ridge strength of the collaborative branch
    d: int = 16  # joint space of the semantic representations
    hidden: int = 32
    dropout: float = 0.1
    n_collab: int = 50  # candidates retrieved by the collaborative branch
    n_semantic: int = 10  # ... and by the semantic branch
    training: TrainingConfig = field(default_factory=TrainingConfig)
    seed: int = 42

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["fusion"] = self.fusion.value
        out["profile"] = self.profile.value
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LLMRecConfig:
        values = dict(raw)
        values["fusion"] = Fusion(values["fusion"])
        values["profile"] = ProfileKind(values["profile"])
        values["training"] = TrainingConfig(**values["training"])
        return cls(**values)


VARIANTS: dict[str, LLMRecConfig] = {
    "llmrec": LLMRecConfig(),
    "llmrec-no-pref": LLMRecConfig(profile=ProfileKind.UNIFORM),
    "llmrec-no-lm": LLMRecConfig(use_lm=False),
    "llmrec-no-fusion": LLMRecConfig(fusion=Fusion.NONE),
}


class LLMRec(Recommender):
    name = "llmrec"

    def __init__(
        self,
        side: SideInformation | None = None,
        config: LLMRecConfig | None = None,
        *,
        progress: bool = False,
        name: str = "llmrec",
    ) -> None:
        """``side`` None: taken at fit time from the harness's ``FitContext`` (its item text features and
        the training rows' ratings and timestamps)."""
        super().__init__()
        self.name = name
        self._side = side
        self.config = config or LLMRecConfig()
        self.progress = progress
        self.losses: list[float] = []
        self.decay = DecayPolicy()

    # -- user inputs ----------------------------------------------------------------------------------------

    def user_inputs(self, train: FloatMatrix, users: IntArray | None = None) -> UserInputs:
        """Inputs of the given users (all by default) from a training matrix and the side information."""
        rows = slice(None) if users is None else users
        known = train[rows]
        weights = history_weights(
            known,
            self.side_info.ratings[rows],
            self.side_info.timestamps[rows],
            self.config.profile,
            decay=self.decay,
        )
        preference = preference_vectors(weights, self.side_info.item_vectors)
        return UserInputs(preference, (known > 0).astype(np.float32), weights)

    # -- fitting --------------------------------------------------------------------------------------------

    def _new_net(self, n_items: int) -> FusionNet:
        c = self.config
        return FusionNet(
            N_FEATURES,
            self.side_info.dim,
            c.d,
            c.hidden,
            c.dropout,
            c.fusion,
            id_items=None if c.use_lm else n_items,
        )

    @property
    def side_info(self) -> SideInformation:
        if self._side is None:
            raise RuntimeError("llmrec has no side information: pass it or fit through the harness")
        return self._side

    def _fit(self, train: FloatMatrix) -> None:
        c = self.config
        if self._side is None:
            self._side = side_from_context(self._context, train.shape)
        torch.manual_seed(c.seed)
        self.net = self._new_net(train.shape[1])
        if c.fusion is not Fusion.NONE:
            self._fit_fusion(train)
        self.net.eval()
        # Final branches on the whole training matrix; the fusion layer carries over from the base fit.
        self.item_side = self._item_side(train)
        self._train = train
        self._inputs = self.user_inputs(train)

    def _side_key(self) -> str:
        side = self.side_info
        return fingerprint(side.item_vectors, side.ratings, side.timestamps)

    def _item_side(self, train: FloatMatrix) -> ItemSide:
        vectors, reg = self.side_info.item_vectors, self.config.reg
        key = ("item_side", fingerprint(train, vectors), reg)
        return memo(key, lambda: ItemSide.fit(train, vectors, reg))

    def _stacking(self, train: FloatMatrix) -> tuple[FloatMatrix, UserInputs, npt.NDArray[np.float32]]:
        """Held-back positives, base-part user inputs and features (memoised: TPE trials share them)."""
        c = self.config

        def compute() -> tuple[FloatMatrix, UserInputs, npt.NDArray[np.float32]]:
            base, held = hold_back(train, c.training.holdout_share, np.random.default_rng(c.seed))
            inputs = self.user_inputs(base)
            return held, inputs, universe_features(inputs, self._item_side(base))

        key = (
            "stacking",
            fingerprint(train),
            self._side_key(),
            c.reg,
            c.profile,
            c.seed,
            c.training.holdout_share,
        )
        return memo(key, compute)

    def _fit_fusion(self, train: FloatMatrix) -> None:
        c = self.config
        rng = np.random.default_rng(c.seed + 1)
        held, inputs, features = self._stacking(train)
        candidates = candidate_mask(features, inputs.history_binary, c.n_collab, c.n_semantic)
        pos_users, pos_items = np.nonzero((held > 0) & candidates)
        negatives = sample_negatives(candidates, train, pos_users.astype(np.int64), c.training, rng)
        self.losses = train_pairwise(
            self.net,
            features,
            inputs.preference,
            inputs.history_weights,
            self.side_info.item_vectors,
            (pos_users.astype(np.int64), pos_items.astype(np.int64)),
            negatives,
            c.training,
            c.seed,
            progress=self.progress,
        )

    # -- scoring --------------------------------------------------------------------------------------------

    def score_inputs(self, inputs: UserInputs) -> FloatMatrix:
        """Scores of every universe item for a batch of users: [b, n_items] (``score_universe``)."""
        return score_universe(self.net, self.item_side, self.config, inputs)

    def _score(self, users: IntArray) -> FloatMatrix:
        out = np.empty((users.size, self.item_side.n_items), dtype=np.float32)
        step = 64
        for start in range(0, users.size, step):
            batch = users[start : start + step]
            out[start : start + batch.size] = self.score_inputs(self._batch_inputs(batch))
        return out

    def _score_history(self, history: FloatMatrix, sequences: Sequence[IntArray] | None) -> FloatMatrix:
        """Fold-in (protocol (d) cold): users unseen in training, scored from their given items with the
        trained layer and branches. Only the binary history is given, so each item weighs the watched
        strength (no rating, no time: the same as a stream user who completed the titles)."""
        no_signal = np.full(history.shape, np.nan, dtype=np.float32)
        kind = ProfileKind.UNIFORM if self.config.profile is ProfileKind.UNIFORM else ProfileKind.STATIC
        weights = history_weights(history, no_signal, no_signal, kind, decay=self.decay)
        inputs = UserInputs(
            preference_vectors(weights, self.side_info.item_vectors),
            (history > 0).astype(np.float32),
            weights,
        )
        return self.score_inputs(inputs)

    def _batch_inputs(self, users: IntArray) -> UserInputs:
        return self._inputs.take(users)


@torch.no_grad()
def score_universe(net: FusionNet, side: ItemSide, config: LLMRecConfig, inputs: UserInputs) -> FloatMatrix:
    """The one scoring function, offline (evaluation) and online (``serving.LearnedRanker``): scores of
    every universe item for a batch of users, [b, n_items]. Candidates (``features.candidate_mask``) get
    the fusion layer's score; every other item ``OUTSIDE + collab``, i.e. after all candidates in the
    collaborative branch's order."""
    net.eval()
    features = universe_features(inputs, side)
    candidates = candidate_mask(features, inputs.history_binary, config.n_collab, config.n_semantic)
    rows = torch.arange(side.n_items)
    user = net.user_side(torch.from_numpy(inputs.preference), torch.from_numpy(inputs.history_weights))
    item = net.item_side(torch.from_numpy(side.vectors), rows)
    fused = net(torch.from_numpy(features), user[:, None, :], item[None, :, :]).numpy()
    outside = OUTSIDE + features[..., COLLAB]
    scores: FloatMatrix = np.where(candidates, fused, outside).astype(np.float32)
    return scores


def variant(name: str, seed: int, **overrides: Any) -> LLMRecConfig:
    """The registered variant's config with a seed and any tuned values (``training.*`` keys allowed)."""
    base = VARIANTS[name]
    training = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("training.")}
    top = {k: v for k, v in overrides.items() if not k.startswith("training.")}
    # Tuned values arrive as plain strings from JSON / optuna.
    if "fusion" in top:
        top["fusion"] = Fusion(top["fusion"])
    if "profile" in top:
        top["profile"] = ProfileKind(top["profile"])
    return replace(base, seed=seed, training=replace(base.training, **training), **top)
