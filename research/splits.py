"""Train / validation / test splits of ``InteractionData``. Deterministic: the same data and seed give the
same split on any machine (NumPy's PCG64 stream is platform-independent).

Protocols:
- ``PROTOCOL_RANDOM`` (issue's protocol (a)): each user's interactions are shuffled with the seed and cut
  80/10/10. Validation and test each get ``max(1, round(0.1 * n))`` items (half rounds up) so that every
  user of a 5-core set is evaluated; a 5-item user is split 3/1/1.
- ``PROTOCOL_TEMPORAL`` (issue's protocol (c), MovieLens): each user's last interaction goes to test, the
  second-last to validation, the rest to train. Equal timestamps (MovieLens logs many ratings in the same
  second) are broken by the original row order, which is the file order.
- ``PROTOCOL_ITEM_STRATIFIED`` (protocol (b), the paper's "80/20 split stratified by title"): each *item's*
  interactions are shuffled with the seed; 20% go to test and 10% to validation (carved out of the 80% for
  training, so 70/10/20 overall), with the same half-up rounding and at least one of each, so every title
  of a 5-core set is in both held-out parts. A user can end up with few or no training items here.
- ``PROTOCOL_SPARSE`` (protocol (d), sparse users): protocol (a)'s split, then a share (20%) of users, drawn
  with the seed, keep only 1 to 5 of their training interactions (the number drawn uniformly per user,
  the items at random); their other training rows are dropped from the data the models see. Models are
  retrained on this; only those users are evaluated (``eval_users``), on their unchanged test items.
- ``PROTOCOL_COLD`` (protocol (d), cold users): a share (20%) of users, drawn with the seed, is held out of
  training entirely. Each arrives with its first ``given`` (3) interactions (oldest first where the data has
  timestamps, else in a seeded random order): these are ``fold_in`` rows, given to the model at scoring
  time only (``Recommender.score_history``), never trained on; all their later interactions are test. The
  other users are split as in (a). Only the held-out users are evaluated.
- ``PROTOCOL_COLD_ITEMS`` (protocol (e), cold items; data sets with item text only): a share (20%) of the
  *items*, drawn with the seed, is held out with every one of their interactions; those rows are the test
  part, so no model ever trains on a test item. Validation is carved the same way from the remaining items
  (10% of all items, with all their rows), so tuning never sees a test item either: 70/10/20 of the items.
  The held-out items stay in the catalogue (every model scores every item index, and their text is in
  ``FitContext.item_features``). Users are evaluated on their interactions with the held-out items; users
  with none are skipped (``relevant`` leaves them out). The split is scored in two rankings (``views``):
  ``cold_items`` ranks every item (warm and cold together, each user's known items removed as usual),
  ``cold_items_only`` ranks the part's held-out items alone (``Split.candidates``). Both break equal scores
  in a seeded random item order (``Split.tie_order``): an ID-only model gives every cold item the same
  score, and the item-index order it would otherwise fall back on follows the raw ids, which track release
  order on MAL, a popularity signal no model learnt.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from ranker.interactions import IntArray, InteractionData

PROTOCOL_RANDOM = "user_random_80_10_10"
PROTOCOL_TEMPORAL = "temporal_leave_last_out"
PROTOCOL_ITEM_STRATIFIED = "item_stratified_80_20"
PROTOCOL_SPARSE = "sparse_users_1_5"
PROTOCOL_COLD = "cold_users_fold_in"
PROTOCOL_COLD_ITEMS = "cold_items"
# Not a split of its own: the cold-only ranking of PROTOCOL_COLD_ITEMS's split (``views``).
PROTOCOL_COLD_ITEMS_ONLY = "cold_items_only"
PROTOCOLS = (
    PROTOCOL_RANDOM,
    PROTOCOL_ITEM_STRATIFIED,
    PROTOCOL_TEMPORAL,
    PROTOCOL_SPARSE,
    PROTOCOL_COLD,
    PROTOCOL_COLD_ITEMS,
)
# Protocols that only make sense where the items have text (a cold item is known by nothing else).
TEXT_PROTOCOLS = frozenset({PROTOCOL_COLD_ITEMS, PROTOCOL_COLD_ITEMS_ONLY})
# Short names for the command line (the letters).
PROTOCOL_ALIASES = {
    "a": PROTOCOL_RANDOM,
    "b": PROTOCOL_ITEM_STRATIFIED,
    "c": PROTOCOL_TEMPORAL,
    "d-sparse": PROTOCOL_SPARSE,
    "d-cold": PROTOCOL_COLD,
    "e": PROTOCOL_COLD_ITEMS,  # both rankings of protocol (e)
    "e-only": PROTOCOL_COLD_ITEMS_ONLY,  # the cold-only ranking alone
}


def _no_rows() -> IntArray:
    return np.zeros(0, dtype=np.int64)


class Part(StrEnum):
    TRAIN = "train"
    VALIDATION = "validation"
    TEST = "test"


@dataclass(frozen=True, eq=False)
class Split:
    """Row indices into ``data`` for each part; every row is in at most one part (protocol (d) sparse drops
    some). ``fold_in`` rows are given to the model at scoring time for users it was not trained on;
    ``eval_users`` (when set) restricts evaluation to those users. ``candidates`` (when set) restricts the
    ranking of a held-out part to those items, the others being removed like known items; ``tie_order``
    (when set) is the item order in which equal scores are listed, instead of the item-index order.
    Both are protocol (e)'s."""

    data: InteractionData
    protocol: str
    seed: int
    train: IntArray
    validation: IntArray
    test: IntArray
    fold_in: IntArray = field(default_factory=_no_rows)
    eval_users: IntArray | None = None
    candidates: Mapping[Part, IntArray] | None = None
    tie_order: IntArray | None = None

    def rows(self, part: Part | str) -> IntArray:
        part = Part(part)
        if part is Part.TRAIN:
            return self.train
        return self.validation if part is Part.VALIDATION else self.test

    def candidate_items(self, part: Part | str) -> IntArray | None:
        """The items ranked for ``part`` (sorted indices), or None when every item is."""
        return None if self.candidates is None else self.candidates.get(Part(part))

    def train_matrix(self) -> npt.NDArray[np.float32]:
        return self.data.matrix(self.train)

    def known_rows(self, part: Part | str) -> IntArray:
        """Rows a model may already know when evaluating ``part``: train for validation; train and
        validation for test (the validation items are not new to the user and must not count as hits)."""
        if Part(part) is Part.TEST:
            return np.concatenate([self.train, self.validation, self.fold_in])
        return np.concatenate([self.train, self.fold_in])

    def sequences(self, rows: IntArray | None = None) -> list[IntArray]:
        """Per user index, the item indices of ``rows`` (default: train) oldest first: by timestamp where
        the data has them (ties by row order), else by row order (the source's order)."""
        rows = self.train if rows is None else rows
        data = self.data
        stamps = data.timestamps[rows] if data.has_timestamps else np.zeros(rows.size)
        order = rows[np.lexsort((rows, stamps, data.users[rows]))]
        users = data.users[order]
        bounds = np.searchsorted(users, np.arange(data.n_users + 1))
        items = data.items[order]
        return [items[bounds[u] : bounds[u + 1]] for u in range(data.n_users)]

    def relevant(self, part: Part | str) -> dict[int, set[int]]:
        """User index -> held-out item indices in ``part`` (users with none are absent)."""
        rows = self.rows(part)
        if self.eval_users is not None:
            rows = rows[np.isin(self.data.users[rows], self.eval_users)]
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


