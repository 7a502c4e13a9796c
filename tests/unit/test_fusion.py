"""ranker.fusion: the plain fusion formula, top-k, and the reasons given for recommendations."""

from __future__ import annotations

import numpy as np
import pytest

from ranker.fusion import (
    POPULARITY_WEIGHT,
    PROFILE_REASON,
    SIMILARITY_WEIGHT,
    Candidates,
    Evidence,
    Interaction,
    PlainFusionRanker,
    Ranker,
    best_evidence,
    cold_start_reason,
    explain,
    plain_fusion,
    popularity_prior,
    reason_from,
    top_k,
)


def test_popularity_prior_is_log_scaled_to_the_catalogue_maximum() -> None:
    prior = popularity_prior([0, 9, 99, 999])
    np.testing.assert_allclose(prior, [0.0, 1 / 3, 2 / 3, 1.0], rtol=1e-6)
    assert prior.dtype == np.float32


@pytest.mark.parametrize("members", [[], [0, 0], [-5, 0]])
def test_popularity_prior_without_members_is_zero(members: list[int]) -> None:
    assert not popularity_prior(members).any()


def test_popularity_prior_treats_nan_and_negative_as_zero() -> None:
    np.testing.assert_allclose(popularity_prior([np.nan, -3, 99]), [0.0, 0.0, 1.0])


def test_plain_fusion_is_the_documented_weighted_sum() -> None:
    sim = np.array([0.9, 0.5, -0.2], np.float32)
    pop = np.array([0.0, 1.0, 0.5], np.float32)
    expected = SIMILARITY_WEIGHT * sim + POPULARITY_WEIGHT * pop
    np.testing.assert_allclose(plain_fusion(sim, pop), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        plain_fusion(sim, pop[:2])


def test_popularity_breaks_near_ties_but_not_clear_similarity_gaps() -> None:
    # 0.01 apart in similarity: the popular one wins; 0.2 apart: the closer one wins.
    assert np.argmax(plain_fusion([0.80, 0.79], [0.0, 1.0])) == 1
    assert np.argmax(plain_fusion([0.80, 0.60], [0.0, 1.0])) == 0


def test_plain_fusion_ranker_satisfies_the_protocol() -> None:
    ranker: Ranker = PlainFusionRanker()
    candidates = Candidates(
        item_ids=np.array([1, 2]),
        similarity=np.array([0.3, 0.4], np.float32),
        popularity=np.array([1.0, 0.0], np.float32),
        vectors=np.eye(2, dtype=np.float32),
    )
    np.testing.assert_allclose(ranker.score(np.ones(2, np.float32), candidates), [0.4, 0.4], rtol=1e-6)
    assert ranker.version == "plain-fusion-1" and len(candidates) == 2


def test_top_k_is_best_first_and_stable_on_ties() -> None:
    assert top_k([0.1, 0.5, 0.5, 0.9], 3).tolist() == [3, 1, 2]
    assert top_k([0.1], 5).tolist() == [0]
    assert top_k([], 5).tolist() == []


@pytest.mark.parametrize(
    ("evidence", "reason"),
    [
        (Evidence(1, "Steins;Gate", 0.4, Interaction.RATED, 9.0), "like Steins;Gate, which you rated 9"),
        (Evidence(1, "Steins;Gate", 0.4, Interaction.RATED, 8.5), "like Steins;Gate, which you rated 8.5"),
        (Evidence(1, "Monster", 0.3, Interaction.REVIEWED), "like Monster, which you reviewed"),
        (Evidence(1, "Mushishi", 0.3, Interaction.COMPLETED), "like Mushishi, which you completed"),
        (Evidence(1, "Mushishi", 0.3, Interaction.WATCHED), "like Mushishi, which you watched"),
    ],
)
def test_reason_texts(evidence: Evidence, reason: str) -> None:
    assert reason_from(evidence) == reason


def test_cold_start_reason_names_a_requested_genre_the_item_has() -> None:
    assert cold_start_reason(["Action", "Drama"], ["drama"]) == "popular with Drama fans"
    assert cold_start_reason(["Action"], ["Romance"]) == "popular on MyAnimeList"
    assert cold_start_reason(["Action"]) == "popular on MyAnimeList"


def test_best_evidence_maximises_similarity_times_positive_strength() -> None:
    items = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    seen = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], np.float32)
    # Item 100 is most similar to seen 0 (cos 1.0 * 0.1) but seen 1 is much stronger (0.8 * 0.4 = 0.32).
    # Item 200's only similar seen item (2) was disliked: the next best (seen 1: 0.6 * 0.4) explains it.
    best = best_evidence([100, 200], items, [10, 11, 12], seen, [0.1, 0.4, -0.4])
    assert best.tolist() == [1, 1]


def test_best_evidence_ignores_dissimilar_disliked_and_self() -> None:
    items = np.array([[1.0, 0.0]], np.float32)
    assert best_evidence([5], items, [6], [[-1.0, 0.0]], [0.4]).tolist() == [-1]  # opposite direction
    assert best_evidence([5], items, [6], [[1.0, 0.0]], [-0.4]).tolist() == [-1]  # disliked
    assert best_evidence([5], items, [5], [[1.0, 0.0]], [0.4]).tolist() == [-1]  # the item itself
    assert best_evidence([5], items, [], np.zeros((0, 2)), []).tolist() == [-1]


def test_explain_falls_back_to_the_profile_reason() -> None:
    items = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    evidence = [Evidence(10, "Cowboy Bebop", 0.4, Interaction.RATED, 10.0)]
    reasons = explain([1, 2], items, evidence, np.array([[1.0, 0.0]], np.float32))
    assert reasons == ["like Cowboy Bebop, which you rated 10", PROFILE_REASON]
