"""Protocol (e), cold items: the split, its two rankings, and the models that can (and cannot) place an item
nobody has interacted with, on a synthetic set where an item's text says which users consume it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ranker.interactions import InteractionData
from ranker.model.base import FitContext, Recommender
from research.baselines import EASE, Popularity, bpr_triples
from research.cold_start import ContentKNN, MFTextMap, TextMapConfig, fit_text_map
from research.evaluate import evaluate_model, fit_on_split, run_eval, split_rankings
from research.factor_models import ImplicitMF, MFConfig, VBPRConfig, VBPRText
from research.registry import BASELINES, MODEL_SPECS
from research.splits import (
    PROTOCOL_COLD_ITEMS,
    PROTOCOL_COLD_ITEMS_ONLY,
    PROTOCOL_RANDOM,
    PROTOCOLS,
    Part,
    Split,
    cold_item_split,
    held_out_items,
    make_split,
    views,
)

GROUPS, PER_GROUP = 4, 50


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def taste_data(n_users: int = 160, seed: int = 0) -> InteractionData:
    """Four taste groups of 50 items (item id // 50 = its group). Each user belongs to one group and
    consumes 10 of its items (popular ones more often) plus 2 anywhere: co-consumption follows the groups."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.sqrt(np.arange(1, PER_GROUP + 1))
    weights /= weights.sum()
    users: list[str] = []
    items: list[int] = []
    for u in range(n_users):
        group = u % GROUPS
        own = group * PER_GROUP + rng.choice(PER_GROUP, size=10, replace=False, p=weights)
        others = np.setdiff1d(np.arange(GROUPS * PER_GROUP), own)
        for item in [*own.tolist(), *rng.choice(others, size=2, replace=False).tolist()]:
            users.append(f"u{u:03d}")
            items.append(int(item))
    return InteractionData.from_records("taste", users, items)


def taste_text(data: InteractionData, signal: float = 1.0) -> np.ndarray:
    """Text vectors that name each item's group (plus noise): text predicts co-consumption."""
    rng = np.random.default_rng(1)
    feats = rng.normal(0.0, 0.3, size=(data.n_items, 16)).astype(np.float32)
    groups = np.array(data.item_ids) // PER_GROUP
    feats[np.arange(data.n_items), groups] += signal
    return feats


def fitted(model: Recommender, split: Split, feats: np.ndarray) -> Recommender:
    return fit_on_split(model, split, feats)


def cold_ndcg(model: Recommender, split: Split, metric: str = "ndcg@10") -> float:
    """NDCG@10 by default: the cold-only ranking has 40 candidates, so a top 20 holds half of them."""
    return evaluate_model(model, split, ks=(10, 20), diversity=False).metrics[metric]


# --- the split --------------------------------------------------------------------------------------------


def test_split_holds_out_whole_items_with_all_their_interactions() -> None:
    data = taste_data()
    split = cold_item_split(data, seed=3)
    train_items = set(data.items[split.train].tolist())
    test_items = set(held_out_items(split, Part.TEST).tolist())
    valid_items = set(held_out_items(split, Part.VALIDATION).tolist())
    assert not train_items & test_items and not train_items & valid_items and not test_items & valid_items
    # Every row of a held-out item is in its part: none of its interactions is left anywhere else.
    assert np.isin(data.items, list(test_items)).sum() == split.test.size
    assert np.isin(data.items, list(valid_items)).sum() == split.validation.size
    # Every row is in exactly one part.
    parts = np.concatenate([split.train, split.validation, split.test])
    assert np.array_equal(np.sort(parts), np.arange(data.n_interactions))
    assert split.fold_in.size == 0 and split.eval_users is None


def test_split_keeps_a_fifth_of_the_items_for_test_and_a_tenth_for_validation() -> None:
    data = taste_data()
    split = cold_item_split(data, seed=3)
    assert held_out_items(split, Part.TEST).size == round(0.2 * data.n_items)
    assert held_out_items(split, Part.VALIDATION).size == round(0.1 * data.n_items)


def test_split_is_seeded_and_reproducible() -> None:
    data = taste_data()
    a, b = cold_item_split(data, seed=5), cold_item_split(data, seed=5)
    for part in ("train", "validation", "test", "tie_order"):
        assert np.array_equal(getattr(a, part), getattr(b, part))
    other = cold_item_split(data, seed=6)
    assert not np.array_equal(held_out_items(a, Part.TEST), held_out_items(other, Part.TEST))
    assert make_split(data, PROTOCOL_COLD_ITEMS, 5).test.tolist() == a.test.tolist()


def test_protocol_e_is_registered_beside_a_to_d_with_a_cold_only_view() -> None:
    assert PROTOCOL_COLD_ITEMS in PROTOCOLS and PROTOCOL_COLD_ITEMS.startswith("cold_items")
    data = taste_data()
    split = make_split(data, PROTOCOL_COLD_ITEMS, 1)
    full, only = views(split)
    assert (full.protocol, only.protocol) == (PROTOCOL_COLD_ITEMS, PROTOCOL_COLD_ITEMS_ONLY)
    assert only.train is split.train and only.test is split.test  # same rows: one fit serves both
    assert views(make_split(data, PROTOCOL_RANDOM, 1))[0].protocol == PROTOCOL_RANDOM
    assert make_split(data, PROTOCOL_COLD_ITEMS_ONLY, 1).protocol == PROTOCOL_COLD_ITEMS_ONLY


def test_users_without_a_held_out_cold_interaction_are_skipped() -> None:
    data = taste_data()
    split = cold_item_split(data, seed=2)
    with_cold = set(data.users[split.test].tolist())
    record = evaluate_model(Popularity().fit(split.train_matrix()), split, ks=(20,))
    assert record.metrics["users"] == len(with_cold) < data.n_users


# --- the two rankings -------------------------------------------------------------------------------------


class _RecordsAllowed(Popularity):
    """Popularity that ranks within what it is allowed to rank, and records what that was."""

    ranks_within_allowed = True

    def __init__(self) -> None:
        super().__init__()
        self.allowed: list[np.ndarray] = []

    def score_within(self, users: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        self.allowed.append(allowed.copy())
        return self.score(users)


def test_a_model_that_ranks_within_the_allowed_items_is_told_the_cold_only_pool() -> None:
    data = taste_data()
    split = cold_item_split(data, seed=4)
    _, only = views(split)
    model = _RecordsAllowed().fit(split.train_matrix())
    users = np.array(sorted(split.relevant(Part.TEST)), dtype=np.int64)
    split_rankings(model, only, Part.TEST, users)
    allowed = np.vstack(model.allowed)
    known = data.matrix(split.known_rows(Part.TEST))[users] > 0
    pool = np.zeros(data.n_items, dtype=bool)
    pool[held_out_items(split, Part.TEST)] = True
    np.testing.assert_array_equal(allowed, pool[None, :] & ~known)


def test_cold_only_ranking_ranks_only_the_test_cold_items() -> None:
    data = taste_data()
    split = cold_item_split(data, seed=4)
    _, only = views(split)
    model = Popularity().fit(split.train_matrix())
    users = np.array(sorted(split.relevant(Part.TEST)), dtype=np.int64)
    cold = held_out_items(split, Part.TEST)
    known = data.matrix(split.known_rows(Part.TEST))
    for user, ranked in zip(users, split_rankings(model, only, Part.TEST, users), strict=True):
        # Exactly the cold items the user has not already got (none, here: cold items are never known).
        assert sorted(ranked.tolist()) == [i for i in cold.tolist() if not known[user, i]]
    # The all-items ranking has every item the user does not know, warm and cold.
    full_lists = split_rankings(model, split, Part.TEST, users)
    for user, ranked in zip(users, full_lists, strict=True):
        assert ranked.size == data.n_items - int(known[user].sum())
    # Validation ranks the validation cold items, never a test one.
    assert set(only.candidate_items(Part.VALIDATION).tolist()) == set(
        held_out_items(split, Part.VALIDATION).tolist()
    )


def test_popularity_never_ranks_a_cold_item_above_a_warm_one() -> None:
    data = taste_data()
    split = cold_item_split(data, seed=4)
    model = Popularity().fit(split.train_matrix())
    users = np.array(sorted(split.relevant(Part.TEST)), dtype=np.int64)
    warm = split.train_matrix().sum(axis=0) > 0
    for ranked in split_rankings(model, split, Part.TEST, users):
        flags = warm[ranked]
        n_warm = int(flags.sum())
        assert flags[:n_warm].all() and not flags[n_warm:].any()  # warm first, every cold item after
    assert cold_ndcg(model, split) == 0.0  # 20 slots, far more unknown warm items than that


def test_equal_scores_follow_the_seeded_tie_order_not_the_item_index() -> None:
    data = taste_data()
    split = cold_item_split(data, seed=4)
    _, only = views(split)
    model = Popularity().fit(split.train_matrix())  # every cold item scores 0: all tied
    users = np.array(sorted(split.relevant(Part.TEST)), dtype=np.int64)
    ranked = split_rankings(model, only, Part.TEST, users)[0]
    position = np.argsort(split.tie_order)
    assert np.all(np.diff(position[ranked]) > 0)  # listed in tie order
    assert not np.all(np.diff(ranked) > 0)  # which is not index order


def test_metrics_reach_their_limits() -> None:
    data = taste_data()
    split = cold_item_split(data, seed=7)
    test = data.matrix(split.test)

    class Fixed(Recommender):
        name = "fixed"

        def __init__(self, scores: np.ndarray) -> None:
            super().__init__()
            self._scores = scores.astype(np.float32)

        def _fit(self, train: np.ndarray) -> None:
            pass

        def _score(self, users: np.ndarray) -> np.ndarray:
            out: np.ndarray = self._scores[users]
            return out

    for view in views(split):
        # Each user has at most a handful of cold items, so all fit in the top 20.
        best = evaluate_model(Fixed(test).fit(test), view, ks=(20,)).metrics
        assert best["ndcg@20"] == pytest.approx(1.0) and best["recall@20"] == pytest.approx(1.0)
        assert best["mrr"] == 1.0 and best["hit@20"] == 1.0
    # Relevant items scored last: nothing in the top 20 of the all-items ranking.
    worst = evaluate_model(Fixed(-test).fit(test), split, ks=(20,)).metrics
    assert worst["ndcg@20"] == 0.0 and worst["recall@20"] == 0.0 and worst["hit@20"] == 0.0


# --- models on cold items ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def taste() -> tuple[Split, np.ndarray]:
    data = taste_data()
    return cold_item_split(data, seed=11), taste_text(data)


def test_text_models_beat_popularity_on_cold_items(taste: tuple[Split, np.ndarray]) -> None:
    split, feats = taste
    _, only = views(split)
    pop = fitted(Popularity(), split, feats)
    chance = cold_ndcg(pop, only)
    for model in (
        ContentKNN(neighbours=20),
        MFTextMap(TextMapConfig(factors=8, reg=0.1, iterations=6, map_reg=1.0)),
    ):
        fitted(model, split, feats)
        assert cold_ndcg(model, only) > 2 * chance, model.name  # chance: about 0.17
        # Among every item too: popularity cannot put a cold item in the top 20 at all.
        assert cold_ndcg(model, split) > cold_ndcg(pop, split) == 0.0, model.name


def test_id_only_models_rank_cold_items_at_chance(taste: tuple[Split, np.ndarray]) -> None:
    split, feats = taste
    _, only = views(split)
    cold = held_out_items(split, Part.TEST)
    chance = cold_ndcg(fitted(Popularity(), split, feats), only)
    for model in (EASE(reg=10.0), ImplicitMF(MFConfig(factors=8, reg=0.1, iterations=6))):
        fitted(model, split, feats)
        scores = model.score(np.arange(split.data.n_users))[:, cold]
        # No interaction, no signal: every cold item gets the same score, so the ranking among them is the
        # seeded tie order, exactly popularity's.
        assert np.ptp(scores, axis=1).max() < 1e-6, model.name
        assert cold_ndcg(model, only) == pytest.approx(chance), model.name


def test_vbpr_text_scores_a_cold_item_by_its_text_alone(taste: tuple[Split, np.ndarray]) -> None:
    split, feats = taste
    cold = held_out_items(split, Part.TEST)
    twin = feats.copy()
    twin[cold[1]] = twin[cold[0]]  # two cold items with the same text
    model = fitted(VBPRText(VBPRConfig(factors=8, text_factors=8, epochs=30, lr=0.02)), split, twin)
    scores = model.score(np.arange(split.data.n_users))
    # Their ID factors and bias carry no untrained noise: same text, same score, for every user.
    np.testing.assert_allclose(scores[:, cold[0]], scores[:, cold[1]], atol=1e-6)
    # And the text does place them: better than chance among the cold items.
    fitted(model, split, feats)
    _, only = views(split)
    assert cold_ndcg(model, only) > 2 * cold_ndcg(fitted(Popularity(), split, feats), only)


def test_bpr_negatives_can_be_restricted_to_items_with_interactions() -> None:
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    users, items = np.arange(50, dtype=np.int64), np.arange(50, dtype=np.int64) % 10
    pool = np.array([1, 3, 5], dtype=np.int64)
    negatives = np.concatenate([b[2] for b in bpr_triples(users, items, 10, 3, 16, rng_a, pool)])
    assert set(negatives.tolist()) <= set(pool.tolist())
    # Every item as the pool draws exactly what no pool draws: (a)-(d) figures are unchanged.
    everything = np.concatenate([b[2] for b in bpr_triples(users, items, 10, 3, 16, rng_b, np.arange(10))])
    plain = np.concatenate([b[2] for b in bpr_triples(users, items, 10, 3, 16, np.random.default_rng(0))])
    assert np.array_equal(everything, plain)


def test_text_map_recovers_a_linear_relation() -> None:
    rng = np.random.default_rng(0)
    text = rng.normal(size=(200, 6))
    truth = rng.normal(size=(6, 3))
    weights, intercept = fit_text_map(text, text @ truth + 2.0, reg=1e-6)
    np.testing.assert_allclose(weights, truth, atol=1e-5)
    np.testing.assert_allclose(intercept, 2.0, atol=1e-5)


def test_mf_textmap_maps_only_items_without_interactions(taste: tuple[Split, np.ndarray]) -> None:
    split, feats = taste
    model = MFTextMap(TextMapConfig(factors=8, reg=0.1, iterations=6))
    fitted(model, split, feats)
    no_rows = np.flatnonzero(split.train_matrix().sum(axis=0) == 0)
    assert np.array_equal(model.mapped, no_rows)


def test_content_knn_neighbours_are_items_with_interactions(taste: tuple[Split, np.ndarray]) -> None:
    split, feats = taste
    model = ContentKNN(neighbours=5).fit(split.train_matrix(), FitContext(item_features=feats))
    sim = model._item_matrix()
    no_rows = split.train_matrix().sum(axis=0) == 0
    assert not sim[no_rows].any()  # a cold item is nobody's history, so never a neighbour
    assert ((sim > 0).sum(axis=0) <= 5).all() and np.diag(sim).max() == 0.0
    with pytest.raises(ValueError, match="item_features"):
        ContentKNN().fit(split.train_matrix())


# --- the harness --------------------------------------------------------------------------------------------


def test_run_eval_writes_both_cold_rankings_from_one_fit(tmp_path: Path) -> None:
    data = taste_data()
    fits: list[str] = []

    class CountingPop(Popularity):
        def _fit(self, train: np.ndarray) -> None:
            fits.append("fit")
            super()._fit(train)

    out = tmp_path / "eval.json"
    records = run_eval(
        {"taste": data, "no-text": taste_data(seed=1)},
        {"pop": lambda seed: CountingPop()},
        seeds=[42],
        out_path=out,
        protocols=(PROTOCOL_COLD_ITEMS, PROTOCOL_COLD_ITEMS_ONLY),
        progress=False,
        item_features={"taste": taste_text(data)},
    )
    # Only the set with text; cold_items_only comes with cold_items, not fitted again.
    assert [(r.dataset, r.protocol) for r in records] == [
        ("taste", PROTOCOL_COLD_ITEMS),
        ("taste", PROTOCOL_COLD_ITEMS_ONLY),
    ]
    assert len(fits) == 1
    written = json.loads(out.read_text())
    assert {r["protocol"] for r in written} == {"cold_items", "cold_items_only"}
    assert {"ndcg@20", "recall@20", "fit_s", "users"} <= set(written[0]["metrics"])
    assert "## Cold items (protocol (e)" in out.with_suffix(".md").read_text()


def test_cold_start_models_are_registered_and_tuned_on_protocol_e() -> None:
    for name in ("content_knn", "mf_textmap"):
        spec = MODEL_SPECS[name]
        assert name in BASELINES and spec.needs_text and spec.tune_protocol == PROTOCOL_COLD_ITEMS
        assert spec.factory()(42).name == name
        assert set(spec.space) <= set(spec.defaults)
