"""The sentiment head, its split and its metrics: synthetic data and hand-computed cases, no model."""

from __future__ import annotations

import numpy as np
import pytest

from encoder_triton.sentiment.data import Review, dedupe, split_of, split_reviews
from encoder_triton.sentiment.metrics import (
    accuracy,
    average_ranks,
    fit_thresholds,
    macro_f1,
    spearman,
    to_classes,
)
from encoder_triton.sentiment_head import HeadConfig, load_head, save_head, train_head


def _planted(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    direction = np.zeros(dim, dtype=np.float32)
    direction[3] = 1.0
    x = rng.normal(size=(n, dim)).astype(np.float32)
    target = (1.0 / (1.0 + np.exp(-2.0 * (x @ direction)))).astype(np.float32)
    return x, target, direction


@pytest.mark.parametrize("hidden", [0, 16])
def test_head_learns_planted_direction(hidden: int) -> None:
    x, y, direction = _planted(600, 12, seed=0)
    xv, yv, _ = _planted(200, 12, seed=1)
    config = HeadConfig(hidden=hidden, dropout=0.0, lr=3e-2, epochs=150, batch_size=128, patience=30)
    head, history = train_head(x, y, xv, yv, config, seed=0)
    scores = head.score(xv)
    assert scores.min() >= 0.0 and scores.max() <= 1.0
    assert spearman(scores, yv) > 0.95
    assert np.mean(np.abs(scores - yv)) < 0.06
    if hidden == 0:
        weight = head.net[1].weight.detach().numpy().ravel()
        cosine = weight @ direction / np.linalg.norm(weight)
        assert cosine > 0.95
    assert history["best_epoch"] >= 0


def test_head_training_is_deterministic_and_round_trips(tmp_path) -> None:
    x, y, _ = _planted(200, 8, seed=2)
    config = HeadConfig(epochs=20)
    a, _ = train_head(x, y, x, y, config, seed=7)
    b, _ = train_head(x, y, x, y, config, seed=7)
    np.testing.assert_array_equal(a.score(x), b.score(x))
    save_head(a, tmp_path, {"thresholds": {"low": 0.3, "high": 0.6}})
    loaded, meta = load_head(tmp_path)
    np.testing.assert_allclose(loaded.score(x), a.score(x), rtol=0, atol=1e-7)
    assert meta["thresholds"] == {"low": 0.3, "high": 0.6}


def _review(title: str, user: str = "u", text: str = "t", score: int = 5, tag: int = 1) -> Review:
    return Review(title=title, user=user, text=text, score=score, tag=tag)


def test_split_is_deterministic_disjoint_and_by_title() -> None:
    reviews = [_review(f"show {i % 300}", user=f"user {i}") for i in range(1500)]
    first = split_reviews(reviews, seed=42)
    again = split_reviews(list(reversed(reviews)), seed=42)
    assert first == split_reviews(reviews, seed=42)
    # disjoint and complete
    all_idx = [i for v in first.values() for i in v]
    assert sorted(all_idx) == list(range(1500))
    # no title in two splits, and file order does not matter
    titles = {name: {reviews[i].title for i in v} for name, v in first.items()}
    assert not titles["train"] & titles["test"] and not titles["train"] & titles["val"]
    assert not titles["val"] & titles["test"]
    flipped = {name: {reviews[len(reviews) - 1 - i].title for i in v} for name, v in again.items()}
    assert flipped == titles
    # roughly 70/15/15 of the titles
    assert 0.6 < len(titles["train"]) / 300 < 0.8 and len(titles["test"]) > 20
    # case and spacing do not move a title; another seed gives another split
    assert split_of("Steins;Gate") == split_of("  steins;gate ")
    assert [split_of(f"t{i}", seed=1) for i in range(50)] != [split_of(f"t{i}", seed=2) for i in range(50)]


def test_dedupe_keeps_first_of_identical_rows() -> None:
    rows = [_review("a", text="x"), _review("a", text="x", score=9), _review("a", text="y")]
    assert [r.text for r in dedupe(rows)] == ["x", "y"]
    assert _review("a", score=1).target == 0.0 and _review("a", score=10).target == 1.0


def test_macro_f1_and_accuracy_hand_computed() -> None:
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    # class 0: tp 1, |true| 2, |pred| 2 -> 0.5; class 1: tp 2, 2, 3 -> 0.8; class 2: tp 1, 2, 1 -> 2/3
    assert macro_f1(y_true, y_pred) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    assert macro_f1([0, 1, 2], [0, 1, 2]) == 1.0
    # a class never predicted and absent scores 0 and still counts in the mean
    assert macro_f1([0, 0], [0, 0]) == pytest.approx(1 / 3)


def test_spearman_hand_computed_with_ties() -> None:
    np.testing.assert_allclose(average_ranks([10, 20, 20, 5]), [2.0, 3.5, 3.5, 1.0])
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # x ranks 1,2,3 ; y ranks 1.5,1.5,3 -> centred (-1,0,1) and (-0.5,-0.5,1): 1.5 / sqrt(2 * 1.5)
    assert spearman([1, 2, 3], [7, 7, 9]) == pytest.approx(1.5 / np.sqrt(3.0))
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_thresholds_and_classes() -> None:
    assert list(to_classes([0.1, 0.3, 0.5, 0.9], 0.3, 0.6)) == [0, 1, 1, 2]
    scores = np.array([0.05, 0.1, 0.2, 0.45, 0.5, 0.55, 0.8, 0.9, 0.95])
    tags = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    low, high = fit_thresholds(scores, tags)
    assert macro_f1(tags, to_classes(scores, low, high)) == 1.0
    assert 0.2 < low <= 0.45 and 0.55 < high <= 0.8
