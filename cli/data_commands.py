"""``llmrec publish | replay | build-index | schema``: events into Kafka, the item index, event schemas."""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import pass_settings
from jobs.build_index import build_index_from_settings
from jobs.event_schemas import write_event_schemas
from jobs.publishing import publish_file
from jobs.publishing import replay as replay_events
from llmrec.settings import Settings


@click.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_settings
def publish(settings: Settings, path: Path) -> None:
    """Publish the events in a CSV or JSONL file to their Kafka topics."""
    summary = publish_file(settings, path, progress=True)
    click.echo(str(summary))


@click.command()
@click.option("--limit", type=int, default=None, help="Publish at most this many events.")
@click.option(
    "--source",
    type=click.Choice(["auto", "full", "sample"]),
    default="auto",
    help="auto: the full data in LLMREC_DATA_DIR when present, else the shipped sample.",
)
@pass_settings
def replay(settings: Settings, limit: int | None, source: str) -> None:
    """Turn the real MyAnimeList data into events and publish them in event-time order."""
    summary = replay_events(settings, source=source, limit=limit, progress=True)
    click.echo(str(summary))


@click.command("build-index")
@pass_settings
def build_index(settings: Settings) -> None:
    """Embed the item catalogue through Triton and write the FAISS index to the artifacts folder."""
    summary = build_index_from_settings(settings, progress=True)
    click.echo(str(summary))


@click.command()
@click.option("--check", is_flag=True, help="Fail if the committed schemas are out of date.")
def schema(check: bool) -> None:
    """Write the events' JSON Schemas to proto/events/v1/ for other languages."""
    stale = write_event_schemas(check=check)
    if stale:
        raise click.ClickException(f"stale event schemas: {', '.join(stale)}; run `llmrec schema`")
