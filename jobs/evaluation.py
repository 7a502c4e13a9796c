"""``llmrec tune``, ``llmrec eval`` and ``llmrec eval-report``: the research harness run on the data and item
index the settings name, reading and writing the files the commands give (``settings.reports_dir`` by
default)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmrec.settings import Settings
from research import llmrec_report, runner
from research.datasets import MAL_COMPLETED, MAL_RATING23, MOVIELENS
from research.evaluate import EvalRecord
from research.registry import resolved_params
from research.tuning import load_tuned, tuned_params

EVAL_DATASETS = (MAL_COMPLETED, MAL_RATING23, MOVIELENS)


def tune_baselines(
    settings: Settings, datasets: Sequence[str], models: Sequence[str] | None, trials: int, out: Path
) -> dict[str, Any]:
    """Tune every model (default: all baselines) on each data set with the same budget; merges into
    ``out`` and returns its content."""
    loaded = runner.load_datasets(datasets, settings.data_dir)
    features = runner.text_features(loaded, settings.data_dir, settings.index_dir)
    return runner.run_tuning(loaded, runner.resolve_models(models), trials, out, features)


def evaluate_baselines(
    settings: Settings,
    datasets: Sequence[str],
    models: Sequence[str] | None,
    protocols: Sequence[str],
    seeds: Sequence[int],
    other_seeds: Sequence[int],
    tuned: Path,
    out: Path,
) -> list[EvalRecord]:
    """Train and evaluate the models (default: all baselines) with the tuned parameters in ``tuned``;
    merges into ``out`` (``.json``) and rebuilds its markdown twin."""
    loaded = runner.load_datasets(datasets, settings.data_dir)
    features = runner.text_features(loaded, settings.data_dir, settings.index_dir)
    return runner.run_evaluation(
        loaded,
        runner.resolve_models(models),
        runner.resolve_protocols(protocols),
        seeds,
        other_seeds,
        tuned,
        out,
        features,
    )


def llmrec_model_report(
    settings: Settings,
    tuned: Path,
    eval_json: Path,
    out: Path,
    eval_seeds: Sequence[int],
    *,
    render_only: bool = False,
) -> dict[str, Any]:
    """The llmrec model's report in ``out`` (``render_only``: rebuilt from the saved JSON and ``eval_json``
    without fitting anything); returns it, with the gains over the best baseline under ``gains``."""
    if render_only:
        return llmrec_report.render_only(out, eval_json)
    stored = load_tuned(tuned)
    return llmrec_report.run_report(
        settings.data_dir,
        settings.index_dir,
        out,
        eval_json,
        resolved_params(stored, MAL_COMPLETED, "llmrec"),
        eval_seeds=eval_seeds,
        baseline_params=tuned_params(stored, MAL_COMPLETED, "ease"),
        tuned_path=tuned,
    )
