"""``LLMRec``: the paper's model on our data, behind the evaluation harness's ``Recommender`` contract.

Three parts (see each module): the user preference module (``profiles``), the branch features over a
collaborative (EASE) and a semantic (language-model item vectors, and the same vectors aligned with
co-consumption by the behaviour map, ``behaviour``) branch (``features``), and the fusion layer trained with
the pairwise hinge loss (``network``, ``training``).

Variants (the harness registers them for ``llmrec eval --models`` in ``research.llmrec_specs``):

- ``llmrec``: hybrid fusion, dynamic preference profiles, MiniLM item vectors;
- ``llmrec-no-pref``: the preference module replaced by uniform weights (every history item 1: no
  ratings, no completion, no decay), both in the profile vector and in the weighted collaborative row;
- ``llmrec-no-lm``: no language-model vectors: learned item ID embeddings instead, the text features
  (semantic cosine, behaviour score), text candidates and text-borrowed scores off;
- ``llmrec-no-fusion``: no fusion layer and no training: collaborative + semantic branch scores added;
- ``llmrec-dense-ease``: the collaborative branch on EASE's dense matrix (the model before it was pruned);
- ``llmrec-exhaustive``: llmrec's trained layer scoring every unseen item (no candidate stage).
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
    N_FEATURES,
    TEXT_EXPONENT,
    TEXT_NEIGHBOURS,
    ItemSide,
    UserInputs,
    collab_scores,
    fallback_scores,
    universe_features,
)
from ranker.model.memo import fingerprint, memo
from ranker.model.network import Fusion, FusionNet
from ranker.model.profiles import ProfileKind, history_weights, preference_vectors
from ranker.model.side_info import SideInformation, side_from_context
from ranker.model.training import TrainingConfig, hold_back, sample_negatives, train_pairwise
from ranker.model.two_stage import (
    PAD,
    CatalogueView,
    Generators,
    UniverseCatalogue,
    rank_candidates,
    select_candidates,
)
from ranker.preferences import DecayPolicy

FloatMatrix = npt.NDArray[np.float32]

SCORE_BATCH = 64  # users scored together
# Score offset of the items outside the candidate set: far below any fusion score (z-score inputs).
OUTSIDE = -1000.0


@dataclass(frozen=True, eq=False)
class Stacking:
    """The fusion layer's training inputs (``LLMRec._stacking``)."""

    held: FloatMatrix  # [users, items] held-back positives
    inputs: UserInputs  # from the base part
    side: ItemSide  # fitted on the base part
    features: npt.NDArray[np.float32]  # [users, items, F] over the base part's universe


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
    n_cold: int = 20  # ... and by the behaviour query among cold items (``two_stage.Generators``)
    n_text: int = 20  # ... and by the content k-NN score
    # Entries kept per column of EASE's matrix (0: dense, the ablation), and the most interacted-with
    # items it is fitted on (0: all; the inverse is cubic in that count): ``features.collaborative_matrix``.
    neighbours: int = 50
    collab_items: int = 10_000
    # Learned item ID embeddings beside the text projection (``network``); the no-lm ablation keeps them.
    item_ids: bool = False
    # Ridge strength of the behaviour map (``behaviour.fit_behaviour_map``; relative, so scale-free).
    behaviour_reg: float = 3e-6
    # The content k-NN branch (``features.text_knn_matrix``): warm text neighbours per item and exponent.
    text_neighbours: int = TEXT_NEIGHBOURS
    text_exponent: float = TEXT_EXPONENT
    # Ablation: the trained layer scores every unseen item, no candidate stage (training is unchanged), to
    # measure what the candidate stage loses.
    exhaustive: bool = False
    training: TrainingConfig = field(default_factory=TrainingConfig)
    seed: int = 42

    def generators(self) -> Generators:
        """The candidate generators; the no-lm ablation has no text-based one."""
        return Generators(self.n_collab, self.n_semantic, self.n_cold, self.n_text, text=self.use_lm)

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
    # The collaborative branch before issue 14: EASE's dense matrix (every column kept).
    "llmrec-dense-ease": LLMRecConfig(neighbours=0),
    "llmrec-exhaustive": LLMRecConfig(exhaustive=True),
}


