"""The ``llmrec`` command line. Each command loads settings once and hands them to one domain call.

Heavy modules (torch, faust, grpc) are imported inside the commands so that ``llmrec --help`` is instant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from llmrec.logs import configure_logging
from llmrec.settings import Settings, load_settings

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "proto" / "events" / "v1"


@click.group()
@click.option("--log-level", default=None, help="Override LLMREC_LOG_LEVEL (DEBUG, INFO, WARNING).")
@click.pass_context
def cli(ctx: click.Context, log_level: str | None) -> None:
    """llmrec: a real-time recommender over Kafka, PostgreSQL, Triton, FAISS and gRPC."""
    settings = load_settings()
    if log_level:
        settings = settings.model_copy(update={"log_level": log_level})
    configure_logging(settings.log_level, settings.log_json)
    ctx.obj = settings


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.obj
    assert isinstance(settings, Settings)
    return settings


@cli.command()
@click.pass_context
def up(ctx: click.Context) -> None:
    """Start Kafka, PostgreSQL, Triton, the worker and the API (whatever is not yet running)."""
    from deploy.stack import up as stack_up

    stack_up(_settings(ctx))


@cli.command()
@click.pass_context
def down(ctx: click.Context) -> None:
    """Stop everything `llmrec up` started."""
    from deploy.stack import down as stack_down

    stack_down(_settings(ctx))


@cli.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Show which components run and their endpoints."""
    from deploy.stack import status as stack_status

    stack_status(_settings(ctx))


@cli.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Create or upgrade the database schema."""
    from llmrec.store import migrate as run_migrations

    run_migrations(_settings(ctx).postgres.conninfo())


@cli.command()
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run the Faust worker that applies events to user profiles."""
    from stream.main import run_worker

    run_worker(_settings(ctx))


@cli.command()
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Run the gRPC recommendation API."""
    from grpc_api.server import serve as serve_api

    serve_api(_settings(ctx))


@cli.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def publish(ctx: click.Context, path: Path) -> None:
    """Publish the events in a CSV or JSONL file to their Kafka topics."""
    from llmrec.events.publishing import publish_file

    summary = publish_file(_settings(ctx), path, progress=True)
    click.echo(str(summary))


@cli.command()
@click.option("--limit", type=int, default=None, help="Publish at most this many events.")
@click.option(
    "--source",
    type=click.Choice(["auto", "full", "sample"]),
    default="auto",
    help="auto: the full data in LLMREC_DATA_DIR when present, else the shipped sample.",
)
@click.pass_context
def replay(ctx: click.Context, limit: int | None, source: str) -> None:
    """Turn the real MyAnimeList data into events and publish them in event-time order."""
    from llmrec.events.publishing import replay as run_replay

    summary = run_replay(_settings(ctx), source=source, limit=limit, progress=True)
    click.echo(str(summary))


@cli.command("build-index")
@click.pass_context
def build_index(ctx: click.Context) -> None:
    """Embed the item catalogue through Triton and write the FAISS index to the artifacts folder."""
    from jobs.build_index import build_index_from_settings

    summary = build_index_from_settings(_settings(ctx), progress=True)
    click.echo(str(summary))


@cli.command()
@click.argument("user_id")
@click.option("-k", default=10, show_default=True)
@click.option("--genre", "genres", multiple=True, help="Only items with one of these genres.")
@click.option("--exclude-genre", "exclude", multiple=True, help="Drop items with any of these genres.")
@click.pass_context
def recommend(
    ctx: click.Context, user_id: str, k: int, genres: tuple[str, ...], exclude: tuple[str, ...]
) -> None:
    """Ask the running API for a user's recommendations."""
    from cli.render import recommendations_table
    from grpc_api.client import RecommenderClient

    with RecommenderClient(_settings(ctx).api.target) as client:
        answer = client.recommend(user_id, k=k, include_genres=list(genres), exclude_genres=list(exclude))
    recommendations_table(answer)


@cli.command()
@click.argument("item_id", type=int)
@click.option("-k", default=10, show_default=True)
@click.pass_context
def similar(ctx: click.Context, item_id: int, k: int) -> None:
    """Ask the running API for items similar to one item."""
    from cli.render import similar_table
    from grpc_api.client import RecommenderClient

    with RecommenderClient(_settings(ctx).api.target) as client:
        answer = client.similar_items(item_id, k=k)
    similar_table(item_id, answer)