def _grouped_shuffle_split(
    groups: IntArray, n_groups: int, seed: int, valid_share: float, test_share: float
) -> tuple[IntArray, IntArray, IntArray]:
    """Within each group (user or item), rows shuffled with ``seed``; the first ``test_share`` go to test,
    the next ``valid_share`` to validation, the rest to train."""
    rng = np.random.default_rng(seed)
    keys = rng.random(groups.size)
    order = np.lexsort((keys, groups)).astype(np.int64)
    position = _position_in_user(groups, order)
    counts = np.bincount(groups, minlength=n_groups)
    if np.any(counts[np.unique(groups)] < 3):
        raise ValueError("every user and item needs at least 3 interactions (apply k_core first)")
    # floor(x + 0.5): half rounds up (Python's round() would send 0.5 to 0 and leave 5-item users untested).
    n_test = np.maximum(1, np.floor(counts * test_share + 0.5)).astype(np.int64)
    n_valid = np.maximum(1, np.floor(counts * valid_share + 0.5)).astype(np.int64)
    pos_test = n_test[groups]
    pos_valid_end = pos_test + n_valid[groups]
    test = np.flatnonzero(position < pos_test)
    validation = np.flatnonzero((position >= pos_test) & (position < pos_valid_end))
    train = np.flatnonzero(position >= pos_valid_end)
    return train, validation, test


def random_split(
    data: InteractionData, seed: int, valid_share: float = 0.1, test_share: float = 0.1
) -> Split:
    train, validation, test = _grouped_shuffle_split(data.users, data.n_users, seed, valid_share, test_share)
    return Split(data, PROTOCOL_RANDOM, seed, train, validation, test)


def item_stratified_split(
    data: InteractionData, seed: int, valid_share: float = 0.1, test_share: float = 0.2
) -> Split:
    train, validation, test = _grouped_shuffle_split(data.items, data.n_items, seed, valid_share, test_share)
    return Split(data, PROTOCOL_ITEM_STRATIFIED, seed, train, validation, test)


def _drawn_users(data: InteractionData, seed: int, share: float) -> IntArray:
    # A separate stream from the split's (seed + 1_000_003) so the user draw does not shift the split.
    rng = np.random.default_rng(seed + 1_000_003)
    n = max(1, round(share * data.n_users))
    return np.sort(rng.choice(data.n_users, size=n, replace=False)).astype(np.int64)