class LLMRec(Recommender):
    name = "llmrec"
    ranks_within_allowed = True

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
        return new_net(self.config, self.side_info.dim, n_items)

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
        vectors, c = self.side_info.item_vectors, self.config
        text = (c.text_neighbours, c.text_exponent)
        key = (
            "item_side",
            fingerprint(train, vectors),
            c.reg,
            c.neighbours,
            c.collab_items,
            c.behaviour_reg,
            text,
        )
        return memo(
            key,
            lambda: ItemSide.fit(train, vectors, c.reg, c.neighbours, c.collab_items, c.behaviour_reg, *text),
        )

    def _catalogue(self) -> UniverseCatalogue:
        vectors = self.side_info.item_vectors
        return memo(("catalogue", fingerprint(vectors)), lambda: UniverseCatalogue(vectors))

    def _stacking(self, train: FloatMatrix) -> Stacking:
        """Held-back positives, base-part user inputs, item side and features (memoised: TPE trials share
        them). A ``training.cold_share`` of the items lose every base interaction, so the layer learns to
        rank items that have only their text, as a new catalogue item has (dropout of the collaborative
        side, as DropoutNet trains for cold start)."""
        c = self.config

        def compute() -> Stacking:
            base, held = hold_back(train, c.training.holdout_share, np.random.default_rng(c.seed))
            active = np.flatnonzero(base.sum(axis=0) > 0)
            n_cold = round(c.training.cold_share * active.size)
            cold = np.random.default_rng(c.seed + 2).choice(active, size=n_cold, replace=False)
            base[:, cold] = 0.0
            inputs = self.user_inputs(base)
            side = self._item_side(base)
            return Stacking(held, inputs, side, universe_features(inputs, side))

        key = (
            "stacking",
            fingerprint(train),
            self._side_key(),
            c.reg,
            c.neighbours,
            c.collab_items,
            c.behaviour_reg,
            c.text_neighbours,
            c.text_exponent,
            c.profile,
            c.seed,
            c.training.holdout_share,
            c.training.cold_share,
        )
        return memo(key, compute)

    def _fit_fusion(self, train: FloatMatrix) -> None:
        c = self.config
        rng = np.random.default_rng(c.seed + 1)
        stacking = self._stacking(train)
        held, inputs, features = stacking.held, stacking.inputs, stacking.features
        candidates = self._candidate_mask(inputs, stacking.side)
        pos_users, pos_items = np.nonzero((held > 0) & candidates)
        if c.training.cold_repeats > 1:
            cold = np.flatnonzero(~stacking.side.warm[pos_items])
            extra = np.repeat(cold, c.training.cold_repeats - 1)
            pos_users, pos_items = np.r_[pos_users, pos_users[extra]], np.r_[pos_items, pos_items[extra]]
        negatives = sample_negatives(candidates, train, pos_users.astype(np.int64), c.training, rng)
        self._cold_negatives(candidates, train, stacking.side, pos_users, pos_items, negatives, rng)
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
            id_rows(stacking.side),
            progress=self.progress,
        )

    def _cold_negatives(
        self,
        candidates: npt.NDArray[np.bool_],
        train: FloatMatrix,
        side: ItemSide,
        pos_users: npt.NDArray[np.int64],
        pos_items: npt.NDArray[np.int64],
        negatives: IntArray,
        rng: np.random.Generator,
    ) -> None:
        """Positives on cold items (no collaborative column in the base) are contrasted with other cold
        candidates, in place: with negatives drawn from every candidate they would only teach where cold
        items stand against warm ones, never which cold item comes first."""
        cold_pool = candidates & ~side.warm[None, :]
        has_other = (cold_pool & (train <= 0)).sum(axis=1) > 0
        chosen = np.flatnonzero(~side.warm[pos_items] & has_other[pos_users])
        if chosen.size:
            negatives[chosen] = sample_negatives(
                cold_pool, train, pos_users[chosen].astype(np.int64), self.config.training, rng
            )

    # -- scoring --------------------------------------------------------------------------------------------

    def _candidate_mask(self, inputs: UserInputs, side: ItemSide) -> npt.NDArray[np.bool_]:
        """[users, n_items] the candidates the served function would re-rank for these users (training
        pairs are drawn from them, so the layer learns to order what it will re-rank)."""
        c = self.config
        seen = inputs.history_binary > 0
        mask = np.zeros(seen.shape, dtype=np.bool_)
        for start in range(0, inputs.size, SCORE_BATCH):
            batch = inputs.take(np.arange(start, min(inputs.size, start + SCORE_BATCH)))
            rows = select_candidates(
                batch,
                collab_scores(batch, side),
                self._catalogue(),
                ~seen[start : start + batch.size],
                c.generators(),
                side,
            )
            users = np.repeat(np.arange(batch.size), rows.shape[1])
            flat = rows.ravel()
            mask[start + users[flat >= 0], flat[flat >= 0]] = True
        return mask

    def score_inputs(self, inputs: UserInputs, allowed: npt.NDArray[np.bool_] | None = None) -> FloatMatrix:
        """Scores of every universe item for a batch of users: [b, n_items] (``score_universe``), the
        candidates generated among ``allowed`` items (default: the unseen ones)."""
        return score_universe(self.net, self.item_side, self.config, inputs, self._catalogue(), allowed)

    def _score(self, users: IntArray) -> FloatMatrix:
        return self._score_batches(users, None)

    def score_within(self, users: IntArray, allowed: npt.NDArray[np.bool_]) -> FloatMatrix:
        return self._score_batches(np.asarray(users, dtype=np.int64), allowed)

    def _score_batches(self, users: IntArray, allowed: npt.NDArray[np.bool_] | None) -> FloatMatrix:
        out = np.empty((users.size, self.item_side.n_items), dtype=np.float32)
        # Scoring every item gathers [batch, n_items, dim] vectors: a few users at a time.
        step = 4 if self.config.exhaustive else SCORE_BATCH
        for start in range(0, users.size, step):
            batch = users[start : start + step]
            part = None if allowed is None else allowed[start : start + batch.size]
            out[start : start + batch.size] = self.score_inputs(self._batch_inputs(batch), part)
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


