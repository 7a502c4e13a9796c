"""The preference model (ranker.preferences): signal strengths, time decay, order independence."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrec.events.schema import RatingEvent, ReviewEvent, WatchEvent, WatchStatus
from llmrec.preference_state import PreferenceState
from ranker.preferences import (
    Contribution,
    DecayPolicy,
    SignalWeights,
    apply_contributions,
    event_strength,
    rating_signal,
    sentiment_signal,
    user_vector,
    watch_signal,
)

UNIT = 30 * 24 * 3600.0  # the default decay unit
W = SignalWeights()
DECAY = DecayPolicy()
T = datetime(2024, 5, 1, tzinfo=UTC)


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def fold(contributions: list[Contribution], dim: int = 3) -> PreferenceState:
    return apply_contributions(PreferenceState.empty(dim), contributions, DECAY)


# -- decay ------------------------------------------------------------------------------------------------


def test_decay_is_one_for_fresh_events_and_alpha_after_one_unit() -> None:
    assert DECAY.factor(0.0) == 1.0
    assert DECAY.factor(-5.0) == 1.0
    assert DECAY.factor(UNIT) == pytest.approx(0.95)
    assert DECAY.factor(12 * UNIT) == pytest.approx(0.95**12)


@given(st.floats(0, 1e9), st.floats(0, 1e9))
def test_decay_is_monotone_in_age(a: float, b: float) -> None:
    young, old = sorted((a, b))
    assert DECAY.factor(old) <= DECAY.factor(young)
    assert 0.0 <= DECAY.factor(old) <= 1.0


def test_a_late_older_event_counts_less_than_the_same_event_fresh() -> None:
    fresh = fold([Contribution(unit(1, 0, 0), 0.4, 10 * UNIT)])
    late = fold([Contribution(unit(0, 1, 0), 0.4, 10 * UNIT), Contribution(unit(1, 0, 0), 0.4, 0.0)])
    assert late.vector_sum[0] == pytest.approx(0.4 * 0.95**10, rel=1e-5)
    assert fresh.vector_sum[0] == pytest.approx(0.4)
    assert late.ref_time_s == 10 * UNIT


def test_a_newer_event_decays_the_existing_state_forward() -> None:
    state = fold([Contribution(unit(1, 0, 0), 0.4, 0.0)])
    state = apply_contributions(state, [Contribution(unit(0, 1, 0), 0.4, 2 * UNIT)], DECAY)
    assert state.vector_sum[0] == pytest.approx(0.4 * 0.95**2, rel=1e-5)
    assert state.vector_sum[1] == pytest.approx(0.4)
    assert state.weight_sum == pytest.approx(0.4 * 0.95**2 + 0.4)


# -- signals ----------------------------------------------------------------------------------------------


def test_ratings_are_centred_on_the_neutral_point() -> None:
    assert rating_signal(10.0, W) == pytest.approx(0.4)
    assert rating_signal(1.0, W) == pytest.approx(-0.4)
    assert rating_signal(5.5, W) == pytest.approx(0.0)


def test_sentiment_is_centred_and_clipped() -> None:
    assert sentiment_signal(1.0, W) == pytest.approx(0.3)
    assert sentiment_signal(0.0, W) == pytest.approx(-0.3)
    assert sentiment_signal(0.5, W) == pytest.approx(0.0)
    assert sentiment_signal(7.0, W) == pytest.approx(0.3)
    assert sentiment_signal(math.nan, W) == 0.0


def test_watching_is_never_negative_evidence() -> None:
    for status in WatchStatus:
        event = WatchEvent(
            event_id="w", user_id="u", item_id="mal:1", event_time=T, status=status, episodes_watched=0
        )
        assert watch_signal(event, W) >= 0.0
    done = WatchEvent(
        event_id="w",
        user_id="u",
        item_id="mal:1",
        event_time=T,
        status=WatchStatus.COMPLETED,
        episodes_watched=12,
        total_episodes=12,
    )
    assert watch_signal(done, W) == pytest.approx(0.2 + 0.1)


def test_a_review_adds_its_sentiment_to_its_optional_rating() -> None:
    review = ReviewEvent(event_id="r", user_id="u", item_id="mal:1", event_time=T, text="great", rating=10)
    assert event_strength(review, W, sentiment=1.0) == pytest.approx(0.7)
    with pytest.raises(ValueError):
        event_strength(review, W)
    rating = RatingEvent(event_id="x", user_id="u", item_id="mal:1", event_time=T, rating=1)
    assert event_strength(rating, W) == pytest.approx(-0.4)


def test_a_disliked_item_pushes_the_profile_away_from_it() -> None:
    liked, disliked = unit(1, 0, 0), unit(0.6, 0.8, 0)
    state = fold([Contribution(liked, 0.4, 0.0), Contribution(disliked, -0.4, 0.0)])
    vector = user_vector(state)
    assert float(vector @ disliked) < 0.0 < float(vector @ liked)


# -- empty and order --------------------------------------------------------------------------------------


def test_the_empty_profile_serves_a_zero_vector() -> None:
    empty = PreferenceState.empty(4)
    assert empty.is_empty
    assert user_vector(empty).tolist() == [0.0, 0.0, 0.0, 0.0]
    unchanged = apply_contributions(empty, [], DECAY)
    assert unchanged.is_empty and unchanged.ref_time_s == -math.inf
    assert not unchanged.vector_sum.any()


def test_non_finite_contributions_are_refused() -> None:
    with pytest.raises(ValueError):
        fold([Contribution(unit(1, 0, 0), math.inf, 0.0)])
    with pytest.raises(ValueError):
        fold([Contribution(unit(1, 0, 0), 0.1, math.nan)])


def test_every_arrival_order_gives_the_same_state() -> None:
    events = [
        Contribution(unit(1, 0, 0), 0.4, 0.0),
        Contribution(unit(0, 1, 0), -0.2, 3 * UNIT),
        Contribution(unit(0, 0, 1), 0.3, 1.5 * UNIT),
        Contribution(unit(1, 1, 0), 0.1, 3 * UNIT),
    ]
    reference = fold(events)
    for order in itertools.permutations(events):
        state = fold(list(order))
        np.testing.assert_allclose(state.vector_sum, reference.vector_sum, rtol=1e-5, atol=1e-7)
        assert state.weight_sum == pytest.approx(reference.weight_sum)
        assert state.ref_time_s == reference.ref_time_s


def test_folding_in_two_batches_equals_folding_at_once() -> None:
    events = [Contribution(unit(1, 0, i), 0.1 * i, i * UNIT) for i in range(1, 6)]
    once = fold(events)
    twice = apply_contributions(fold(events[3:]), events[:3], DECAY)
    np.testing.assert_allclose(twice.vector_sum, once.vector_sum, rtol=1e-5)
    assert twice.weight_sum == pytest.approx(once.weight_sum)


# -- properties -------------------------------------------------------------------------------------------

DIM = 4
_component = st.floats(-1.0, 1.0, allow_nan=False)
_vector = st.lists(_component, min_size=DIM, max_size=DIM).filter(lambda v: sum(x * x for x in v) > 1e-6)
_contribution = st.builds(
    lambda v, s, t: Contribution(unit(*v), s, t),
    _vector,
    st.floats(-0.8, 0.8, allow_nan=False),
    st.floats(0.0, 10 * 52 * UNIT, allow_nan=False),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_contribution, max_size=30))
def test_profiles_stay_finite_and_bounded(contributions: list[Contribution]) -> None:
    state = fold(contributions, DIM)
    assert np.isfinite(state.vector_sum).all()
    assert math.isfinite(state.weight_sum) and state.weight_sum >= 0.0
    # Item vectors are unit length and the weight accumulates |strength|: the sum can be no longer.
    assert float(np.linalg.norm(state.vector_sum)) <= state.weight_sum * (1 + 1e-4) + 1e-6
    assert state.weight_sum <= 0.8 * len(contributions) + 1e-9
    assert float(np.linalg.norm(user_vector(state))) <= 1.0 + 1e-5


@settings(max_examples=200, deadline=None)
@given(st.lists(_contribution, min_size=1, max_size=20), st.randoms(use_true_random=False))
def test_profiles_do_not_depend_on_arrival_order(contributions: list[Contribution], rnd: object) -> None:
    shuffled = list(contributions)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    a, b = fold(contributions, DIM), fold(shuffled, DIM)
    scale = max(1.0, a.weight_sum)
    np.testing.assert_allclose(a.vector_sum, b.vector_sum, rtol=1e-4, atol=1e-5 * scale)
    assert a.weight_sum == pytest.approx(b.weight_sum, rel=1e-6, abs=1e-9)
    assert a.ref_time_s == b.ref_time_s
