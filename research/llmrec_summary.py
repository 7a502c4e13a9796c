"""Summaries of the harness's evaluation records (``reports/eval.json``: one record per data set x
protocol x model x seed, ``llmrec eval``): a model's runs, their mean metrics, and llmrec's gains over the
best baseline. The llmrec report's JSON and its markdown tables (``llmrec_markdown``) read them."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

Record = Mapping[str, Any]


def runs(records: Sequence[Record], dataset: str, protocol: str, model: str) -> list[Record]:
    """The records of ``model`` on ``dataset`` x ``protocol``, in file order (one per seed)."""
    return [r for r in records if (r["dataset"], r["protocol"], r["model"]) == (dataset, protocol, model)]


def metric_mean(selected: Sequence[Record], metric: str) -> float:
    return statistics.fmean(r["metrics"][metric] for r in selected)


def mean_metric(
    records: Sequence[Record], dataset: str, protocol: str, model: str, metric: str
) -> float | None:
    """Mean ``metric`` of ``model``'s runs on ``dataset`` x ``protocol`` (None without any)."""
    selected = runs(records, dataset, protocol, model)
    return metric_mean(selected, metric) if selected else None


def gains(records: Sequence[Record], dataset: str, protocol: str) -> dict[str, Any]:
    """llmrec vs the best baseline by mean NDCG@10 on this dataset x protocol (relative gains)."""
    by_model: dict[str, list[Record]] = {}
    for r in records:
        if r["dataset"] == dataset and r["protocol"] == protocol:
            by_model.setdefault(r["model"], []).append(r)
    if "llmrec" not in by_model:
        return {}

    def mean(model: str, metric: str) -> float:
        return metric_mean(by_model[model], metric)

    baselines = [m for m in by_model if not m.startswith("llmrec")]
    if not baselines:
        return {}
    best = max(baselines, key=lambda m: mean(m, "ndcg@10"))
    return {
        "best_baseline": best,
        **{
            f"{metric}_gain": mean("llmrec", metric) / mean(best, metric) - 1.0
            for metric in ("ndcg@10", "mrr")
        },
        "llmrec": {m: mean("llmrec", m) for m in ("ndcg@10", "mrr")},
        best: {m: mean(best, m) for m in ("ndcg@10", "mrr")},
    }
