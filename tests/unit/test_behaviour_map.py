"""The behaviour map (ranker.model.behaviour): text vectors aligned with what users consume."""

from __future__ import annotations

import numpy as np

from ranker.model.behaviour import behaviour_queries, fit_behaviour_map, text_profiles
from ranker.model.features import ItemSide, cold_neighbours


def audiences(
    n_users: int = 120, n_items: int = 80, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Items have a topic (4, loud in their text) and an audience (2, quiet in their text); users consume
    by audience alone. Returns (train, unit vectors, topic, audience)."""
    rng = np.random.default_rng(seed)
    topic = np.arange(n_items) % 4
    audience = (np.arange(n_items) // 4) % 2
    vectors = np.zeros((n_items, 8))
    vectors[np.arange(n_items), topic] = 1.0
    vectors[np.arange(n_items), 4 + audience] = 0.25
    vectors += 0.1 * rng.normal(size=vectors.shape)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    user_audience = np.arange(n_users) % 2
    p = np.where(audience[None, :] == user_audience[:, None], 0.4, 0.02)
    train = (rng.random((n_users, n_items)) < p).astype(np.float32)
    return train, vectors.astype(np.float32), topic, audience


def test_neighbours_under_the_map_share_an_audience_where_raw_text_shares_a_topic() -> None:
    train, vectors, topic, audience = audiences()
    cold = np.arange(8)  # two per topic, one per audience in each: never interacted with
    train[:, cold] = 0.0
    side = ItemSide.fit(train, vectors, reg=5.0, behaviour_reg=1e-2)
    near, _ = cold_neighbours(side, vectors[cold])
    same_audience = (audience[near] == audience[cold][:, None]).mean()
    raw_near = np.argsort(-(vectors[cold] @ vectors[side.warm].T), axis=1)[:, :10]
    raw_rows = np.flatnonzero(side.warm)[raw_near]
    assert same_audience >= 0.8
    # Raw text ranks by topic first, and within a topic by the audience's faint trace.
    assert (topic[raw_rows] == topic[cold][:, None]).mean() > 0.9
    assert (audience[raw_rows] == audience[cold][:, None]).mean() < same_audience - 0.1


def test_a_users_query_ranks_cold_items_of_their_audience_first() -> None:
    train, vectors, _, audience = audiences()
    cold = np.arange(8)
    train[:, cold] = 0.0
    w = fit_behaviour_map(train, vectors, 1e-4)
    queries = behaviour_queries(text_profiles(train, vectors).astype(np.float32), w)
    scores = queries @ vectors[cold].T
    user_audience = np.arange(train.shape[0]) % 2
    best = cold[np.argmax(scores, axis=1)]
    assert (audience[best] == user_audience).mean() > 0.95


def test_items_nobody_interacted_with_do_not_shape_the_map() -> None:
    train, vectors, _, _ = audiences()
    w = fit_behaviour_map(train, vectors, 1e-4)
    extra = np.random.default_rng(1).normal(size=(5, vectors.shape[1])).astype(np.float32)
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    wider = fit_behaviour_map(
        np.hstack([train, np.zeros((train.shape[0], 5), np.float32)]), np.vstack([vectors, extra]), 1e-4
    )
    np.testing.assert_allclose(wider, w, rtol=1e-4, atol=1e-6)


def test_the_ridge_strength_is_relative_so_more_of_the_same_users_give_the_same_map() -> None:
    train, vectors, _, _ = audiences()
    once = fit_behaviour_map(train, vectors, 1e-3)
    twice = fit_behaviour_map(np.vstack([train, train]), vectors, 1e-3)
    np.testing.assert_allclose(twice, once, rtol=1e-3, atol=1e-6)


def test_no_interactions_give_an_empty_map() -> None:
    _, vectors, _, _ = audiences()
    assert not fit_behaviour_map(np.zeros((3, vectors.shape[0]), np.float32), vectors, 1e-4).any()
