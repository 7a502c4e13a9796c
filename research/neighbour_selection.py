"""Choose llmrec's ``neighbours`` (entries kept per column of EASE's matrix) per data set on the validation
part, the other parameters as tuned, and record it in the tuned parameters file.

``python -m research.neighbour_selection`` fits llmrec on protocol (a)'s training part (seed 42) for each
candidate value, scores NDCG@10 on the **validation** part (test is never read), and writes the best value
into ``tuned_params.json`` (``datasets.<set>.llmrec.params.neighbours``) with every value's score under
``neighbour_selection``. A one-dimensional grid, not the TPE search of ``llmrec tune``: the value was added
to the model after the data sets were tuned, and this keeps the other tuned values as they were.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from llmrec.settings import Settings
from ranker.model.recommender import LLMRec, variant
from research.datasets import load_dataset
from research.evaluate import evaluate_model, fit_on_split
from research.item_text import item_text_features
from research.llmrec_specs import DEFAULTS
from research.registry import resolved_params
from research.runner import single_thread_torch
from research.splits import Part, make_split
from research.tuning import load_tuned

VALUES = (25, 50, 100, 200, 0)
DATASETS = ("mal-completed", "mal-rating23", "movielens-small")


def select(dataset: str, settings: Settings, tuned: dict[str, Any], seed: int = 42) -> dict[str, float]:
    data = load_dataset(dataset, settings.data_dir)
    split = make_split(data, "user_random_80_10_10", seed)
    features = item_text_features(data, settings.data_dir, settings.index_dir)
    params = {**DEFAULTS, **(resolved_params(tuned, dataset, "llmrec") or {})}
    scores: dict[str, float] = {}
    for value in VALUES:
        model = LLMRec(config=variant("llmrec", seed, **{**params, "neighbours": value}))
        fit_on_split(model, split, features)
        record = evaluate_model(model, split, part=Part.VALIDATION, ks=(10,), diversity=False)
        scores[str(value)] = float(record.metrics["ndcg@10"])
        print(f"{dataset} neighbours={value}: validation NDCG@10 {scores[str(value)]:.4f}", flush=True)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dataset", action="append", default=None)
    parser.add_argument("--tuned", type=Path, default=None)
    args = parser.parse_args()
    settings = Settings()
    single_thread_torch()
    path = args.tuned or settings.reports_dir / "tuned_params.json"
    tuned = load_tuned(path)
    raw = json.loads(path.read_text(encoding="utf-8"))
    for dataset in args.dataset or DATASETS:
        scores = select(dataset, settings, tuned)
        best = max(scores, key=lambda v: scores[v])
        entry = raw["datasets"][dataset]["llmrec"]
        entry["params"]["neighbours"] = int(best)
        entry["neighbour_selection"] = {"part": "validation", "seed": 42, "ndcg@10": scores}
        path.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
        print(f"{dataset}: neighbours = {best}", flush=True)


if __name__ == "__main__":
    main()
