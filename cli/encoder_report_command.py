"""``llmrec encoder-report``: the encoder's report from finished runs. Its own module, apart from the training
commands, because it needs no torch or transformers and so starts in a fraction of a second."""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import reports_path_option
from encoder_triton.training.report import write_report


@click.command("encoder-report")
@click.argument("run_dirs", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
@reports_path_option(
    "--bench", "bench_json", name="encoder-bench.json", help="Serving benchmark (python -m bench.encoder)."
)
@reports_path_option("--out")
def encoder_report(run_dirs: tuple[Path, ...], bench_json: Path, out: Path) -> None:
    """reports/encoder.{md,json} + PNGs from training runs (the first is the headline) and the serving
    benchmark."""
    if not run_dirs:
        raise click.UsageError("give at least one run folder (artifacts/encoder-runs/<run-id>)")
    md = write_report(list(run_dirs), bench_json, out)
    click.echo(f"wrote {md} and {md.with_suffix('.json')}")
