"""``llmrec train-sentiment | train-encoder | export-encoder``: train the language model and its sentiment
head, and write a run as a Triton model version. Default paths lie under the configured root."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cli.options import artifacts_path_option, pass_settings
from encoder_triton.sentiment.train import train_sentiment as run_sentiment_training
from encoder_triton.training.export import export_encoder as export_run
from encoder_triton.training.presets import preset
from encoder_triton.training.run import train_encoder as run_encoder_training
from llmrec.settings import Settings


@click.command("train-sentiment")
@artifacts_path_option("--out", name="sentiment")
@click.option("--seed", type=int, default=42, show_default=True)
@pass_settings
def train_sentiment(settings: Settings, out: Path, seed: int) -> None:
    """Train the review-sentiment head on MAL reviews; compare with the anchor scorer and VADER on held-out
    titles. Writes the head to --out and reports/sentiment.{json,md}."""
    report = run_sentiment_training(
        settings.data_dir, out, seed=seed, progress=True, reports_dir=settings.reports_dir
    )
    for name, result in report["results"].items():
        test = result["test"]
        click.echo(
            f"{name:>7}: accuracy {test['accuracy']:.3f}  macro-F1 {test['macro_f1']:.3f}  "
            f"Spearman vs score {test['spearman_vs_score']:.3f}"
        )


@click.command("train-encoder")
@click.option(
    "--preset",
    "preset_name",
    type=click.Choice(["cpu-small", "paper", "tiny"]),
    default="cpu-small",
    show_default=True,
    help="paper = Table 1 hyperparameters (GPU); cpu-small = minutes on 2 cores.",
)
@click.option(
    "--base",
    default="minilm",
    show_default=True,
    help="minilm (offline package), scratch-roberta, or a local Hugging Face folder (roberta-base...).",
)
@click.option("--seed", type=int, default=42, show_default=True)
@artifacts_path_option("--runs-dir", name="encoder-runs")
@click.option("--run-id", default=None, help="Run folder name (default: time, preset, base, seed).")
@pass_settings
def train_encoder(
    settings: Settings, preset_name: str, base: str, seed: int, runs_dir: Path, run_id: str | None
) -> None:
    """MLM domain adaptation, SimCSE contrastive fine-tuning and the sentiment head; writes a run folder."""
    run_dir = run_encoder_training(
        preset(preset_name, base=base, seed=seed), settings.data_dir, runs_dir, run_id
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    click.echo(f"run folder: {run_dir}")
    click.echo(
        f"perplexity {metrics['mlm']['perplexity_base']:.1f} -> {metrics['mlm']['perplexity_adapted']:.1f}; "
        + "recall@10 "
        + " / ".join(
            f"{k} {metrics['retrieval'][k]['recall@10']:.3f}" for k in ("base", "adapted", "contrastive")
        )
        + f"; sentiment macro-F1 {metrics['sentiment']['test']['macro_f1']:.3f} "
        f"(VADER {metrics['sentiment']['vader_test']['macro_f1']:.3f})"
    )


@click.command("export-encoder")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--version", "version", type=int, default=None, help="Version number (default: next free).")
@click.option("--force", is_flag=True, help="Replace an existing version folder.")
@pass_settings
def export_encoder(settings: Settings, run_dir: Path, version: int | None, force: bool) -> None:
    """Write RUN_DIR (a train-encoder run, or a train-sentiment folder for the packaged MiniLM) as a Triton
    model version; Triton serves the highest version."""
    triton = settings.triton
    target = export_run(run_dir, triton.repository, version, triton.model_name, overwrite=force)
    click.echo(f"exported {run_dir} -> {target}")
