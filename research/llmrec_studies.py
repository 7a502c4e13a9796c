"""The llmrec report's measurements that fit models (``llmrec_report.run_report`` runs them, protocol (a)
= per-user random 80/10/10, full ranking, test part, unless said otherwise):

- ``branch_table``: each input of the fusion layer used alone as the ranking (``BranchAlone``);
- ``fusion_table`` (Table 3): early, late and hybrid fusion (``network`` defines them);
- ``profile_study`` (Figure 3): static vs dynamic profiles, the semantic branch alone (``SemanticProfile``,
  rank by cosine to the profile) and the whole model, P@K and NDCG@K;
- ``inference_timing`` (Figure 7): fit and scoring time against data size;
- ``case_study``: a user picked for their genres, our top 10 against a baseline's with popularity ranks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from ranker.interactions import InteractionData
from ranker.model.base import FitContext, Recommender
from ranker.model.features import FEATURES, universe_features
from ranker.model.network import Fusion
from ranker.model.profiles import ProfileKind, history_weights, preference_vectors
from ranker.model.recommender import LLMRec, variant
from ranker.model.side_info import SideInformation
from research.evaluate import ModelFactory, evaluate_model
from research.scaling import inference_time_curve
from research.splits import Part, Split

FloatMatrix = npt.NDArray[np.float32]
KS = (5, 10, 20)


class SemanticProfile(Recommender):
    """The semantic branch alone: cosine between the user's profile (static or dynamic) and each item."""

    name = "semantic-profile"

    def __init__(self, side: SideInformation, kind: ProfileKind) -> None:
        super().__init__()
        self.side = side
        self.kind = kind

    def _fit(self, train: FloatMatrix) -> None:
        weights = history_weights(train, self.side.ratings, self.side.timestamps, self.kind)
        self._profiles = preference_vectors(weights, self.side.item_vectors)

    def _score(self, users: npt.NDArray[np.int64]) -> FloatMatrix:
        scores: FloatMatrix = self._profiles[users] @ self.side.item_vectors.T
        return scores


class BranchAlone(Recommender):
    """One input of the fusion layer used alone as the ranking (a fitted llmrec model's feature column)."""

    def __init__(self, fitted: LLMRec, column: int) -> None:
        super().__init__()
        self.fitted = fitted
        self.column = column
        self.name = FEATURES[column]

    def _fit(self, train: FloatMatrix) -> None:
        return None

    def _score(self, users: npt.NDArray[np.int64]) -> FloatMatrix:
        out = np.empty((users.size, self.fitted.item_side.n_items), dtype=np.float32)
        for start in range(0, users.size, 64):
            batch = users[start : start + 64]
            inputs = self.fitted._batch_inputs(batch)
            out[start : start + batch.size] = universe_features(inputs, self.fitted.item_side)[
                ..., self.column
            ]
        return out


def branch_table(fitted: LLMRec, split: Split) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in range(len(FEATURES) - 1):  # activity is constant per user: it cannot rank
        model = BranchAlone(fitted, column).fit(split.train_matrix())
        out[FEATURES[column]] = evaluate_model(model, split, part=Part.TEST, ks=(10,)).metrics
    return out


def _fit_eval(model: Recommender, split: Split, ks: Sequence[int] = KS) -> dict[str, float]:
    model.fit(split.train_matrix(), FitContext(data=split.data, train_rows=split.train))
    return evaluate_model(model, split, part=Part.TEST, ks=ks).metrics


def fusion_table(
    side: SideInformation, split: Split, params: Mapping[str, Any], seed: int, hybrid: LLMRec | None = None
) -> dict[str, Any]:
    """Test metrics of early, late and hybrid fusion with the other parameters fixed (``hybrid``: an
    already fitted llmrec model, reused for the row of its own fusion kind)."""
    out: dict[str, Any] = {}
    for fusion in tqdm((Fusion.EARLY, Fusion.LATE, Fusion.HYBRID), desc="fusion variants"):
        if hybrid is not None and hybrid.config.fusion is fusion:
            out[fusion.value] = evaluate_model(hybrid, split, part=Part.TEST, ks=KS).metrics
            continue
        model = LLMRec(side, variant("llmrec", seed, **{**params, "fusion": fusion}))
        out[fusion.value] = _fit_eval(model, split)
    return out


