"""``llmrec tune | eval | train-ranker | eval-report``: tune and evaluate the models, train the served ranker,
write the model's report. Default paths lie under the configured root (``Settings.reports_dir``)."""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import pass_settings, reports_path_option
from jobs.evaluation import EVAL_DATASETS, evaluate_baselines, llmrec_model_report, tune_baselines
from jobs.train_ranker import train_ranker_from_ledger, train_ranker_from_settings
from llmrec.settings import Settings


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@click.command("eval")
@click.option(
    "--dataset",
    "datasets",
    multiple=True,
    type=click.Choice(EVAL_DATASETS),
    help="Data sets to evaluate (default: all three). Needs the full data in LLMREC_DATA_DIR.",
)
@click.option("--models", default=None, help="Comma-separated baselines (default: all that apply).")
@click.option(
    "--protocols",
    default="a,b,c,d-sparse,d-cold",
    show_default=True,
    help="Comma-separated: a, b, c, d-sparse, d-cold (or full names); c only where timestamps exist.",
)
@click.option("--seed", "seeds", multiple=True, type=int, help="Seeds for protocol (a) (default: 42 43).")
@click.option(
    "--other-seed", "other_seeds", multiple=True, type=int, help="Seeds for the other protocols (default 42)."
)
@reports_path_option("--tuned", name="tuned_params.json", help="Tuned parameters from `llmrec tune`.")
@reports_path_option("--out", name="eval.json")
@pass_settings
def evaluate(
    settings: Settings,
    datasets: tuple[str, ...],
    models: str | None,
    protocols: str,
    seeds: tuple[int, ...],
    other_seeds: tuple[int, ...],
    tuned: Path,
    out: Path,
) -> None:
    """Train and evaluate the baselines on real data; merges into reports/eval.json (same dataset, protocol,
    model and seed replaced, others kept) and rebuilds reports/eval.md."""
    evaluate_baselines(
        settings,
        datasets or EVAL_DATASETS,
        _csv(models),
        _csv(protocols) or [],
        seeds or (42, 43),
        other_seeds or (42,),
        tuned,
        out,
    )


@click.command("tune")
@click.option("--dataset", "datasets", multiple=True, type=click.Choice(EVAL_DATASETS))
@click.option("--models", default=None, help="Comma-separated baselines (default: all that apply).")
@click.option("--trials", default=10, show_default=True, help="Optuna TPE trials per model and data set.")
@reports_path_option("--out", name="tuned_params.json")
@pass_settings
def tune(settings: Settings, datasets: tuple[str, ...], models: str | None, trials: int, out: Path) -> None:
    """Tune every baseline with the same budget on protocol (a)'s validation part (seed 42, NDCG@10);
    merges into reports/tuned_params.json, which `llmrec eval` reads."""
    tune_baselines(settings, datasets or EVAL_DATASETS, _csv(models), trials, out)


@click.command("train-ranker")
@reports_path_option("--tuned", name="tuned_params.json")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--from-ledger",
    is_flag=True,
    help="Train on the interactions the worker applied (PostgreSQL ledger) instead of the data files.",
)
@click.option(
    "--core",
    type=int,
    default=2,
    show_default=True,
    help="With --from-ledger: keep users and items with at least this many interactions.",
)
@pass_settings
def train_ranker(settings: Settings, tuned: Path, seed: int, from_ledger: bool, core: int) -> None:
    """Train the llmrec ranker and save artifacts/ranker/<version>/, pointing CURRENT at it.

    By default on the MAL Completed lists (full data when present, else the shipped sample) with the item
    index's vectors; with --from-ledger on what the stream applied, with the vectors the API serves. A
    running API swaps the new version in within `api.ranker_poll_s`, without a restart."""
    if from_ledger:
        click.echo(str(train_ranker_from_ledger(settings, tuned, seed=seed, core=core)))
        return
    click.echo(str(train_ranker_from_settings(settings, tuned, seed=seed)))


@click.command("eval-report")
@reports_path_option("--tuned", name="tuned_params.json")
@reports_path_option("--eval-json", name="eval.json")
@reports_path_option("--out")
@click.option("--eval-seed", "eval_seeds", multiple=True, type=int, help="Eval seeds (default: 42 43).")
@click.option("--render-only", is_flag=True, help="Rebuild the markdown from the saved JSON and eval.json.")
@pass_settings
def eval_report(
    settings: Settings,
    tuned: Path,
    eval_json: Path,
    out: Path,
    eval_seeds: tuple[int, ...],
    render_only: bool,
) -> None:
    """The llmrec model's report (Tables 3, 4, 9, 10, static vs dynamic profiles, t-SNE, inference time,
    case studies): reports/llmrec_model.{md,json} + PNGs. Needs the full data in LLMREC_DATA_DIR."""
    report = llmrec_model_report(
        settings, tuned, eval_json, out, eval_seeds or (42, 43), render_only=render_only
    )
    gains = report.get("gains") or {}
    if gains:
        click.echo(
            f"llmrec vs {gains['best_baseline']}: "
            f"NDCG@10 {gains['ndcg@10_gain']:+.1%}, MRR {gains['mrr_gain']:+.1%}"
        )
    click.echo(f"wrote {out / 'llmrec_model.md'}")