@cli.command()
@click.argument("user_id")
@click.pass_context
def profile(ctx: click.Context, user_id: str) -> None:
    """Ask the running API what it knows about a user."""
    from cli.render import profile_table
    from grpc_api.client import RecommenderClient

    with RecommenderClient(_settings(ctx).api.target) as client:
        answer = client.user_profile(user_id)
    profile_table(answer)


@cli.command()
@click.option("--target", default=None, help="host:port of the API (default: api.host:api.port, loopback).")
@click.option("-c", "--concurrency", default=8, show_default=True, help="Concurrent clients.")
@click.option("-n", "--requests", default=1000, show_default=True, help="Stop after this many requests.")
@click.option("--duration", default=30.0, show_default=True, help="Stop after this many seconds.")
@click.option("--warmup", default=16, show_default=True, help="Uncounted requests sent first.")
@click.option("-k", default=10, show_default=True)
@click.option("--timeout", "timeout_s", default=5.0, show_default=True, help="Deadline per request (s).")
@click.option(
    "--users-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="One user id a line."
)
@click.option("--users-range", help="PREFIX:START:STOP, e.g. u:0:1000 for u0 .. u999.")
@click.option(
    "--users-from-store",
    "store_limit",
    type=int,
    default=None,
    help="Up to N users with a profile in PostgreSQL (the default source, N=10000).",
)
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tls", is_flag=True, help="TLS with the system's root certificates.")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the result.")
@click.pass_context
def loadtest(
    ctx: click.Context,
    target: str | None,
    concurrency: int,
    requests: int,
    duration: float,
    warmup: int,
    k: int,
    timeout_s: float,
    users_file: Path | None,
    users_range: str | None,
    store_limit: int | None,
    token_file: Path | None,
    tls: bool,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    seed: int,
    json_out: Path | None,
) -> None:
    """Drive Recommend with concurrent clients; print latency percentiles, req/s and errors by code."""
    from grpc_api import loadtest as lt

    settings = _settings(ctx)
    if sum(x is not None for x in (users_file, users_range, store_limit)) > 1:
        raise click.UsageError("give one of --users-file, --users-range, --users-from-store")
    if users_file is not None:
        users = lt.users_from_file(users_file)
    elif users_range is not None:
        prefix, _, bounds = users_range.rpartition(":")
        prefix, _, start = prefix.rpartition(":")
        try:
            users = lt.users_from_range(prefix, int(start), int(bounds))
        except ValueError as exc:
            raise click.BadParameter(f"{users_range!r}: {exc}", param_hint="--users-range") from None
    else:
        users = lt.users_from_store(settings.postgres.conninfo(), store_limit or 10_000)
    if not users:
        raise click.UsageError("no user ids: the source is empty")
    token = token_file.read_text(encoding="utf-8").strip() if token_file is not None else None
    plan = lt.LoadPlan(
        target=target or settings.api.target,
        concurrency=concurrency,
        requests=requests,
        duration_s=duration,
        warmup=warmup,
        k=k,
        timeout_s=timeout_s,
        seed=seed,
        token=token,
        tls=tls,
        tls_ca_file=tls_ca,
        tls_cert_file=tls_cert,
        tls_key_file=tls_key,
    )
    result = lt.run(plan, users)
    click.echo(lt.render(result))
    if json_out is not None:
        lt.write_json(result, json_out)
    if result.ok == 0:
        sys.exit(1)


