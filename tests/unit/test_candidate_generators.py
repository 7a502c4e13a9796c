"""Candidate generators (``research.candidates``) on a tiny planted interaction matrix, and the study's
recall / merge / restriction arithmetic on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from research.candidates import (
    PAD,
    LowRankCandidates,
    NeighbourCandidates,
    PopularityCandidates,
    Reference,
    SemanticCandidates,
    UnionCandidates,
    candidate_study,
    merge_ranked,
    prune_rows,
    recall_of,
    restricted_top_k,
    top_k,
)
from research.factor_models import MFConfig

N_ITEMS = 8


def planted() -> np.ndarray:
    """Items {0, 1, 2} are watched together, {3, 4, 5} together; 6 is popular with everyone in the second
    group, 7 is rare. 20 users of each group watch the whole group; the user with history {0, 1} is
    the one under test."""
    rows = []
    for _ in range(20):
        row = np.zeros(N_ITEMS, np.float32)
        row[[0, 1, 2]] = 1.0
        rows.append(row)
    for _ in range(20):
        row = np.zeros(N_ITEMS, np.float32)
        row[[3, 4, 5, 6]] = 1.0
        rows.append(row)
    extra = np.zeros(N_ITEMS, np.float32)
    extra[[6, 7]] = 1.0
    rows.append(extra)
    return np.stack(rows)


def history(*items: int) -> np.ndarray:
    row = np.zeros((1, N_ITEMS), np.float32)
    row[0, list(items)] = 1.0
    return row


@pytest.mark.parametrize("source", ["ease", "cosine"])
def test_neighbours_suggest_the_co_occurring_item_first(source: str) -> None:
    generator = NeighbourCandidates(source, m=3, reg=1.0).fit(planted())
    cands = generator.candidates(history(0, 1), 3)
    assert cands[0, 0] == 2
    assert 0 not in cands[0] and 1 not in cands[0]  # seen items are never candidates


def test_neighbours_pad_when_the_history_reaches_few_items() -> None:
    generator = NeighbourCandidates("cosine", m=2).fit(planted())
    cands = generator.candidates(history(0, 1), 5)
    # 0 and 1 each keep their two neighbours (each other and 2): only 2 is reached and unseen; the rest
    # is padded, not filled with unrelated items.
    reached = cands[0][cands[0] != PAD]
    assert reached.tolist() == [2]
    assert (cands[0][1:] == PAD).all()


def test_low_rank_ranks_the_co_occurring_item_first() -> None:
    generator = LowRankCandidates(MFConfig(factors=4, reg=0.1, alpha=10.0, iterations=10, seed=0))
    cands = generator.fit(planted()).candidates(history(0, 1), 2)
    assert cands[0, 0] == 2
    assert generator.artifact_bytes() > 0


def test_semantic_follows_the_item_vectors() -> None:
    vectors = np.eye(N_ITEMS, dtype=np.float32)
    vectors[2] = vectors[0] + vectors[1]  # item 2 is "about" what 0 and 1 are about
    cands = SemanticCandidates(vectors).fit(planted()).candidates(history(0, 1), 1)
    assert cands.tolist() == [[2]]


def test_popularity_skips_seen_items() -> None:
    # 6 is the most popular (21 users), then 0..5 (20 each, ties by index): 0 is seen, so 6 then 1.
    assert PopularityCandidates().fit(planted()).candidates(history(0), 2).tolist() == [[6, 1]]
    assert PopularityCandidates().fit(planted()).candidates(history(6), 1).tolist() == [[0]]


def test_union_fills_with_popularity_up_to_n() -> None:
    train = planted()
    neighbours = NeighbourCandidates("cosine", m=2).fit(train)
    union = UnionCandidates("u", {"nb": (neighbours, 1.0)}).fit(train)
    cands = union.candidates(history(0, 1), 5)
    assert cands[0, 0] == 2  # the part's own (only) candidate first, then the popularity fill
    assert cands[0, 1] == 6
    assert (cands[0] != PAD).all() and len(set(cands[0].tolist())) == 5
    assert not {0, 1} & set(cands[0].tolist())


def test_merge_is_a_weighted_round_robin_without_duplicates() -> None:
    a = np.array([[1, 2, 3]])
    b = np.array([[4, 2, 5]])
    assert merge_ranked([(a, 0.5), (b, 0.5)], 5).tolist() == [[1, 4, 2, 3, 5]]
    # Share 3:1 -> a's first three (keys 1/3 .. 1) come before b's second (key 2).
    assert merge_ranked([(a, 0.75), (b, 0.25)], 4).tolist() == [[1, 2, 3, 4]]
    assert merge_ranked([(np.array([[7, PAD]]), 1.0)], 3).tolist() == [[7, PAD, PAD]]


def test_recall_on_a_hand_made_case() -> None:
    cands = np.array([[1, 2, 3, PAD], [9, 8, 7, 6]])
    assert recall_of(cands, [{2, 5}, {6}]) == pytest.approx((0.5 + 1.0) / 2)
    # A row without targets is skipped, not counted as zero.
    assert recall_of(cands, [{2, 5}, set()]) == pytest.approx(0.5)


def test_restricted_top_k_ranks_only_the_candidates() -> None:
    scores = np.array([[5.0, 4.0, 3.0, 2.0, 1.0]], np.float32)
    assert restricted_top_k(scores, np.array([[3, 1, PAD]]), k=2).tolist() == [[1, 3]]
    seen = np.array([[True, False, False, False, False]])
    assert top_k(scores, seen, k=2).tolist() == [[1, 2]]


@pytest.mark.parametrize("as_sparse", [False, True])
def test_prune_rows_keeps_the_strongest_entries(as_sparse: bool) -> None:
    dense = np.array([[3.0, -5.0, 1.0, 0.0], [0.0, 0.0, 0.0, 2.0]], np.float32)
    source = sp.csr_matrix(dense) if as_sparse else dense
    by_value = prune_rows(source, 2).toarray()
    assert by_value.tolist() == [[3.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 2.0]]
    by_magnitude = prune_rows(source, 2, by_magnitude=True).toarray()
    assert by_magnitude.tolist() == [[3.0, -5.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]]


def test_study_reports_what_the_candidates_keep() -> None:
    train = planted()
    users = np.array([0, 25], dtype=np.int64)
    # Hold nothing out of the train rows: judge against items the users do not have.
    relevant = [{7}, {7}]
    scores = np.zeros((2, N_ITEMS), np.float32)
    scores[:, 7] = 1.0  # a reference that puts the rare item 7 first
    popularity = PopularityCandidates().fit(train)
    records = candidate_study([popularity], train, users, relevant, [Reference("r", scores)], ns=(1, 8))
    by_n = {r.n: r.metrics for r in records}
    # Item 7 is the least popular unseen item: not in a 1-item popularity list, always in the full one.
    assert by_n[1]["recall@1"] == 0.0
    assert by_n[8]["recall@8"] == 1.0
    assert by_n[8]["ndcg@10_r_within"] == 1.0
