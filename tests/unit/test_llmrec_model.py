"""The llmrec model on small synthetic data: preference module, training pieces, variants, artifacts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llmrec.preference_state import PreferenceState
from ranker.model.features import (
    COLLAB,
    COLLAB_PREF,
    SEMANTIC,
    ItemSide,
    UserInputs,
    candidate_mask,
    universe_features,
)
from ranker.model.network import Fusion
from ranker.model.profiles import (
    ProfileKind,
    decay_factors,
    history_weights,
    interaction_strengths,
    preference_vectors,
)
from ranker.model.recommender import VARIANTS, LLMRec, variant
from ranker.model.serving import OutdatedRanker, is_outdated, load_current, save_ranker
from ranker.model.side_info import SideInformation
from ranker.model.training import TrainingConfig, hold_back, sample_negatives
from ranker.preferences import (
    Contribution,
    DecayPolicy,
    SignalWeights,
    apply_contributions,
    rating_signal,
    user_vector,
)
from research.baselines import EASE
from research.registry import BASELINES, MODEL_SPECS

DAY = 24 * 3600.0


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models: thread start-up and contention on a shared machine cost more than the maths."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def synthetic(
    n_users: int = 40, n_items: int = 30, dim: int = 8, seed: int = 0
) -> tuple[np.ndarray, SideInformation]:
    """Users prefer one of three item clusters; item vectors cluster the same way: both branches inform."""
    rng = np.random.default_rng(seed)
    cluster = np.arange(n_items) % 3
    centres = rng.normal(size=(3, dim))
    vectors = centres[cluster] + 0.3 * rng.normal(size=(n_items, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    taste = np.arange(n_users) % 3
    p = np.where(cluster[None, :] == taste[:, None], 0.6, 0.08)
    train = (rng.random((n_users, n_items)) < p).astype(np.float32)
    train[np.arange(n_users), np.arange(n_users) % n_items] = 1.0
    ratings = np.where(train > 0, rng.integers(1, 11, size=train.shape), np.nan).astype(np.float32)
    times = np.where(train > 0, rng.uniform(0, 400 * DAY, size=train.shape), np.nan).astype(np.float32)
    return train, SideInformation(vectors.astype(np.float32), ratings, times, "synthetic")


def small(name: str = "llmrec", n_users: int = 40, **overrides: Any) -> LLMRec:
    _, side = synthetic(n_users=n_users)
    params = {"n_collab": 10, "n_semantic": 5, "reg": 5.0, "training.epochs": 3, **overrides}
    return LLMRec(side, variant(name, 7, **params), name=name)


def test_strengths_follow_the_stream_signals() -> None:
    train = np.array([[1, 1, 0]], np.float32)
    ratings = np.array([[10.0, np.nan, 3.0]], np.float32)
    w = SignalWeights()
    got = interaction_strengths(train, ratings, w)
    watched = w.viewing + w.completion
    assert got[0].tolist() == pytest.approx([watched + rating_signal(10.0, w), watched, 0.0])


def test_dynamic_profile_equals_the_stream_folding_events_in_time_order() -> None:
    train, side = synthetic(n_users=3, n_items=12)
    weights = history_weights(train, side.ratings, side.timestamps, ProfileKind.DYNAMIC)
    offline = preference_vectors(weights, side.item_vectors)
    strengths = interaction_strengths(train, side.ratings)
    for u in range(3):
        state = PreferenceState.empty(side.dim)
        for i in np.argsort(side.timestamps[u]):  # NaN (not interacted) sorts last and is skipped
            if train[u, i] > 0:
                c = Contribution(side.item_vectors[i], float(strengths[u, i]), float(side.timestamps[u, i]))
                state = apply_contributions(state, [c], DecayPolicy())
        np.testing.assert_allclose(offline[u], user_vector(state), atol=2e-5)


def test_static_profile_has_no_decay_and_uniform_ignores_signals() -> None:
    train, side = synthetic(n_users=2)
    static = history_weights(train, side.ratings, side.timestamps, ProfileKind.STATIC)
    np.testing.assert_allclose(static, interaction_strengths(train, side.ratings))
    uniform = history_weights(train, side.ratings, side.timestamps, ProfileKind.UNIFORM)
    assert set(np.unique(uniform).tolist()) == {0.0, 1.0}
    factors = decay_factors(train, side.timestamps, DecayPolicy())
    assert factors.max() == pytest.approx(1.0) and factors[train > 0].min() < 1.0


def test_features_standardise_per_user_and_candidates_exclude_history() -> None:
    train, side = synthetic()
    item_side = ItemSide.fit(train, side.item_vectors, reg=5.0)
    weights = history_weights(train, side.ratings, side.timestamps, ProfileKind.DYNAMIC)
    feats = universe_features(
        UserInputs(preference_vectors(weights, side.item_vectors), train, weights), item_side
    )
    assert feats.shape == (*train.shape, 5)
    np.testing.assert_allclose(feats[..., SEMANTIC].mean(axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(feats[..., COLLAB_PREF].std(axis=1), 1.0, atol=1e-3)
    cands = candidate_mask(feats, train, 5, 3)
    assert not (cands & (train > 0)).any()
    assert (cands.sum(axis=1) >= np.minimum(5, (train == 0).sum(axis=1))).all()
    # Retrieval reads the binary collaborative branch: its 5 best unseen items are all candidates.
    best_collab = np.argsort(-np.where(train > 0, -np.inf, feats[..., COLLAB]), axis=1)[:, :5]
    assert np.take_along_axis(cands, best_collab, axis=1).all()


def test_hold_back_and_negatives_stay_inside_the_training_rules() -> None:
    train, _ = synthetic()
    rng = np.random.default_rng(1)
    base, held = hold_back(train, 0.2, rng)
    np.testing.assert_array_equal(base + held, train)
    candidates = rng.random(train.shape) < 0.5
    candidates[:, 0] = train[:, 0] == 0
    users = np.flatnonzero((candidates & (train == 0)).sum(axis=1) > 0)
    negs = sample_negatives(candidates, train, users, TrainingConfig(negatives=4), rng)
    assert negs.shape == (users.size, 4)
    assert (train[users[:, None], negs] == 0).all() and candidates[users[:, None], negs].all()


def test_every_variant_fits_and_scores_and_training_is_deterministic() -> None:
    train, _ = synthetic()
    users = np.arange(train.shape[0])
    one_epoch: dict[str, Any] = {"training.epochs": 1}
    for name in VARIANTS:
        scores = small(name, **one_epoch).fit(train).score(users)
        assert scores.shape == train.shape and np.isfinite(scores).all()
    again = [small("llmrec", **one_epoch).fit(train).score(users) for _ in range(2)]
    np.testing.assert_array_equal(again[0], again[1])


def test_hinge_training_lowers_the_loss_and_beats_chance() -> None:
    train, _ = synthetic(n_users=60)
    epochs: dict[str, Any] = {"training.epochs": 5}
    model = small("llmrec", 60, **epochs).fit(train)
    assert model.losses[-1] < model.losses[0]
    # Items of the user's cluster should outrank the others among unseen items.
    scores = np.where(train > 0, -np.inf, model.score(np.arange(train.shape[0])))
    top = np.argmax(scores, axis=1)
    assert np.mean(top % 3 == np.arange(train.shape[0]) % 3) > 0.6


def test_no_fusion_is_the_plain_sum_of_branch_scores() -> None:
    train, _ = synthetic()
    model = small("llmrec-no-fusion").fit(train)
    feats = universe_features(model._batch_inputs(np.arange(3)), model.item_side)
    scores = model.score(np.arange(3))
    cands = candidate_mask(feats, train[:3], 10, 5)
    np.testing.assert_allclose(
        scores[cands], (feats[..., COLLAB_PREF] + feats[..., SEMANTIC])[cands], rtol=1e-5
    )


def test_collaborative_branch_is_ease() -> None:
    train, side = synthetic()
    ease = EASE(reg=5.0).fit(train)
    item_side = ItemSide.fit(train, side.item_vectors, reg=5.0)
    np.testing.assert_allclose(train @ item_side.ease, ease.score(np.arange(train.shape[0])), atol=1e-4)


def test_collaborative_branch_and_ease_baseline_share_one_matrix() -> None:
    train, side = synthetic()
    item_side = ItemSide.fit(train, side.item_vectors, reg=5.0)
    np.testing.assert_array_equal(item_side.ease, EASE(reg=5.0).fit(train)._item_matrix())


def test_artifact_round_trip_serves_the_offline_scores(tmp_path: Path) -> None:
    train, side = synthetic()
    model = small().fit(train)
    item_ids = list(range(100, 100 + train.shape[1]))
    save_ranker(model, item_ids, tmp_path, {"dataset": "synthetic"})
    served = load_current(tmp_path)
    assert served is not None and served.version.startswith("llmrec-")
    offline = model.score(np.arange(5))
    strengths = interaction_strengths(train, side.ratings)
    for u in range(5):
        seen = [
            (item_ids[i], float(strengths[u, i]), float(side.timestamps[u, i]))
            for i in np.flatnonzero(train[u])
        ]
        ref = float(np.nanmax(side.timestamps[u]))
        inputs = served.online_inputs(model._inputs.preference[u], seen, ref)
        np.testing.assert_allclose(served.score(inputs), offline[u], rtol=1e-4, atol=1e-4)


def test_load_current_is_none_without_a_trained_ranker(tmp_path: Path) -> None:
    assert load_current(tmp_path) is None


def test_registry_lists_the_model_and_its_ablations() -> None:
    for name in ("llmrec", "llmrec-no-pref", "llmrec-no-lm", "llmrec-no-fusion"):
        assert name in MODEL_SPECS and name not in BASELINES
        model = MODEL_SPECS[name].factory()(3)
        assert isinstance(model, LLMRec) and model.name == name


def test_fold_in_scores_new_users_from_their_history() -> None:
    train, side = synthetic()
    known = SideInformation(side.item_vectors, side.ratings[:30], side.timestamps[:30], "first 30 users")
    config = variant("llmrec", 7, n_collab=10, n_semantic=5, reg=5.0, **{"training.epochs": 1})
    model = LLMRec(known, config).fit(train[:30])
    scores = model.score_history(train[30:])
    assert scores.shape == (10, train.shape[1]) and np.isfinite(scores).all()
    # A new user's own cluster should lead their ranking more often than chance (1 in 3).
    top = np.argmax(np.where(train[30:] > 0, -np.inf, scores), axis=1)
    assert np.mean(top % 3 == np.arange(30, 40) % 3) > 0.5


def test_tuned_values_from_json_become_enums() -> None:
    config = variant("llmrec", 1, fusion="early", profile="static", **{"training.lr": 0.01})
    assert config.fusion is Fusion.EARLY and config.profile is ProfileKind.STATIC
    assert config.training.lr == 0.01 and config.seed == 1


def test_a_ranker_saved_before_catalogue_ids_is_refused_as_outdated(tmp_path: Path) -> None:
    train, _ = synthetic()
    folder = save_ranker(small().fit(train), list(range(100, 100 + train.shape[1])), tmp_path, {})
    assert not is_outdated(folder)
    meta_path = folder / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["universe_ids"]  # as a ranker saved with MAL anime ids has it
    meta_path.write_text(json.dumps(meta))
    assert is_outdated(folder)
    with pytest.raises(OutdatedRanker, match="train it again"):
        load_current(tmp_path)