def new_net(config: LLMRecConfig, dim: int, n_items: int) -> FusionNet:
    """An untrained fusion layer for ``config`` over ``n_items`` universe items with ``dim``-d vectors."""
    c = config
    return FusionNet(
        N_FEATURES,
        dim,
        c.d,
        c.hidden,
        c.dropout,
        c.fusion,
        id_items=n_items if c.item_ids or not c.use_lm else None,
        text=c.use_lm,
    )


def id_rows(side: ItemSide) -> IntArray:
    """[n_universe] each item's ID-embedding row: itself, or -1 for an item with no collaborative column
    (no interactions to learn an ID vector from: its text speaks for it)."""
    return np.where(side.warm, np.arange(side.n_items), -1).astype(np.int64)


def score_universe(
    net: FusionNet,
    side: ItemSide,
    config: LLMRecConfig,
    inputs: UserInputs,
    catalogue: CatalogueView,
    allowed: npt.NDArray[np.bool_] | None = None,
) -> FloatMatrix:
    """The served function (``two_stage.rank_candidates``) as the harness's dense score matrix
    [b, n_items]: each candidate gets its fused score; every other unseen item ``OUTSIDE + collab``, i.e.
    after all candidates in the collaborative branch's order (``features.fallback_scores``: a cold item's
    borrowed from its text neighbours); online every answer is a candidate (``LearnedRanker.rank``)."""
    unseen = inputs.history_binary <= 0
    allowed = unseen if allowed is None else allowed & unseen
    # Exhaustive (the ablation): every allowed item is a collaborative candidate.
    generators = config.generators().at_least(side.n_items) if config.exhaustive else config.generators()
    ranked = rank_candidates(net, side, inputs, catalogue, allowed, generators)
    fallback = fallback_scores(inputs, side, ranked.collab, config.use_lm)
    scores: FloatMatrix = (OUTSIDE + fallback).astype(np.float32)
    users = np.repeat(np.arange(inputs.size), ranked.rows.shape[1])
    flat = ranked.rows.ravel()
    keep = flat != PAD
    scores[users[keep], catalogue.to_universe[flat[keep]]] = ranked.scores.ravel()[keep]
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