_EVAL_DATASETS = ("mal-completed", "mal-rating23", "movielens-small")


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@cli.command("eval")
@click.option(
    "--dataset",
    "datasets",
    multiple=True,
    type=click.Choice(_EVAL_DATASETS),
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
@click.option(
    "--tuned",
    type=click.Path(path_type=Path),
    default=Path("reports/tuned_params.json"),
    show_default=True,
    help="Tuned parameters from `llmrec tune`.",
)
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/eval.json"), show_default=True)
@click.pass_context
def evaluate(
    ctx: click.Context,
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
    from research import runner

    settings = _settings(ctx)
    loaded = runner.load_datasets(datasets or _EVAL_DATASETS, settings.data_dir)
    features = runner.text_features(loaded, settings.data_dir, settings.index_dir)
    runner.run_evaluation(
        loaded,
        runner.resolve_models(_csv(models)),
        runner.resolve_protocols(_csv(protocols) or []),
        seeds or (42, 43),
        other_seeds or (42,),
        tuned,
        out,
        features,
    )


@cli.command("tune")
@click.option("--dataset", "datasets", multiple=True, type=click.Choice(_EVAL_DATASETS))
@click.option("--models", default=None, help="Comma-separated baselines (default: all that apply).")
@click.option("--trials", default=10, show_default=True, help="Optuna TPE trials per model and data set.")
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("reports/tuned_params.json"), show_default=True
)
@click.pass_context
def tune_command(
    ctx: click.Context, datasets: tuple[str, ...], models: str | None, trials: int, out: Path
) -> None:
    """Tune every baseline with the same budget on protocol (a)'s validation part (seed 42, NDCG@10);
    merges into reports/tuned_params.json, which `llmrec eval` reads."""
    from research import runner

    settings = _settings(ctx)
    loaded = runner.load_datasets(datasets or _EVAL_DATASETS, settings.data_dir)
    features = runner.text_features(loaded, settings.data_dir, settings.index_dir)
    runner.run_tuning(loaded, runner.resolve_models(_csv(models)), trials, out, features)


@cli.command("train-ranker")
@click.option(
    "--tuned", type=click.Path(path_type=Path), default=Path("reports/tuned_params.json"), show_default=True
)
@click.option("--seed", type=int, default=42, show_default=True)
@click.pass_context
def train_ranker_command(ctx: click.Context, tuned: Path, seed: int) -> None:
    """Train the llmrec ranker on the MAL Completed lists (full data when present, else the shipped sample)
    with the item index's vectors; saves artifacts/ranker/<version>/ and points CURRENT at it. The API
    loads CURRENT at start-up."""
    from jobs.train_ranker import train_ranker
    from llmrec.data_source import data_source_at, resolve_data_source
    from research.registry import resolved_params
    from research.tuning import load_tuned

    settings = _settings(ctx)
    source = data_source_at(resolve_data_source(settings).path)  # names the shipped sample as such
    params = resolved_params(load_tuned(tuned), "mal-completed", "llmrec")
    summary = train_ranker(source.path, settings.index_dir, settings.ranker_dir, params=params, seed=seed)
    click.echo(f"{summary} ({source.describe()}, {'tuned' if params else 'default'} parameters)")


@cli.command("eval-report")
@click.option(
    "--tuned", type=click.Path(path_type=Path), default=Path("reports/tuned_params.json"), show_default=True
)
@click.option(
    "--eval-json", type=click.Path(path_type=Path), default=Path("reports/eval.json"), show_default=True
)
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports"), show_default=True)
@click.option("--eval-seed", "eval_seeds", multiple=True, type=int, help="Eval seeds (default: 42 43).")
@click.option("--render-only", is_flag=True, help="Rebuild the markdown from the saved JSON and eval.json.")
@click.pass_context
def eval_report_command(
    ctx: click.Context,
    tuned: Path,
    eval_json: Path,
    out: Path,
    eval_seeds: tuple[int, ...],
    render_only: bool,
) -> None:
    """The llmrec model's report (Tables 3, 4, 9, 10, static vs dynamic profiles, t-SNE, inference time,
    case studies): reports/llmrec_model.{md,json} + PNGs. Needs the full data in LLMREC_DATA_DIR."""
    from ranker.model import report as llmrec_report
    from research.registry import resolved_params
    from research.tuning import load_tuned, tuned_params

    settings = _settings(ctx)
    stored = load_tuned(tuned)
    if render_only:
        report = llmrec_report.render_only(out, eval_json)
    else:
        report = llmrec_report.run_report(
            settings.data_dir,
            settings.index_dir,
            out,
            eval_json,
            resolved_params(stored, "mal-completed", "llmrec"),
            eval_seeds=eval_seeds or (42, 43),
            baseline_params=tuned_params(stored, "mal-completed", "ease"),
            tuned_path=tuned,
        )
    gains = report.get("gains") or {}
    if gains:
        click.echo(
            f"llmrec vs {gains['best_baseline']}: "
            f"NDCG@10 {gains['ndcg@10_gain']:+.1%}, MRR {gains['mrr_gain']:+.1%}"
        )
    click.echo(f"wrote {out / 'llmrec_model.md'}")


@cli.command("train-sentiment")
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("artifacts/sentiment"), show_default=True
)
@click.option("--seed", type=int, default=42, show_default=True)
@click.pass_context
def train_sentiment_command(ctx: click.Context, out: Path, seed: int) -> None:
    """Train the review-sentiment head on MAL reviews; compare with the anchor scorer and VADER on held-out
    titles. Writes the head to --out and reports/sentiment.{json,md}."""
    from encoder_triton.sentiment.train import train_sentiment

    report = train_sentiment(_settings(ctx).data_dir, out, seed=seed, progress=True)
    for name, result in report["results"].items():
        test = result["test"]
        click.echo(
            f"{name:>7}: accuracy {test['accuracy']:.3f}  macro-F1 {test['macro_f1']:.3f}  "
            f"Spearman vs score {test['spearman_vs_score']:.3f}"
        )


