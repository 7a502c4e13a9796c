"""The evaluator end to end on a small synthetic set: record shape, exclusion, reports."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ranker.interactions import InteractionData
from ranker.model.base import Recommender
from research.baselines import EASE, ItemKNN, Popularity
from research.evaluate import evaluate_model, ranked_lists, run_eval, select_on_validation
from research.registry import BASELINES, MODEL_SPECS, resolved_params
from research.scaling import inference_time_curve
from research.splits import (
    PROTOCOL_COLD,
    PROTOCOL_RANDOM,
    PROTOCOL_TEMPORAL,
    Part,
    make_split,
    random_split,
    temporal_split,
)
from research.tuning import ParamSpec, TuneResult, load_tuned, save_tuned, tune_model, tuned_params


def toy(n_users: int = 20, n_items: int = 30, seed: int = 0, times: bool = False) -> InteractionData:
    rng = np.random.default_rng(seed)
    users: list[str] = []
    items: list[int] = []
    for u in range(n_users):
        for it in rng.choice(n_items, size=10, replace=False):
            users.append(f"u{u}")
            items.append(int(it))
    stamps = [float(i) for i in range(len(users))] if times else None
    return InteractionData.from_records("toy", users, items, timestamps=stamps)


class Oracle(Recommender):
    """Scores the test items highest: every metric should be at its best."""

    name = "oracle"

    def __init__(self, target: np.ndarray) -> None:
        super().__init__()
        self._target = target

    def _fit(self, train: np.ndarray) -> None:
        pass

    def _score(self, users: np.ndarray) -> np.ndarray:
        scores: np.ndarray = self._target[users].astype(np.float32)
        return scores


def test_ranked_lists_drop_known_items() -> None:
    data = toy()
    split = random_split(data, 1)
    known = data.matrix(split.known_rows(Part.TEST))
    lists = ranked_lists(Popularity().fit(split.train_matrix()), np.arange(data.n_users), known)
    for u, ranked in enumerate(lists):
        assert len(ranked) == data.n_items - int(known[u].sum())
        assert not known[u, ranked].any()


def test_oracle_scores_perfectly_and_record_shape() -> None:
    data = toy()
    split = random_split(data, 1)
    model = Oracle(data.matrix(split.test)).fit(split.train_matrix())
    record = evaluate_model(model, split, ks=(1, 10))
    assert set(record.as_dict()) == {"dataset", "protocol", "model", "seed", "metrics"}
    assert record.protocol == PROTOCOL_RANDOM and record.seed == 1 and record.model == "oracle"
    metrics = record.metrics
    assert metrics["ndcg@10"] == pytest.approx(1.0)
    assert metrics["mrr"] == 1.0 and metrics["hit@1"] == 1.0 and metrics["map@10"] == pytest.approx(1.0)
    assert metrics["recall@10"] == 1.0  # each user has 1 test item (10 -> 8/1/1)
    assert metrics["precision@1"] == 1.0
    assert metrics["users"] == data.n_users
    for key in ("coverage@10", "long_tail@10", "ild@10", "mrr@10", "precision@10"):
        assert 0.0 <= metrics[key] <= 1.0


def test_select_on_validation_prefers_the_better_model() -> None:
    split = random_split(toy(), 2)
    validation = split.data.matrix(split.validation)
    best, scores = select_on_validation(
        split, {"pop": lambda s: Popularity(), "oracle": lambda s: Oracle(validation)}
    )
    assert best == "oracle" and scores["oracle"] == pytest.approx(1.0)


def test_run_eval_writes_json_and_markdown(tmp_path: Path) -> None:
    out = tmp_path / "reports" / "eval.json"
    datasets = {"toy": toy(), "toy-timed": toy(seed=1, times=True)}
    records = run_eval(
        datasets,
        {"pop": lambda seed: Popularity()},
        seeds=[42, 43],
        out_path=out,
        protocols=(PROTOCOL_RANDOM, PROTOCOL_TEMPORAL),
        progress=False,
    )
    # toy has no timestamps -> random only (2 seeds); toy-timed -> both protocols (2 seeds each)
    assert len(records) == 2 + 4
    written = json.loads(out.read_text())
    assert written == [r.as_dict() for r in records]
    assert {"ndcg@10", "mrr", "recall@10", "precision@10", "hit@10", "map@10", "ndcg@5", "ndcg@20"} <= set(
        written[0]["metrics"]
    )
    table = out.with_suffix(".md").read_text()
    assert "| toy | user_random_80_10_10 | pop | 42,43 |" in table and "±" in table


def test_run_eval_merges_into_existing_records(tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    data = {"toy": toy()}
    run_eval(data, {"pop": lambda s: Popularity()}, seeds=[1, 2], out_path=out, progress=False)
    first = json.loads(out.read_text())
    # Re-measure pop on seed 2 only and add a new model: seed 1's pop record survives untouched.
    run_eval(
        data,
        {"pop": lambda s: Popularity(), "itemknn": lambda s: ItemKNN(5)},
        seeds=[2],
        out_path=out,
        progress=False,
    )
    merged = json.loads(out.read_text())
    keys = [(r["model"], r["seed"]) for r in merged]
    assert keys == [("pop", 1), ("pop", 2), ("itemknn", 2)]
    assert merged[0] == first[0]
    assert {"fit_s", "infer_ms_per_user"} <= set(merged[2]["metrics"])
    assert "| toy | user_random_80_10_10 | itemknn | 2 |" in out.with_suffix(".md").read_text()


class FoldInOracle(Oracle):
    """Knows the test items, but only answers through fold-in: proves cold users are scored that way."""

    def __init__(self, target: np.ndarray, given: np.ndarray) -> None:
        super().__init__(target)
        self._given = given

    def _score(self, users: np.ndarray) -> np.ndarray:
        return np.zeros((users.size, self._target.shape[1]), dtype=np.float32)

    def _score_history(self, history: np.ndarray, sequences: object) -> np.ndarray:
        # Identify each row's user by its given items (unique per user here).
        rows = [int(np.flatnonzero((self._given == h).all(axis=1))[0]) for h in history]
        scores: np.ndarray = self._target[rows].astype(np.float32)
        return scores


def test_cold_protocol_scores_held_out_users_by_fold_in() -> None:
    data = toy(n_users=30, times=True)
    split = make_split(data, PROTOCOL_COLD, 4)
    model = FoldInOracle(data.matrix(split.test), data.matrix(split.fold_in))
    model.fit(split.train_matrix())
    record = evaluate_model(model, split, ks=(5,))
    assert record.metrics["users"] == 6  # the 20% held out, nobody else
    assert record.metrics["ndcg@5"] == pytest.approx(1.0)


def test_tune_model_searches_the_space_and_starts_from_defaults() -> None:
    split = random_split(toy(), 3)
    seen: list[float] = []

    def build(params: Mapping[str, Any], seed: int) -> Recommender:
        seen.append(params["reg"])
        return EASE(reg=params["reg"])

    result = tune_model(
        build, {"reg": ParamSpec.float_(1.0, 1000.0, log=True)}, split, 4, defaults={"reg": 77.0}
    )
    assert seen[0] == 77.0 and len(seen) == 4
    assert all(1.0 <= r <= 1000.0 for r in seen)
    assert result.value == max(v for _, v in result.trials)
    assert result.params["reg"] in seen
    again = tune_model(
        build, {"reg": ParamSpec.float_(1.0, 1000.0, log=True)}, split, 4, defaults={"reg": 77.0}
    )
    assert again.params == result.params  # seeded sampler: same trials, same answer


def test_tuned_params_file_merges(tmp_path: Path) -> None:
    path = tmp_path / "tuned.json"
    save_tuned(path, {"n_trials": 3}, {"d1": {"ease": TuneResult({"reg": 5.0}, 0.3)}})
    save_tuned(path, {"n_trials": 3}, {"d1": {"mf": TuneResult({"factors": 8}, 0.2)}})
    stored = load_tuned(path)
    assert tuned_params(stored, "d1", "ease") == {"reg": 5.0}
    assert tuned_params(stored, "d1", "mf") == {"factors": 8}
    assert tuned_params(stored, "d2", "mf") is None


def test_inference_time_curve_grows_the_data() -> None:
    points = inference_time_curve(lambda seed: Popularity(), toy(n_users=40), (0.5, 1.0), scored_users=8)
    assert [p.share for p in points] == [0.5, 1.0]
    assert points[0].users == 20 and points[1].users == 40
    assert points[0].interactions < points[1].interactions
    assert all(p.infer_ms_per_user > 0 and p.fit_s >= 0 for p in points)


def test_registry_names_match_models_and_defaults_sit_in_their_spaces() -> None:
    assert BASELINES == (
        "pop", "itemknn", "ease", "mf", "bpr", "ncf", "lightgcn", "vbpr_text", "content_knn", "mf_textmap",
        "sasrec", "bert4rec",
    )  # fmt: skip
    for name in BASELINES:
        spec = MODEL_SPECS[name]
        assert spec.factory()(42).name == name
        for key, dim in spec.space.items():
            value = spec.defaults[key]
            if dim.kind == "categorical":
                assert value in dim.choices, (name, key)
            else:
                assert dim.low <= value <= dim.high, (name, key)


class HistoryReader(Recommender):
    """Records what it is asked to score from: ``score`` (fitted users) or ``score_history`` (sequences)."""

    name = "history-reader"
    reads_history_at_test = True

    def __init__(self) -> None:
        super().__init__()
        self.scored_users = 0
        self.sequences: list[np.ndarray] = []

    def _fit(self, train: np.ndarray) -> None:
        pass

    def _score(self, users: np.ndarray) -> np.ndarray:
        self.scored_users += users.size
        return np.zeros((users.size, self.n_items), dtype=np.float32)

    def _score_history(self, history: np.ndarray, sequences: Any) -> np.ndarray:
        self.sequences.extend(sequences)
        return np.zeros((history.shape[0], self.n_items), dtype=np.float32)


def test_history_readers_are_tested_on_train_and_validation_items_in_time_order() -> None:
    data = toy(times=True)
    split = temporal_split(data)
    model = HistoryReader()
    model.fit(split.train_matrix())
    evaluate_model(model, split, part=Part.VALIDATION, ks=(5,))
    assert model.scored_users == data.n_users and not model.sequences  # validation: what it was fitted on
    evaluate_model(model, split, part=Part.TEST, ks=(5,))
    given = split.sequences(np.concatenate([split.train, split.validation]))
    validation_item = {int(data.users[r]): int(data.items[r]) for r in split.validation}
    assert len(model.sequences) == data.n_users
    for user, sequence in enumerate(model.sequences):
        assert np.array_equal(sequence, given[user])
        assert sequence[-1] == validation_item[user]  # the newest known item comes last


def test_ablations_take_llmrecs_tuned_params_and_llmrec_borrows_the_ease_reg() -> None:
    tuned = {
        "datasets": {
            "d1": {
                "ease": {"params": {"reg": 55.0}},
                "llmrec": {"params": {"fusion": "late", "n_collab": 90, "n_semantic": 7, "reg": 200.0}},
            },
            "d2": {"ease": {"params": {"reg": 12.0}}},
        }
    }
    assert resolved_params(tuned, "d1", "llmrec") == {
        "fusion": "late", "n_collab": 90, "n_semantic": 7, "reg": 55.0,
    }  # fmt: skip
    assert resolved_params(tuned, "d1", "llmrec-no-pref") == resolved_params(tuned, "d1", "llmrec")
    # No fusion layer: only the branches' settings, never the tuned fusion kind.
    assert resolved_params(tuned, "d1", "llmrec-no-fusion") == {"n_collab": 90, "n_semantic": 7, "reg": 55.0}
    assert resolved_params(tuned, "d2", "llmrec") is None  # not tuned there: the caller's defaults
    assert resolved_params(tuned, "d1", "ease") == {"reg": 55.0}


def test_sequential_models_tune_on_the_temporal_protocol() -> None:
    assert {n for n, s in MODEL_SPECS.items() if s.tune_protocol == PROTOCOL_TEMPORAL} == {
        "sasrec",
        "bert4rec",
    }
    # The cold-start baselines are tuned on protocol (e)'s validation cold items (test_cold_items.py).
    cold_start = {"content_knn", "mf_textmap"}
    assert all(
        s.tune_protocol == PROTOCOL_RANDOM
        for n, s in MODEL_SPECS.items()
        if not s.needs_timestamps and n not in cold_start
    )
