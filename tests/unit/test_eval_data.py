"""InteractionData, k-core filtering and the two split protocols on tiny hand-made data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmrec.data_source import SAMPLE_DIR
from ranker.interactions import InteractionData, k_core
from research.datasets import MAL_COMPLETED, load_dataset, load_mal_rating23, load_movielens
from research.splits import (
    PROTOCOL_COLD,
    PROTOCOL_ITEM_STRATIFIED,
    PROTOCOL_RANDOM,
    PROTOCOL_SPARSE,
    Part,
    Split,
    make_split,
    random_split,
    temporal_split,
)


def _grid(n_users: int, n_items: int, per_user: int, seed: int = 0, times: bool = False) -> InteractionData:
    rng = np.random.default_rng(seed)
    users: list[str] = []
    items: list[int] = []
    for u in range(n_users):
        for it in rng.choice(n_items, size=per_user, replace=False):
            users.append(f"u{u:03d}")
            items.append(int(it) * 10)
    stamps = [float(i) for i in range(len(users))] if times else None
    return InteractionData.from_records("toy", users, items, timestamps=stamps)


def test_from_records_indexes_sorted_and_dedupes() -> None:
    data = InteractionData.from_records(
        "t", ["b", "a", "b", "a"], [30, 10, 30, 20], ratings=[5.0, float("nan"), 1.0, 2.0]
    )
    assert data.user_ids == ("a", "b") and data.item_ids == (10, 20, 30)
    assert data.n_interactions == 3  # (b, 30) kept once, with its first rating
    assert data.users.tolist() == [1, 0, 0] and data.items.tolist() == [2, 0, 1]
    assert data.ratings[0] == 5.0
    stats = data.stats()
    assert stats.interactions == 3 and stats.rated_share == pytest.approx(2 / 3)
    assert not stats.has_timestamps


def test_k_core_is_iterative() -> None:
    # k=2. Pass 1: item 3 has one user -> dropped. That leaves user c with one item (1) -> dropped in pass 2;
    # item 1 still has a and b. A single pass would have kept c.
    users = ["a", "a", "b", "b", "c", "c"]
    items = [1, 2, 1, 2, 1, 3]
    core = k_core(InteractionData.from_records("t", users, items), 2)
    assert core.user_ids == ("a", "b") and core.item_ids == (1, 2)
    assert core.n_interactions == 4
    assert core.matrix().tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_random_split_is_80_10_10_per_user_and_deterministic() -> None:
    data = _grid(30, 40, 20)
    split = random_split(data, seed=42)
    assert sorted(np.concatenate([split.train, split.validation, split.test]).tolist()) == list(
        range(data.n_interactions)
    )
    for part, expected in ((split.test, 2), (split.validation, 2), (split.train, 16)):  # 20 -> 16/2/2
        assert np.bincount(data.users[part], minlength=30).tolist() == [expected] * 30
    again = random_split(data, seed=42)
    assert np.array_equal(split.test, again.test) and np.array_equal(split.validation, again.validation)
    assert not np.array_equal(split.test, random_split(data, seed=7).test)


def test_random_split_gives_five_item_users_one_test_item() -> None:
    split = make_split(_grid(10, 12, 5), PROTOCOL_RANDOM, 1)
    assert np.bincount(split.data.users[split.test]).tolist() == [1] * 10
    assert np.bincount(split.data.users[split.validation]).tolist() == [1] * 10


def test_temporal_split_takes_last_and_second_last() -> None:
    # user a: items 10 (t=1), 20 (t=3), 30 (t=2), 40 (t=3, same second, later row) -> test 40, valid 20
    data = InteractionData.from_records(
        "t", ["a"] * 4 + ["b"] * 3, [10, 20, 30, 40, 10, 20, 30], timestamps=[1, 3, 2, 3, 5, 4, 6]
    )
    split = temporal_split(data)
    items = np.array(data.item_ids)
    rel_test = split.relevant(Part.TEST)
    rel_valid = split.relevant(Part.VALIDATION)
    assert {u: items[sorted(s)].tolist() for u, s in rel_test.items()} == {0: [40], 1: [30]}
    assert {u: items[sorted(s)].tolist() for u, s in rel_valid.items()} == {0: [20], 1: [10]}
    with pytest.raises(ValueError):
        temporal_split(_grid(3, 10, 5))  # no timestamps


def test_known_rows_for_test_include_validation() -> None:
    split = random_split(_grid(5, 20, 10), 0)
    assert split.known_rows(Part.TEST).size == split.train.size + split.validation.size
    assert split.known_rows(Part.VALIDATION).size == split.train.size


def test_rating23_reader_handles_crlf_and_unrated(tmp_path: Path) -> None:
    folder = tmp_path / "mal-cooperunion-anime-recommendations"
    folder.mkdir()
    (folder / "rating_23.csv").write_bytes(b"72561,5,9\r\n72561,19,-1\r\n72562,5,7\r\n")
    data = load_mal_rating23(tmp_path)
    assert data.user_ids == ("cu:72561", "cu:72562") and data.item_ids == (5, 19)
    assert data.n_interactions == 3
    assert np.isnan(data.ratings[1]) and data.ratings[0] == 9.0


def test_movielens_reader_keeps_timestamps(tmp_path: Path) -> None:
    folder = tmp_path / "movielens-latest-small"
    folder.mkdir()
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,0.5,9\n")
    data = load_movielens(tmp_path)
    assert data.has_timestamps and data.timestamps.tolist() == [964982703.0, 9.0]
    assert data.ratings.tolist() == [4.0, 0.5]


def test_mal_completed_loader_on_shipped_sample() -> None:
    data = load_dataset(MAL_COMPLETED, SAMPLE_DIR)  # 5-core by default
    assert data.n_users > 10 and data.n_items > 10
    assert np.bincount(data.users).min() >= 5 and np.bincount(data.items).min() >= 5
    assert all(u.startswith("mal:") for u in data.user_ids)
    assert not data.has_timestamps  # the Completed lists' event times are synthetic, so none are kept
    assert 0.5 < data.stats().rated_share <= 1.0


def test_item_stratified_split_holds_out_20_percent_of_every_item() -> None:
    data = _grid(40, 10, 5)  # 200 rows over 10 items, ~20 per item
    split = make_split(data, PROTOCOL_ITEM_STRATIFIED, 3)
    assert split.protocol == PROTOCOL_ITEM_STRATIFIED
    every = np.concatenate([split.train, split.validation, split.test])
    assert sorted(every.tolist()) == list(range(data.n_interactions))
    counts = np.bincount(data.items, minlength=data.n_items)
    test_counts = np.bincount(data.items[split.test], minlength=data.n_items)
    valid_counts = np.bincount(data.items[split.validation], minlength=data.n_items)
    # per item: test = round-half-up(0.2 n), validation = round-half-up(0.1 n), at least one each
    assert test_counts.tolist() == np.maximum(1, np.floor(0.2 * counts + 0.5)).astype(int).tolist()
    assert valid_counts.tolist() == np.maximum(1, np.floor(0.1 * counts + 0.5)).astype(int).tolist()


def test_sparse_split_keeps_one_to_five_training_items_for_drawn_users() -> None:
    data = _grid(50, 60, 20)
    base = random_split(data, 5)
    split = make_split(data, PROTOCOL_SPARSE, 5)
    assert split.eval_users is not None and split.eval_users.size == 10  # 20% of 50
    train_counts = np.bincount(data.users[split.train], minlength=data.n_users)
    chosen = np.zeros(data.n_users, dtype=bool)
    chosen[split.eval_users] = True
    assert ((train_counts[chosen] >= 1) & (train_counts[chosen] <= 5)).all()
    assert (train_counts[~chosen] == 16).all()  # everyone else keeps (a)'s 16 training items
    assert np.isin(split.train, base.train).all()  # only drops, never moves rows
    assert np.array_equal(split.test, base.test)
    assert set(split.relevant(Part.TEST)) == set(split.eval_users.tolist())


def test_cold_split_gives_first_events_and_never_trains_on_cold_users() -> None:
    data = _grid(30, 40, 10, times=True)  # timestamps increase with row order
    split = make_split(data, PROTOCOL_COLD, 9)
    cold = split.eval_users
    assert cold is not None and cold.size == 6
    assert not np.isin(data.users[split.train], cold).any()
    assert not np.isin(data.users[split.validation], cold).any()
    for user in cold.tolist():
        rows = np.flatnonzero(data.users == user)
        given = split.fold_in[data.users[split.fold_in] == user]
        assert given.tolist() == rows[:3].tolist()  # the three oldest events
        assert set(split.relevant(Part.TEST)[user]) == set(data.items[rows[3:]].tolist())
    assert set(split.relevant(Part.TEST)) == set(cold.tolist())
    # known items for the test part include the given ones, so they never count as hits
    assert np.isin(split.fold_in, split.known_rows(Part.TEST)).all()


def test_sequences_follow_time_then_row_order() -> None:
    data = InteractionData.from_records(
        "t", ["a", "a", "a", "b"], [10, 20, 30, 10], timestamps=[5.0, 1.0, 5.0, 2.0]
    )
    every = np.arange(data.n_interactions)
    seqs = Split(data, "x", 0, every, every[:0], every[:0]).sequences()
    items = np.array(data.item_ids)
    assert items[seqs[0]].tolist() == [20, 10, 30] and items[seqs[1]].tolist() == [10]
