"""Ranking metrics at their limits and on hand-computed cases (arithmetic in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from research import metrics as m

LOG2_3 = math.log2(3)  # discount of rank 2
LOG2_4 = 2.0  # rank 3
LOG2_5 = math.log2(5)  # rank 4


@pytest.mark.parametrize("k", [1, 3, 5])
def test_perfect_list_scores_one(k: int) -> None:
    relevant = {7, 8, 9, 10, 11}
    ranked = [7, 8, 9, 10, 11, 1, 2]
    assert m.precision_at_k(ranked, relevant, k) == 1.0
    assert m.ndcg_at_k(ranked, relevant, k) == pytest.approx(1.0)
    assert m.hit_at_k(ranked, relevant, k) == 1.0
    assert m.average_precision_at_k(ranked, relevant, k) == pytest.approx(1.0)
    assert m.reciprocal_rank(ranked, relevant, k) == 1.0
    # recall tops out at k / |relevant| when there are more relevant items than slots
    assert m.recall_at_k(ranked, relevant, k) == pytest.approx(k / 5)


def test_no_hit_scores_zero() -> None:
    ranked, relevant = [1, 2, 3, 4], {9}
    for fn in (m.precision_at_k, m.recall_at_k, m.ndcg_at_k, m.hit_at_k, m.average_precision_at_k):
        assert fn(ranked, relevant, 3) == 0.0
    assert m.reciprocal_rank(ranked, relevant) == 0.0


def test_hand_computed_case() -> None:
    # ranked: a b c d e, relevant {b, d, z}; hits at ranks 2 and 4.
    ranked = [1, 2, 3, 4, 5]
    relevant = {2, 4, 99}
    assert m.precision_at_k(ranked, relevant, 5) == pytest.approx(2 / 5)
    assert m.recall_at_k(ranked, relevant, 5) == pytest.approx(2 / 3)
    assert m.hit_at_k(ranked, relevant, 1) == 0.0
    assert m.hit_at_k(ranked, relevant, 2) == 1.0
    # DCG@5 = 1/log2(3) + 1/log2(5); IDCG = 3 hits at the top = 1 + 1/log2(3) + 1/2
    dcg = 1 / LOG2_3 + 1 / LOG2_5
    idcg = 1 + 1 / LOG2_3 + 1 / LOG2_4
    assert m.ndcg_at_k(ranked, relevant, 5) == pytest.approx(dcg / idcg)  # 0.5307...
    # @3: DCG = 1/log2(3); ideal = min(3, 3) hits -> same IDCG
    assert m.ndcg_at_k(ranked, relevant, 3) == pytest.approx((1 / LOG2_3) / idcg)
    # @2: only 2 slots, ideal = 2 hits: 1 + 1/log2(3); DCG = 1/log2(3)
    assert m.ndcg_at_k(ranked, relevant, 2) == pytest.approx((1 / LOG2_3) / (1 + 1 / LOG2_3))
    # AP@5 = (P@2 + P@4) / min(5, 3) = (1/2 + 2/4) / 3 = 1/3
    assert m.average_precision_at_k(ranked, relevant, 5) == pytest.approx(1 / 3)
    # AP@2 = P@2 / min(2, 3) = (1/2) / 2 = 1/4
    assert m.average_precision_at_k(ranked, relevant, 2) == pytest.approx(1 / 4)
    # first hit at rank 2
    assert m.reciprocal_rank(ranked, relevant) == 0.5
    assert m.reciprocal_rank(ranked, relevant, 1) == 0.0
    assert m.reciprocal_rank(np.array(ranked), relevant) == 0.5  # vectorised full-list path


def test_short_list_counts_missing_slots_as_misses() -> None:
    # 1 hit in a 2-item list at k=4: precision 1/4, not 1/2
    assert m.precision_at_k([5, 6], {5}, 4) == 0.25


def test_uncut_mrr_finds_deep_hit() -> None:
    ranked = np.arange(1000)
    assert m.reciprocal_rank(ranked, {499}) == pytest.approx(1 / 500)
    assert m.reciprocal_rank(ranked, {499}, 20) == 0.0


def test_empty_relevant_and_bad_k_raise() -> None:
    with pytest.raises(ValueError):
        m.ndcg_at_k([1], set(), 1)
    with pytest.raises(ValueError):
        m.precision_at_k([1], {1}, 0)


def test_intra_list_distance() -> None:
    emb = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [3.0, 0.0]])
    # identical directions -> distance 0
    assert m.intra_list_distance([0, 3], emb) == pytest.approx(0.0)
    # orthogonal -> distance 1
    assert m.intra_list_distance([0, 1], emb) == pytest.approx(1.0)
    # three items: cos(0,1)=0, cos(0,2)=1/sqrt2, cos(1,2)=1/sqrt2 -> mean distance 1 - (2/sqrt2)/3
    assert m.intra_list_distance([0, 1, 2], emb) == pytest.approx(1 - (2 / math.sqrt(2)) / 3)
    assert m.intra_list_distance([2], emb) == 0.0


def test_coverage_and_long_tail() -> None:
    # items 0..9; lists cover {0, 1, 2, 5} -> 4 / 10
    lists = [[0, 1], [0, 2], [5, 0]]
    assert m.catalogue_coverage(lists, 10) == pytest.approx(0.4)
    # counts 50, 30, 10, 5, 5 (total 100): head = items until cumulative >= 80 -> {0, 1}
    counts = np.array([50, 30, 10, 5, 5])
    assert m.head_items(counts) == {0, 1}
    # counts 50, 20, 20, 10: 50 < 80, 70 < 80, 90 >= 80 -> the crossing item is in the head: {0, 1, 2}
    assert m.head_items(np.array([50, 20, 20, 10])) == {0, 1, 2}
    # 6 slots, of which items 2 and 5 (2 slots) are outside the head {0, 1}: 2/6
    assert m.long_tail_share(lists, {0, 1}) == pytest.approx(2 / 6)
    assert m.long_tail_share([], {0}) == 0.0


def test_list_metrics_at_their_limits() -> None:
    # ILD: mutually orthogonal items are as diverse as possible (1); copies of one direction not at all (0).
    assert m.intra_list_distance([0, 1, 2], np.eye(3)) == pytest.approx(1.0)
    assert m.intra_list_distance([0, 1, 2], np.ones((3, 4))) == pytest.approx(0.0)
    # a zero row counts as orthogonal to everything: [e0, 0] -> distance 1
    assert m.intra_list_distance([0, 1], np.array([[1.0, 0.0], [0.0, 0.0]])) == pytest.approx(1.0)
    # coverage: every item recommended somewhere -> 1; one item for everyone -> 1 / n
    assert m.catalogue_coverage([[0, 1], [2, 3], [4]], 5) == 1.0
    assert m.catalogue_coverage([[2], [2], [2]], 4) == pytest.approx(0.25)
    # long tail: only head items -> 0; only tail items -> 1
    head = m.head_items(np.array([90, 5, 5]))  # 90 >= 80% of 100 -> head is item 0 alone
    assert head == {0}
    assert m.long_tail_share([[0], [0]], head) == 0.0
    assert m.long_tail_share([[1, 2], [2]], head) == 1.0
    with pytest.raises(ValueError):
        m.catalogue_coverage([[0]], 0)


def test_metrics_on_a_second_hand_computed_list() -> None:
    # ranked 10 20 30 40, relevant {30, 40}: hits at ranks 3 and 4
    ranked, relevant = [10, 20, 30, 40], {30, 40}
    # DCG@4 = 1/log2(4) + 1/log2(5) = 0.5 + 0.43068; IDCG@4 = 1 + 1/log2(3) = 1.63093 -> 0.57064
    assert m.ndcg_at_k(ranked, relevant, 4) == pytest.approx((0.5 + 1 / LOG2_5) / (1 + 1 / LOG2_3))
    assert m.ndcg_at_k(ranked, relevant, 4) == pytest.approx(0.57064, abs=1e-5)
    # AP@4 = (P@3 + P@4) / 2 = (1/3 + 2/4) / 2 = 5/12
    assert m.average_precision_at_k(ranked, relevant, 4) == pytest.approx(5 / 12)
    assert m.reciprocal_rank(ranked, relevant) == pytest.approx(1 / 3)
    assert m.precision_at_k(ranked, relevant, 4) == 0.5 and m.recall_at_k(ranked, relevant, 4) == 1.0
    assert m.hit_at_k(ranked, relevant, 2) == 0.0 and m.hit_at_k(ranked, relevant, 3) == 1.0
