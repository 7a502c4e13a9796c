"""The user preference module of the llmrec model, vectorised over a user x item matrix.

It is the platform's preference math (``ranker.preferences``) applied to a data set's history:

- each interaction's **strength** is what the stream gives the same events: a completed title is a watch
  event (viewing 0.2 x progress 1 + completion 0.1 x 1 = 0.3) plus, when rated, the rating signal
  ``0.4 * (2 * (r - 1) / 9 - 1)``; review sentiment (0.3) enters online only (the offline sets carry no
  review text per interaction);
- **time decay**: each strength is multiplied by ``alpha ** ((t_ref - t) / unit)`` with ``t_ref`` the
  user's latest event (0.95 per 30 days); interactions without a timestamp are not decayed;
- the **preference vector** is the L2-normalised strength-weighted sum of the items' semantic vectors.

Two ways to build a profile (Figure 3 of the paper):

- ``dynamic``: the profile as the stream keeps it, every event folded in time order with decay
  (``ranker.preferences.apply_contributions``); equal to ``decayed_weights`` @ vectors, normalised.
- ``static``: one aggregate of the whole history, every event weighing its strength with no decay.

``uniform`` weights (every history item 1, no decay) are what the ``llmrec-no-pref`` ablation uses.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
import numpy.typing as npt

from ranker.preferences import DecayPolicy, SignalWeights

FloatMatrix = npt.NDArray[np.float32]


class ProfileKind(StrEnum):
    DYNAMIC = "dynamic"
    STATIC = "static"
    UNIFORM = "uniform"


def watched_strength(weights: SignalWeights) -> float:
    """Strength of a completed title's watch event (full progress, completed status)."""
    return weights.viewing + weights.completion


def interaction_strengths(
    train: FloatMatrix, ratings: FloatMatrix, weights: SignalWeights | None = None
) -> FloatMatrix:
    """Per-cell strength for the cells ``train`` marks, 0 elsewhere. ``ratings`` on 1..10, NaN = unrated."""
    w = weights or SignalWeights()
    normalised = np.clip((ratings - 1.0) / 9.0, 0.0, 1.0)
    rating_part = np.where(np.isnan(ratings), 0.0, w.rating * (2.0 * normalised - 1.0))
    strength = np.where(train > 0, watched_strength(w) + rating_part, 0.0)
    return strength.astype(np.float32)


def decay_factors(train: FloatMatrix, timestamps: FloatMatrix, decay: DecayPolicy) -> FloatMatrix:
    """``alpha ** ((t_ref_u - t_ui) / unit)`` per marked cell; 1 where the time is unknown."""
    times = np.where(train > 0, timestamps, np.nan)
    has_time = ~np.isnan(times)
    ref = np.where(has_time.any(axis=1), np.nanmax(np.where(has_time, times, -np.inf), axis=1), 0.0)
    age = np.where(has_time, ref[:, None] - np.nan_to_num(times), 0.0)
    factors = np.power(decay.alpha, np.clip(age, 0.0, None) / decay.unit_s)
    return np.where(train > 0, factors, 0.0).astype(np.float32)


def history_weights(
    train: FloatMatrix,
    ratings: FloatMatrix,
    timestamps: FloatMatrix,
    kind: ProfileKind,
    weights: SignalWeights | None = None,
    decay: DecayPolicy | None = None,
) -> FloatMatrix:
    """The weight of each history item in the user's profile for the given ``kind``."""
    if kind is ProfileKind.UNIFORM:
        return (train > 0).astype(np.float32)
    strengths = interaction_strengths(train, ratings, weights)
    if kind is ProfileKind.STATIC:
        return strengths
    return (strengths * decay_factors(train, timestamps, decay or DecayPolicy())).astype(np.float32)


def preference_vectors(history: FloatMatrix, item_vectors: FloatMatrix) -> FloatMatrix:
    """L2-normalised ``history @ item_vectors`` (zeros for a user whose weights cancel out)."""
    raw = history.astype(np.float32) @ item_vectors
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    return np.where(norms > 0, raw / np.maximum(norms, 1e-12), 0.0).astype(np.float32)
