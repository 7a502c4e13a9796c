"""Train / validation / test splits of ``InteractionData``. Deterministic: the same data and seed give the
same split on any machine (NumPy's PCG64 stream is platform-independent).

Protocols:
- ``PROTOCOL_RANDOM`` (issue's protocol (a)): each user's interactions are shuffled with the seed and cut
  80/10/10. Validation and test each get ``max(1, round(0.1 * n))`` items (half rounds up) so that every
  user of a 5-core set is evaluated; a 5-item user is split 3/1/1.
- ``PROTOCOL_TEMPORAL`` (issue's protocol (c), MovieLens): each user's last interaction goes to test, the
  second-last to validation, the rest to train. Equal timestamps (MovieLens logs many ratings in the same
  second) are broken by the original row order, which is the file order.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from ranker.evaluation.datasets import IntArray, InteractionData

PROTOCOL_RANDOM = "user_random_80_10_10"
PROTOCOL_TEMPORAL = "temporal_leave_last_out"
PROTOCOLS = (PROTOCOL_RANDOM, PROTOCOL_TEMPORAL)


class Part(StrEnum):
    TRAIN = "train"
    VALIDATION = "validation"
    TEST = "test"


@dataclass(frozen=True, eq=False)
class Split:
    """Row indices into ``data`` for each part; every row is in exactly one part."""

    data: InteractionData
    protocol: str
    seed: int
    train: IntArray
    validation: IntArray
    test: IntArray

    def rows(self, part: Part | str) -> IntArray:
        part = Part(part)
        if part is Part.TRAIN:
            return self.train
        return self.validation if part is Part.VALIDATION else self.test

    def train_matrix(self) -> npt.NDArray[np.float32]:
        return self.data.matrix(self.train)

    def known_rows(self, part: Part | str) -> IntArray:
        """Rows a model may already know when evaluating ``part``: train for validation; train and
        validation for test (the validation items are not new to the user and must not count as hits)."""
        if Part(part) is Part.TEST:
            return np.concatenate([self.train, self.validation])
        return self.train

    def relevant(self, part: Part | str) -> dict[int, set[int]]:
        """User index -> held-out item indices in ``part`` (users with none are absent)."""
        rows = self.rows(part)
        out: dict[int, set[int]] = {}
        for user, item in zip(self.data.users[rows].tolist(), self.data.items[rows].tolist(), strict=True):
            out.setdefault(user, set()).add(item)
        return out


def _position_in_user(users: IntArray, order: IntArray) -> IntArray:
    """For rows visited in ``order`` (grouped by user), each row's 0-based position within its user."""
    sorted_users = users[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_users)) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, sorted_users.size]))
    position = np.empty_like(order)
    position[order] = np.arange(order.size) - group_start
    return position


def random_split(
    data: InteractionData, seed: int, valid_share: float = 0.1, test_share: float = 0.1
) -> Split:
    rng = np.random.default_rng(seed)
    keys = rng.random(data.n_interactions)
    # Group by user, shuffled within the user by the random keys.
    order = np.lexsort((keys, data.users)).astype(np.int64)
    position = _position_in_user(data.users, order)
    counts = np.bincount(data.users, minlength=data.n_users)
    # floor(x + 0.5): half rounds up (Python's round() would send 0.5 to 0 and leave 5-item users untested).
    n_test = np.maximum(1, np.floor(counts * test_share + 0.5)).astype(np.int64)
    n_valid = np.maximum(1, np.floor(counts * valid_share + 0.5)).astype(np.int64)
    if np.any(counts < 3):
        raise ValueError("every user needs at least 3 interactions (apply k_core first)")
    pos_test = n_test[data.users]
    pos_valid_end = pos_test + n_valid[data.users]
    test = np.flatnonzero(position < pos_test)
    validation = np.flatnonzero((position >= pos_test) & (position < pos_valid_end))
    train = np.flatnonzero(position >= pos_valid_end)
    return Split(data, PROTOCOL_RANDOM, seed, train, validation, test)


def temporal_split(data: InteractionData, seed: int = 0) -> Split:
    """``seed`` is only recorded (the split itself has no randomness) so records stay uniform."""
    if not data.has_timestamps:
        raise ValueError(f"{data.name} has no timestamps; the temporal protocol needs them")
    if np.any(np.bincount(data.users, minlength=data.n_users) < 3):
        raise ValueError("every user needs at least 3 interactions (apply k_core first)")
    rows = np.arange(data.n_interactions)
    # Newest first within each user; ties -> the later row in the file counts as newer.
    order = np.lexsort((-rows, -data.timestamps, data.users)).astype(np.int64)
    position = _position_in_user(data.users, order)
    test = np.flatnonzero(position == 0)
    validation = np.flatnonzero(position == 1)
    train = np.flatnonzero(position >= 2)
    return Split(data, PROTOCOL_TEMPORAL, seed, train, validation, test)


def make_split(data: InteractionData, protocol: str, seed: int) -> Split:
    if protocol == PROTOCOL_RANDOM:
        return random_split(data, seed)
    if protocol == PROTOCOL_TEMPORAL:
        return temporal_split(data, seed)
    raise ValueError(f"unknown protocol {protocol!r}; known: {PROTOCOLS}")