@cli.command("train-encoder")
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
@click.option(
    "--runs-dir", type=click.Path(path_type=Path), default=Path("artifacts/encoder-runs"), show_default=True
)
@click.option("--run-id", default=None, help="Run folder name (default: time, preset, base, seed).")
@click.pass_context
def train_encoder_command(
    ctx: click.Context, preset_name: str, base: str, seed: int, runs_dir: Path, run_id: str | None
) -> None:
    """MLM domain adaptation, SimCSE contrastive fine-tuning and the sentiment head; writes a run folder."""
    from encoder_triton.training.presets import preset
    from encoder_triton.training.run import train_encoder

    run_dir = train_encoder(
        preset(preset_name, base=base, seed=seed), _settings(ctx).data_dir, runs_dir, run_id
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


@cli.command("export-encoder")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--version", "version", type=int, default=None, help="Version number (default: next free).")
@click.option("--force", is_flag=True, help="Replace an existing version folder.")
@click.pass_context
def export_encoder_command(ctx: click.Context, run_dir: Path, version: int | None, force: bool) -> None:
    """Write RUN_DIR (a train-encoder run, or a train-sentiment folder for the packaged MiniLM) as a Triton
    model version; Triton serves the highest version."""
    from encoder_triton.training.export import export_encoder

    triton = _settings(ctx).triton
    target = export_encoder(run_dir, triton.repository, version, triton.model_name, overwrite=force)
    click.echo(f"exported {run_dir} -> {target}")


@cli.command("encoder-report")
@click.argument("run_dirs", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--bench",
    "bench_json",
    type=click.Path(path_type=Path),
    default=Path("reports/encoder-bench.json"),
    show_default=True,
    help="Serving benchmark (python -m bench.encoder).",
)
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports"), show_default=True)
def encoder_report_command(run_dirs: tuple[Path, ...], bench_json: Path, out: Path) -> None:
    """reports/encoder.{md,json} + PNGs from training runs (the first is the headline) and the serving
    benchmark."""
    from encoder_triton.training.report import write_report

    if not run_dirs:
        raise click.UsageError("give at least one run folder (artifacts/encoder-runs/<run-id>)")
    md = write_report(list(run_dirs), bench_json, out)
    click.echo(f"wrote {md} and {md.with_suffix('.json')}")


@cli.command()
@click.option("--keep-running", is_flag=True, help="Leave the stack up after the demo.")
@click.pass_context
def demo(ctx: click.Context, keep_running: bool) -> None:
    """Bring the stack up, stream real events through it, show recommendations, shut it down."""
    from cli.demo import run_demo

    sys.exit(run_demo(_settings(ctx), keep_running=keep_running))


@cli.command()
@click.option("--check", is_flag=True, help="Fail if the committed schemas are out of date.")
def schema(check: bool) -> None:
    """Write the events' JSON Schemas to proto/events/v1/ for other languages."""
    from llmrec.events.schema import json_schemas

    stale = []
    SCHEMA_DIR.mkdir(parents=True, exist_ok=True)
    for name, body in json_schemas().items():
        text = json.dumps(body, indent=2, sort_keys=True) + "\n"
        target = SCHEMA_DIR / name
        if check:
            if not target.exists() or target.read_text() != text:
                stale.append(name)
        else:
            target.write_text(text)
    if stale:
        raise click.ClickException(f"stale event schemas: {', '.join(stale)}; run `llmrec schema`")


def main() -> None:
    cli(auto_envvar_prefix=None)


if __name__ == "__main__":
    main()