def sparse_user_split(data: InteractionData, seed: int, share: float = 0.2, max_train: int = 5) -> Split:
    base = random_split(data, seed)
    chosen = _drawn_users(data, seed, share)
    rng = np.random.default_rng(seed + 2_000_003)
    train = base.train
    is_chosen = np.isin(data.users[train], chosen)
    kept = [train[~is_chosen]]
    for user in chosen.tolist():
        rows = train[data.users[train] == user]
        n_keep = int(rng.integers(1, max_train + 1))
        kept.append(np.sort(rng.choice(rows, size=min(n_keep, rows.size), replace=False)))
    return Split(
        data,
        PROTOCOL_SPARSE,
        seed,
        np.sort(np.concatenate(kept)),
        base.validation,
        base.test,
        eval_users=chosen,
    )


def cold_user_split(data: InteractionData, seed: int, share: float = 0.2, given: int = 3) -> Split:
    base = random_split(data, seed)
    cold = _drawn_users(data, seed, share)
    cold_row = np.isin(data.users, cold)

    def warm(rows: IntArray) -> IntArray:
        return rows[~cold_row[rows]]

    rows = np.flatnonzero(cold_row)
    if data.has_timestamps:
        stamps = data.timestamps[rows]
    else:
        stamps = np.random.default_rng(seed + 3_000_003).random(rows.size)
    order = rows[np.lexsort((rows, stamps, data.users[rows]))].astype(np.int64)
    position = _position_in_user(data.users[order], np.arange(order.size, dtype=np.int64))
    fold_in = np.sort(order[position < given])
    test = np.sort(np.concatenate([warm(base.test), order[position >= given]]))
    return Split(
        data,
        PROTOCOL_COLD,
        seed,
        warm(base.train),
        warm(base.validation),
        test,
        fold_in=fold_in,
        eval_users=cold,
    )


def _share_count(total: int, share: float) -> int:
    # floor(x + 0.5) (half up) and at least one, as the per-user and per-item splits round.
    return max(1, int(np.floor(total * share + 0.5)))


def cold_item_split(
    data: InteractionData, seed: int, valid_share: float = 0.1, test_share: float = 0.2
) -> Split:
    """Protocol (e): whole items held out (see the module docstring). The items are drawn from their own
    stream (seed + 4_000_003) so the draw does not depend on the other protocols' use of the seed."""
    if data.n_items < 3:
        raise ValueError("the cold-item split needs at least 3 items")
    n_test = _share_count(data.n_items, test_share)
    n_valid = _share_count(data.n_items, valid_share)
    if n_test + n_valid >= data.n_items:
        raise ValueError("the held-out shares leave no training item")
    rng = np.random.default_rng(seed + 4_000_003)
    order = rng.permutation(data.n_items).astype(np.int64)
    test_items = np.sort(order[:n_test])
    valid_items = np.sort(order[n_test : n_test + n_valid])
    in_test = np.isin(data.items, test_items)
    in_valid = np.isin(data.items, valid_items)
    # A separate stream again for the tie order, so that it is not tied to which items were drawn.
    tie_order = np.random.default_rng(seed + 5_000_003).permutation(data.n_items).astype(np.int64)
    return Split(
        data,
        PROTOCOL_COLD_ITEMS,
        seed,
        np.flatnonzero(~in_test & ~in_valid).astype(np.int64),
        np.flatnonzero(in_valid).astype(np.int64),
        np.flatnonzero(in_test).astype(np.int64),
        tie_order=tie_order,
    )


def held_out_items(split: Split, part: Part | str) -> IntArray:
    """The distinct items of ``part``'s rows, sorted: for protocol (e), that part's cold items."""
    return np.unique(split.data.items[split.rows(part)]).astype(np.int64)


def cold_only_view(split: Split) -> Split:
    """Protocol (e)'s second ranking: the same split (same rows, so the same fitted model serves), with each
    held-out part ranked among its own cold items only."""
    pools = {part: held_out_items(split, part) for part in (Part.VALIDATION, Part.TEST)}
    return dataclasses.replace(split, protocol=PROTOCOL_COLD_ITEMS_ONLY, candidates=pools)


def views(split: Split) -> tuple[Split, ...]:
    """The rankings ``split`` is scored in, each reported under its own protocol name; they share the
    training rows, so one fit serves them all. Protocol (e) has two (all items, cold items only); every
    other protocol one, itself."""
    if split.protocol == PROTOCOL_COLD_ITEMS:
        return (split, cold_only_view(split))
    return (split,)


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
    if protocol == PROTOCOL_ITEM_STRATIFIED:
        return item_stratified_split(data, seed)
    if protocol == PROTOCOL_SPARSE:
        return sparse_user_split(data, seed)
    if protocol == PROTOCOL_COLD:
        return cold_user_split(data, seed)
    if protocol == PROTOCOL_COLD_ITEMS:
        return cold_item_split(data, seed)
    if protocol == PROTOCOL_COLD_ITEMS_ONLY:
        return cold_only_view(cold_item_split(data, seed))
    raise ValueError(f"unknown protocol {protocol!r}; known: {(*PROTOCOLS, PROTOCOL_COLD_ITEMS_ONLY)}")
