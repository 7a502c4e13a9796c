"""The user preference model: how one interaction moves a user's vector. Pure and I/O-free.

A user's profile is a time-decayed, signal-weighted sum of the semantic vectors of the items they
interacted with (the paper's component 3):

    profile(t_ref) = sum_e  s_e * alpha ** ((t_ref - t_e) / unit) * v(item_e)

``s_e`` is the event's signal strength built from the paper's Table 6 weights (rating 0.4, review
sentiment 0.3, viewing history 0.2, completion 0.1); ``alpha`` = 0.95 per ``unit`` (30 days by default).

Design choices the paper leaves open, decided here:
- The state is kept *at a reference time* ``t_ref`` = the latest event time seen. An older event arriving
  late is discounted by its age relative to ``t_ref``; a newer one first decays the state forward. The
  result is the same whatever order the events arrive in (up to float rounding), so replays and
  out-of-order partitions converge to one state.
- Ratings and sentiment are normalised to [0, 1] as in the paper, then centred on the neutral point
  (0.5) so that a disliked item pushes the profile away from it instead of weakly towards it. Viewing
  progress and completion are non-negative: watching something is evidence of interest, and dropping it
  only withholds the completion bonus.
- ``weight_sum`` accumulates |s_e| with the same decay, so ``vector_sum / weight_sum`` is a weighted mean
  whose scale does not grow with activity; the served user vector is that mean, L2-normalised.

Example:
    >>> import numpy as np
    >>> w = SignalWeights()
    >>> state = PreferenceState.empty(2)
    >>> c = Contribution(vector=np.array([1.0, 0.0], np.float32), strength=rating_signal(10.0, w), time_s=0.0)
    >>> state = apply_contributions(state, [c], DecayPolicy())
    >>> user_vector(state).tolist()
    [1.0, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from llmrec.events.schema import (
    RatingEvent,
    ReviewEvent,
    WatchEvent,
    WatchStatus,
    normalised_rating,
)
from llmrec.preference_state import PreferenceState, Vector

# How much each list status says the user finished a title, on [0, 1] (the "completion" signal).
COMPLETION_BY_STATUS: dict[WatchStatus, float] = {
    WatchStatus.COMPLETED: 1.0,
    WatchStatus.WATCHING: 0.5,
    WatchStatus.ON_HOLD: 0.25,
    WatchStatus.DROPPED: 0.0,
    WatchStatus.PLAN_TO_WATCH: 0.0,
}


@dataclass(frozen=True)
class SignalWeights:
    """Table 6 of the paper."""

    rating: float = 0.4
    review: float = 0.3
    viewing: float = 0.2
    completion: float = 0.1


@dataclass(frozen=True)
class DecayPolicy:
    """``alpha`` per ``unit_s`` seconds: alpha = 0.95 per 30 days means a year-old event weighs 0.54."""

    alpha: float = 0.95
    unit_s: float = 30 * 24 * 3600.0

    def factor(self, age_s: float) -> float:
        """Weight of an event ``age_s`` seconds older than the reference time (1.0 for age <= 0)."""
        if age_s <= 0.0:
            return 1.0
        return float(self.alpha ** (age_s / self.unit_s))


@dataclass(frozen=True)
class Contribution:
    """One event reduced to what the math needs: the item's vector, the signal strength and the time."""

    vector: Vector
    strength: float
    time_s: float


def rating_signal(rating: float, weights: SignalWeights) -> float:
    return weights.rating * (2.0 * normalised_rating(rating) - 1.0)


def sentiment_signal(sentiment: float, weights: SignalWeights) -> float:
    clipped = min(1.0, max(0.0, sentiment)) if math.isfinite(sentiment) else 0.5
    return weights.review * (2.0 * clipped - 1.0)


def watch_signal(event: WatchEvent, weights: SignalWeights) -> float:
    if event.total_episodes:
        progress = min(1.0, event.episodes_watched / event.total_episodes)
    else:
        # Unknown length: any episode watched counts as viewing; a completed title counts fully.
        progress = 1.0 if event.status is WatchStatus.COMPLETED or event.episodes_watched > 0 else 0.0
    return weights.viewing * progress + weights.completion * COMPLETION_BY_STATUS[event.status]


def event_strength(
    event: RatingEvent | ReviewEvent | WatchEvent,
    weights: SignalWeights,
    sentiment: float | None = None,
) -> float:
    """Signal strength of one event. Reviews need their sentiment score in [0, 1]."""
    if isinstance(event, RatingEvent):
        return rating_signal(event.rating, weights)
    if isinstance(event, ReviewEvent):
        if sentiment is None:
            raise ValueError("a review needs its sentiment score")
        strength = sentiment_signal(sentiment, weights)
        if event.rating is not None:
            strength += rating_signal(event.rating, weights)
        return strength
    return watch_signal(event, weights)


def apply_contributions(
    state: PreferenceState, contributions: Iterable[Contribution], decay: DecayPolicy
) -> PreferenceState:
    """Fold events into the state. Order-independent: see the module docstring."""
    vector_sum = state.vector_sum.astype(np.float64, copy=True)
    weight_sum = state.weight_sum
    ref = state.ref_time_s
    for c in contributions:
        if not (math.isfinite(c.strength) and math.isfinite(c.time_s)):
            raise ValueError("contribution strength and time must be finite")
        if c.time_s > ref:
            if weight_sum > 0.0:
                shift = decay.factor(c.time_s - ref)
                vector_sum *= shift
                weight_sum *= shift
            ref = c.time_s
        factor = decay.factor(ref - c.time_s)
        vector_sum += (c.strength * factor) * c.vector.astype(np.float64)
        weight_sum += abs(c.strength) * factor
    return PreferenceState(vector_sum=vector_sum.astype(np.float32), weight_sum=weight_sum, ref_time_s=ref)


def user_vector(state: PreferenceState) -> Vector:
    """The served profile: the decayed weighted mean, L2-normalised (zeros for an empty profile)."""
    # In float64: an old profile decays to components near 1e-22, whose float32 squares are subnormal, and
    # a float32 norm then came out too small (a "unit" vector of length 1.000002; found by hypothesis).
    vector = state.vector_sum.astype(np.float64)
    norm = float(np.linalg.norm(vector))
    if state.is_empty or norm == 0.0 or not math.isfinite(norm):
        return np.zeros_like(state.vector_sum)
    return (vector / norm).astype(np.float32)
