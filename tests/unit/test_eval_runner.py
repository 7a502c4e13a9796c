"""The evaluator end to end on a small synthetic set: record shape, exclusion, reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ranker.evaluation.baselines import Popularity, Recommender
from ranker.evaluation.datasets import InteractionData
from ranker.evaluation.evaluate import evaluate_model, ranked_lists, run_eval, select_on_validation
from ranker.evaluation.splits import PROTOCOL_RANDOM, PROTOCOL_TEMPORAL, Part, random_split


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
        return self._target[users].astype(np.float32)


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
