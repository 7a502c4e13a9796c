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

    run_migrations(_settings(ctx).postgres.dsn.get_secret_value())


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
    from llmrec.index_build import build_index_from_settings

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
    from grpc_api.client import RecommenderClient
    from llmrec.render import recommendations_table

    with RecommenderClient(_settings(ctx).api.target) as client:
        answer = client.recommend(user_id, k=k, include_genres=list(genres), exclude_genres=list(exclude))
    recommendations_table(answer)


@cli.command()
@click.argument("item_id", type=int)
@click.option("-k", default=10, show_default=True)
@click.pass_context
def similar(ctx: click.Context, item_id: int, k: int) -> None:
    """Ask the running API for items similar to one item."""
    from grpc_api.client import RecommenderClient
    from llmrec.render import similar_table

    with RecommenderClient(_settings(ctx).api.target) as client:
        answer = client.similar_items(item_id, k=k)
    similar_table(item_id, answer)


@cli.command()
@click.argument("user_id")
@click.pass_context
def profile(ctx: click.Context, user_id: str) -> None:
    """Ask the running API what it knows about a user."""
    from grpc_api.client import RecommenderClient
    from llmrec.render import profile_table

    with RecommenderClient(_settings(ctx).api.target) as client:
        answer = client.user_profile(user_id)
    profile_table(answer)


@cli.command("eval")
@click.option(
    "--dataset",
    "datasets",
    multiple=True,
    type=click.Choice(["mal-completed", "mal-rating23", "movielens-small"]),
    help="Data sets to evaluate (default: both MAL sets). Needs the full data in LLMREC_DATA_DIR.",
)
@click.option("--seed", "seeds", multiple=True, type=int, help="Seeds (default: 42 and 43).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/eval.json"), show_default=True)
@click.pass_context
def evaluate(ctx: click.Context, datasets: tuple[str, ...], seeds: tuple[int, ...], out: Path) -> None:
    """Train and evaluate the baselines on real data; writes reports/eval.json and reports/eval.md."""
    from ranker.evaluation import DEFAULT_MODELS, PROTOCOL_RANDOM, PROTOCOL_TEMPORAL, load_dataset, run_eval

    data_dir = _settings(ctx).data_dir
    names = datasets or ("mal-completed", "mal-rating23")
    loaded = {name: load_dataset(name, data_dir) for name in names}
    run_eval(
        loaded,
        DEFAULT_MODELS,
        seeds=seeds or (42, 43),
        out_path=out,
        protocols=(PROTOCOL_RANDOM, PROTOCOL_TEMPORAL),
    )


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


@cli.command()
@click.option("--keep-running", is_flag=True, help="Leave the stack up after the demo.")
@click.pass_context
def demo(ctx: click.Context, keep_running: bool) -> None:
    """Bring the stack up, stream real events through it, show recommendations, shut it down."""
    from llmrec.demo import run_demo

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