def profile_study(
    side: SideInformation, split: Split, params: Mapping[str, Any], seed: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in (ProfileKind.STATIC, ProfileKind.DYNAMIC):
        out[f"semantic/{kind.value}"] = _fit_eval(SemanticProfile(side, kind), split)
        model = LLMRec(side, variant("llmrec", seed, **{**params, "profile": kind}))
        out[f"llmrec/{kind.value}"] = _fit_eval(model, split)
    return out


TIMED_MODELS = ("pop", "itemknn", "ease", "mf", "bpr", "ncf", "vbpr_text", "llmrec")


def inference_timing(
    factories: Mapping[str, ModelFactory],
    data: InteractionData,
    features: FloatMatrix,
    seed: int,
    shares: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
) -> list[dict[str, Any]]:
    """Figure 7: each model fitted on growing shares of the users (their interactions, protocol (a)'s
    training part; ``scaling.inference_time_curve``), with its fit time and the time to score a user over
    every item of that subset (the per-request cost)."""
    rows: list[dict[str, Any]] = []
    for name, factory in tqdm(factories.items(), desc="timing", unit="model"):
        for point in inference_time_curve(factory, data, shares, seed=seed, item_features=features):
            rows.append({"model": name, **point.as_dict()})
    return rows


def _genres(catalogue: Any, item_id: int) -> set[str]:
    item = catalogue.get(item_id) if hasattr(catalogue, "get") else None
    if item is None:
        return set()
    return set(item.genres) | set(item.themes)


def _pick_user(train: FloatMatrix, data: InteractionData, catalogue: Any, wanted: Sequence[str]) -> int:
    """The user (with at least 20 training items) whose history has the largest share of items carrying
    every genre in ``wanted`` (a single genre, or two for a cross-genre fan: each must be common)."""
    best, best_score = 0, -1.0
    for u in range(data.n_users):
        items = np.flatnonzero(train[u])
        if items.size < 20:
            continue
        tags = [_genres(catalogue, data.item_ids[i]) for i in items]
        shares = [np.mean([g in t for t in tags]) for g in wanted]
        score = float(min(shares))
        if score > best_score:
            best, best_score = u, score
    return best


def case_study(
    title: str,
    wanted: Sequence[str],
    train: FloatMatrix,
    data: InteractionData,
    catalogue: Any,
    ours: Recommender,
    baseline: Recommender,
    baseline_name: str,
) -> dict[str, Any]:
    u = _pick_user(train, data, catalogue, wanted)
    counts = train.sum(axis=0)
    pop_rank = np.empty(data.n_items, dtype=np.int64)
    pop_rank[np.argsort(-counts, kind="stable")] = np.arange(1, data.n_items + 1)

    def describe(i: int) -> dict[str, Any]:
        item = catalogue.get(data.item_ids[i])
        return {
            "item_id": data.item_ids[i],
            "title": item.title if item is not None else str(data.item_ids[i]),
            "genres": sorted(_genres(catalogue, data.item_ids[i])),
            "popularity_rank": int(pop_rank[i]),
        }

    def top10(model: Recommender) -> list[dict[str, Any]]:
        scores = model.score(np.array([u]))[0]
        scores[train[u] > 0] = -np.inf
        return [describe(int(i)) for i in np.argsort(-scores, kind="stable")[:10]]

    history = sorted(np.flatnonzero(train[u]).tolist(), key=lambda i: pop_rank[i])
    return {
        "title": title,
        "genres": list(wanted),
        "user": data.user_ids[u],
        "history_size": int(train[u].sum()),
        "history_genre_share": {
            g: float(np.mean([g in _genres(catalogue, data.item_ids[i]) for i in history])) for g in wanted
        },
        "history_sample": [describe(i) for i in history[:: max(1, len(history) // 12)][:12]],
        "llmrec": top10(ours),
        baseline_name: top10(baseline),
        "baseline": baseline_name,
    }
