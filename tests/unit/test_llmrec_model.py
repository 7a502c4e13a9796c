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
    BEHAVIOUR,
    COLD,
    COLLAB,
    COLLAB_PREF,
    N_FEATURES,
    SEMANTIC,
    TEXT_KNN,
    ItemSide,
    UserInputs,
    candidate_features,
    collab_scores,
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
from ranker.model.recommender import OUTSIDE, VARIANTS, LLMRec, variant
from ranker.model.serving import OutdatedRanker, is_outdated, load_current, save_ranker
from ranker.model.side_info import SideInformation
from ranker.model.training import TrainingConfig, hold_back, sample_negatives
from ranker.model.two_stage import IndexCatalogue
from ranker.preferences import (
    Contribution,
    DecayPolicy,
    SignalWeights,
    apply_contributions,
    rating_signal,
    user_vector,
)
from ranker.retrieval import ItemIndex
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
    assert feats.shape == (*train.shape, N_FEATURES)
    np.testing.assert_allclose(feats[..., SEMANTIC].mean(axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(feats[..., BEHAVIOUR].mean(axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(feats[..., COLLAB_PREF].std(axis=1), 1.0, atol=1e-3)
    model = small().fit(train)
    cands = model._candidate_mask(UserInputs(model._inputs.preference, train, weights), model.item_side)
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
    cands = model._candidate_mask(model._batch_inputs(np.arange(3)), model.item_side)
    assert cands.sum() > 0
    np.testing.assert_allclose(
        scores[cands], (feats[..., COLLAB_PREF] + feats[..., SEMANTIC])[cands], rtol=1e-5
    )


def test_collaborative_branch_is_ease() -> None:
    train, side = synthetic()
    ease = EASE(reg=5.0).fit(train)
    item_side = ItemSide.fit(train, side.item_vectors, reg=5.0)
    dense = item_side.neighbours.toarray()
    np.testing.assert_allclose(train @ dense, ease.score(np.arange(train.shape[0])), atol=1e-4)


def test_collaborative_branch_and_ease_baseline_share_one_matrix() -> None:
    train, side = synthetic()
    item_side = ItemSide.fit(train, side.item_vectors, reg=5.0)
    np.testing.assert_array_equal(item_side.neighbours.toarray(), EASE(reg=5.0).fit(train)._item_matrix())


def test_artifact_round_trip_serves_the_offline_scores(tmp_path: Path) -> None:
    train, side = synthetic()
    model = small().fit(train)
    item_ids = list(range(100, 100 + train.shape[1]))
    save_ranker(model, item_ids, tmp_path, {"dataset": "synthetic"})
    served = load_current(tmp_path)
    assert served is not None and served.version.startswith("llmrec-")
    offline = model.score(np.arange(5))
    strengths = interaction_strengths(train, side.ratings)
    # The API's catalogue: an item index over the same items, in the same row order.
    catalogue = IndexCatalogue(ItemIndex.build(item_ids, side.item_vectors), served.universe_ids)
    for u in range(5):
        seen = [
            (item_ids[i], float(strengths[u, i]), float(side.timestamps[u, i]))
            for i in np.flatnonzero(train[u])
        ]
        ref = float(np.nanmax(side.timestamps[u]))
        inputs = served.online_inputs(model._inputs.preference[u], seen, ref)
        ranked = served.rank(inputs, catalogue, train[u] == 0, k=10)
        rows = ranked.rows[0][:10]
        # Same items, same order and scores as the evaluation's (dense) scores of that user.
        expected = np.argsort(-np.where(train[u] > 0, -np.inf, offline[u]), kind="stable")[:10]
        np.testing.assert_array_equal(rows, expected)
        np.testing.assert_allclose(ranked.scores[0][:10], offline[u][expected], rtol=1e-4, atol=1e-4)


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


def test_candidate_features_are_the_universe_features_of_those_items() -> None:
    train, side = synthetic()
    model = small().fit(train)
    inputs = model._batch_inputs(np.arange(4))
    full = universe_features(inputs, model.item_side)
    rows = np.array([[3, 0, 7], [1, 2, 29], [5, 5, 6], [9, 8, 4]], dtype=np.int64)
    picked = candidate_features(
        inputs, model.item_side, collab_scores(inputs, model.item_side), rows, side.item_vectors[rows]
    )
    np.testing.assert_allclose(picked, np.take_along_axis(full, rows[..., None], axis=1), atol=1e-4)
    # The semantic z-score over the universe, from the vectors' moments, is the explicit one.
    cosine = inputs.preference @ side.item_vectors.T
    explicit = (cosine - cosine.mean(axis=1, keepdims=True)) / (cosine.std(axis=1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(full[..., SEMANTIC], explicit, atol=1e-4)


def test_pruned_matrix_keeps_each_columns_strongest_inputs() -> None:
    train, side = synthetic()
    dense = ItemSide.fit(train, side.item_vectors, reg=5.0).neighbours.toarray()
    pruned = ItemSide.fit(train, side.item_vectors, reg=5.0, neighbours=4).neighbours.toarray()
    assert ((pruned != 0).sum(axis=0) <= 4).all()
    for j in range(dense.shape[1]):
        kept = np.flatnonzero(pruned[:, j])
        np.testing.assert_allclose(pruned[kept, j], dense[kept, j])
        assert np.abs(dense[kept, j]).min() >= np.sort(np.abs(dense[:, j]))[-4] - 1e-7


def test_collaborative_cap_fits_the_most_popular_items_only() -> None:
    train, side = synthetic()
    counts = train.sum(axis=0)
    capped = ItemSide.fit(train, side.item_vectors, reg=5.0, max_items=10).neighbours
    used = np.unique(np.concatenate([capped.nonzero()[0], capped.nonzero()[1]]))
    assert used.size <= 10 and set(used.tolist()) <= set(np.argsort(-counts, kind="stable")[:10].tolist())


def test_an_item_outside_the_universe_is_reached_and_scored_online(tmp_path: Path) -> None:
    train, side = synthetic()
    model = small().fit(train)
    item_ids = list(range(100, 100 + train.shape[1]))
    save_ranker(model, item_ids, tmp_path, {})
    served = load_current(tmp_path)
    assert served is not None
    # A new catalogue item the ranker never saw, whose text lies on user 0's cluster (items 0, 3, 6 ...).
    new_vector = side.item_vectors[[0, 3, 6]].mean(axis=0)
    new_vector /= np.linalg.norm(new_vector)
    index = ItemIndex.build([*item_ids, 999], np.vstack([side.item_vectors, new_vector]))
    catalogue = IndexCatalogue(index, served.universe_ids)
    assert catalogue.to_universe[-1] == -1
    seen = [(item_ids[i], 1.0, 0.0) for i in np.flatnonzero(train[0])]
    inputs = served.online_inputs(model._inputs.preference[0], seen, 0.0)
    allowed = np.append(train[0] == 0, True)
    ranked = served.rank(inputs, catalogue, allowed, k=10)
    assert len(index) - 1 in ranked.rows[0].tolist()
    assert np.isfinite(ranked.scores[0][ranked.rows[0] == len(index) - 1]).all()


def test_cold_items_borrow_collaborative_scores_from_their_text_neighbours() -> None:
    train, _ = synthetic()
    train[:, 0] = 0.0  # item 0 was never interacted with: cold, though in the universe
    model = small().fit(train)
    inputs = model._batch_inputs(np.arange(6))
    assert not model.item_side.warm[0] and model.item_side.warm[1:].all()
    feats = universe_features(inputs, model.item_side)
    plain = universe_features(inputs, model.item_side, impute_cold=False)
    # Without borrowing, the cold item's collaborative score is 0 for everyone; borrowed, it follows the
    # users' scores of the items its text resembles (its cluster: items 3, 6, 9, ...).
    collab = collab_scores(inputs, model.item_side)
    assert np.allclose(
        plain[:, 0, COLLAB], (0.0 - collab.binary.mean(1)) / (collab.binary.std(1) + 1e-6), atol=1e-4
    )
    cluster = collab.binary[:, 3::3].mean(axis=1)
    others = collab.binary[:, [i for i in range(1, 30) if i % 3]].mean(axis=1)
    borrowed = feats[:, 0, COLLAB]
    assert np.corrcoef(borrowed, cluster - others)[0, 1] > 0.5


def test_the_no_lm_ablation_never_reaches_an_item_by_its_text(tmp_path: Path) -> None:
    train, side = synthetic()
    item_ids = list(range(100, 100 + train.shape[1]))
    new_vector = side.item_vectors[[0, 3, 6]].mean(axis=0)
    index = ItemIndex.build([*item_ids, 999], np.vstack([side.item_vectors, new_vector]))
    allowed = np.append(train[0] == 0, True)
    reached = {}
    for name in ("llmrec", "llmrec-no-lm"):
        save_ranker(small(name).fit(train), item_ids, tmp_path / name, {})
        served = load_current(tmp_path / name)
        assert served is not None
        seen = [(item_ids[i], 1.0, 0.0) for i in np.flatnonzero(train[0])]
        inputs = served.online_inputs(served.side.vectors[np.flatnonzero(train[0])].mean(0), seen, 0.0)
        rows = served.rank(inputs, served.catalogue_of(index), allowed, k=5).rows[0]
        reached[name] = len(index) - 1 in rows.tolist()
    assert reached == {"llmrec": True, "llmrec-no-lm": False}


def test_text_neighbour_matrix_keeps_each_items_nearest_warm_items_sharpened() -> None:
    train, side = synthetic()
    train[:, 0] = 0.0  # cold: never a neighbour, but has neighbours
    item_side = ItemSide.fit(train, side.item_vectors, reg=5.0, text_neighbours=4, text_exponent=3.0)
    matrix = item_side.text_matrix.toarray()
    cosine = side.item_vectors @ side.item_vectors.T
    assert ((matrix != 0).sum(axis=0) <= 4).all() and not matrix[0].any() and not np.diag(matrix).any()
    for j in (0, 5, 17):
        warm = [i for i in np.argsort(-cosine[:, j], kind="stable") if i != j and item_side.warm[i]][:4]
        expected = np.maximum(cosine[warm, j], 0.0) ** 3.0
        np.testing.assert_allclose(matrix[warm, j], expected, rtol=1e-4)


def test_an_item_outside_the_universe_gets_the_text_neighbour_score_it_would_have_inside() -> None:
    train, side = synthetic()
    train[:, 0] = 0.0
    model = small().fit(train)
    inputs = model._batch_inputs(np.arange(6))
    collab = collab_scores(inputs, model.item_side)
    vectors = side.item_vectors[[0]]
    inside = candidate_features(inputs, model.item_side, collab, np.array([[0]]), vectors)
    outside = candidate_features(inputs, model.item_side, collab, np.array([[-1]]), vectors)
    np.testing.assert_allclose(outside[..., TEXT_KNN], inside[..., TEXT_KNN], atol=1e-5)
    assert (inside[..., TEXT_KNN] != inside[..., TEXT_KNN][0]).any()  # it differs between users
    assert (outside[..., COLD] == 1.0).all() and (inside[..., COLD] == 1.0).all()


def test_a_filtered_ranking_generates_its_candidates_among_the_allowed_items() -> None:
    train, _ = synthetic()
    model = small(n_collab=3, n_semantic=0, n_cold=0, n_text=0).fit(train)
    users = np.arange(4)
    pool = np.zeros((users.size, train.shape[1]), dtype=bool)
    pool[:, [2, 11, 25]] = True
    allowed = pool & (train[users] == 0)
    within = model.score_within(users, allowed)
    everything = model.score(users)
    # Every allowed item is a candidate of the filtered request (a fused score, not the fallback's).
    assert (within[allowed] > OUTSIDE / 2).all()
    assert (everything[allowed] < OUTSIDE / 2).any()


def test_the_text_neighbour_branch_takes_the_content_knn_baselines_tuned_values() -> None:
    from research.registry import resolved_params

    entry = {"params": {"d": 16}, "validation": 0.3}
    tuned = {
        "datasets": {
            "set": {
                "llmrec": entry,
                "ease": {"params": {"reg": 120.0}},
                "content_knn": {"params": {"neighbours": 12, "exponent": 7.5}},
            }
        }
    }
    params = resolved_params(tuned, "set", "llmrec-no-pref")
    assert params is not None
    assert (params["reg"], params["text_neighbours"], params["text_exponent"]) == (120.0, 12, 7.5)
    config = variant("llmrec-no-pref", 1, **params)
    assert (config.text_neighbours, config.text_exponent) == (12, 7.5)
