"""What ``llmrec tune`` and ``llmrec eval`` do, as plain functions over loaded data (the CLI only parses
options). Tuning runs on a validation part with seed 42: protocol (a)'s, or the model's own
``ModelSpec.tune_protocol`` (the sequential models: protocol (c)'s; the cold-start ones: protocol (e)'s);
evaluation reuses the tuned parameters per data set (defaults, with a warning, for a model never tuned on
that set)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from llmrec.logs import get_logger
from ranker.interactions import InteractionData
from research.datasets import load_dataset
from research.evaluate import EvalRecord, Features, ModelFactory, run_eval
from research.item_text import item_text_features
from research.registry import BASELINES, MODEL_SPECS, applicable, borrowed_params, resolved_params
from research.splits import PROTOCOL_ALIASES, PROTOCOL_RANDOM, make_split
from research.tuning import TuneResult, load_tuned, save_tuned, tune_model

log = get_logger(__name__)

TUNE_SEED = 42
TUNE_METRIC = "ndcg@10"


def single_thread_torch() -> None:
    """One intra-op thread for torch and for NumPy's BLAS: the harness runs thousands of tiny ops (batches,
    20 x 20 similarity blocks), where a second thread buys little and costs a lot on a loaded 2-core machine
    (threads spin waiting for each other when the cores are busy: a 20-item ILD matrix product took ~0.1 s
    instead of microseconds there). Only EASE's one large inverse loses, at most 2x."""
    torch.set_num_threads(1)
    threadpool_limits(1)


def load_datasets(names: Sequence[str], data_dir: Path) -> dict[str, InteractionData]:
    return {name: load_dataset(name, data_dir) for name in names}


def text_features(
    datasets: Mapping[str, InteractionData], data_dir: Path, index_dir: Path
) -> dict[str, Features]:
    """Item text features per data set, for the models that use them; a set whose features cannot be
    built (no index, no encoder) is left out and those models are skipped on it, with a warning."""
    out: dict[str, Features] = {}
    for name, data in datasets.items():
        try:
            out[name] = item_text_features(data, data_dir, index_dir)
        except (OSError, ValueError) as exc:
            log.warning("no item text features", extra={"dataset": name, "error": str(exc)})
    return out


def resolve_models(requested: Sequence[str] | None) -> list[str]:
    names = list(requested or BASELINES)
    unknown = [n for n in names if n not in MODEL_SPECS]
    if unknown:
        raise ValueError(f"unknown models {unknown}; known: {list(MODEL_SPECS)}")
    return names


def resolve_protocols(requested: Sequence[str]) -> list[str]:
    return [PROTOCOL_ALIASES.get(p, p) for p in requested]


def run_tuning(
    datasets: Mapping[str, InteractionData],
    models: Sequence[str],
    n_trials: int,
    out_path: Path,
    features: Mapping[str, Features],
) -> dict[str, Any]:
    single_thread_torch()
    results: dict[str, dict[str, TuneResult]] = {}
    jobs = [
        (name, model)
        for name, data in datasets.items()
        for model in models
        if applicable(model, data, name in features)
    ]
    for skipped in sorted({m for _, m in jobs if MODEL_SPECS[m].tuned_as}):
        log.info("not tuned on its own", extra={"model": skipped, "takes": MODEL_SPECS[skipped].tuned_as})
    jobs = [(name, model) for name, model in jobs if MODEL_SPECS[model].tuned_as is None]
    for name, model in tqdm(jobs, desc="tune", unit="model"):
        spec = MODEL_SPECS[model]
        split = make_split(datasets[name], spec.tune_protocol, TUNE_SEED)
        result = tune_model(
            spec.build,
            spec.space,
            split,
            n_trials,
            seed=TUNE_SEED,
            metric=TUNE_METRIC,
            defaults={**spec.defaults, **borrowed_params(load_tuned(out_path), name, model)},
            item_features=features.get(name),
        )
        if spec.tune_protocol != PROTOCOL_RANDOM:
            result = dataclasses.replace(result, protocol=spec.tune_protocol)
        log.info(
            "tuned",
            extra={"dataset": name, "model": model, "validation": result.value, "params": result.params},
        )
        results.setdefault(name, {})[model] = result
        # Saved after every model, so an interrupted run keeps what it finished.
        save_tuned(out_path, _budget(n_trials), {name: {model: result}})
    return load_tuned(out_path)


def _budget(n_trials: int) -> dict[str, Any]:
    return {
        "n_trials": n_trials,
        "metric": TUNE_METRIC,
        "protocol": PROTOCOL_RANDOM,
        "seed": TUNE_SEED,
        "part": "validation",
        "sampler": "optuna TPE (seeded), defaults as the first trial",
    }


def eval_models(models: Sequence[str], tuned_path: Path, features: Mapping[str, Features]) -> Any:
    """A per-data-set model table (for ``run_eval``) with the tuned parameters."""
    tuned = load_tuned(tuned_path)

    def for_dataset(data: InteractionData) -> dict[str, ModelFactory]:
        out: dict[str, ModelFactory] = {}
        for model in models:
            if not applicable(model, data, data.name in features):
                continue
            params = resolved_params(tuned, data.name, model)
            if params is None and MODEL_SPECS[model].space:
                log.warning("untuned model: defaults used", extra={"dataset": data.name, "model": model})
            out[model] = MODEL_SPECS[model].factory(params)
        return out

    return for_dataset


def run_evaluation(
    datasets: Mapping[str, InteractionData],
    models: Sequence[str],
    protocols: Sequence[str],
    seeds: Sequence[int],
    other_seeds: Sequence[int],
    tuned_path: Path,
    out_path: Path,
    features: Mapping[str, Features],
) -> list[EvalRecord]:
    """Protocol (a) on ``seeds``; every other protocol on ``other_seeds``. The markdown report gets the
    tuning table appended."""
    single_thread_torch()
    records = run_eval(
        datasets,
        eval_models(models, tuned_path, features),
        seeds,
        out_path,
        protocols=protocols,
        item_features=features,
        seeds_for=lambda protocol: seeds if protocol == PROTOCOL_RANDOM else other_seeds,
    )
    append_tuning_table(out_path.with_suffix(".md"), load_tuned(tuned_path))
    return records


def append_tuning_table(markdown: Path, tuned: Mapping[str, Any]) -> None:
    """The tuned parameters behind the figures, with their validation NDCG@10 and budget."""
    budget = tuned.get("budget") or {}
    lines = [
        "",
        "## Tuned parameters",
        "",
        f"Budget: {budget.get('n_trials', '?')} trials per model and data set, {budget.get('sampler', '')}, "
        f"by {budget.get('metric', '?')} on the {budget.get('part', '?')} part of "
        f"{budget.get('protocol', '?')} (seed {budget.get('seed', '?')}). "
        "`tuned on` names the data set whose validation part chose them.",
        "",
        "| dataset | model | validation ndcg@10 | trials | tuned on | params |",
        "|---|---|---|---|---|---|",
    ]
    for dataset, by_model in sorted(tuned.get("datasets", {}).items()):
        for model, entry in sorted(by_model.items()):
            params = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in sorted(entry["params"].items())
            )
            tuned_on = entry.get("tuned_on", dataset)
            if "protocol" in entry:
                tuned_on += f" ({entry['protocol']})"
            lines.append(
                f"| {dataset} | {model} | {entry['validation']:.4f} | {entry['trials']} | {tuned_on} "
                f"| {params} |"
            )
    with markdown.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
