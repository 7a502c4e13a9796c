"""``llmrec publish | replay | import-items | build-index | schema``: events and item events into Kafka, the
item index, event schemas."""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import pass_settings
from jobs.build_index import build_index_from_settings
from jobs.event_schemas import write_event_schemas
from jobs.import_items import ImportFrom, import_from, import_item_file
from jobs.publishing import publish_file
from jobs.publishing import replay as replay_events
from llmrec.events.files import FileFormat
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


@click.command("import-items")
@click.argument("path", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--from",
    "importer",
    type=click.Choice([i.value for i in ImportFrom]),
    default=None,
    help="Instead of FILE: the MAL catalogue (full data when present, else the shipped sample) or "
    "MovieLens movies.csv from the data folder.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice([f.value for f in FileFormat]),
    default=None,
    help="Format of FILE (default: from its extension).",
)
@click.option("--source", default=None, help="The events' source field (at most 64 characters).")
@click.option("--dry-run", is_flag=True, help="Validate and report only; publish nothing (needs no Kafka).")
@pass_settings
def import_items(
    settings: Settings,
    path: Path | None,
    importer: str | None,
    fmt: str | None,
    source: str | None,
    dry_run: bool,
) -> None:
    """Publish a catalogue (JSONL or CSV items, or --from mal|movielens) as item upserts.

    JSONL: one object per line with id, title and optionally text, categories, attributes, vector. CSV:
    columns id,title,text,categories (categories separated by |); other columns become attributes. Invalid
    items are reported with their line number and reason and not published. Re-importing the same file
    publishes the same event ids. The worker embeds and stores them; the API serves them within seconds.
    """
    if (path is None) == (importer is None):
        raise click.UsageError("give either FILE or --from, not both")
    if source is not None and len(source) > 64:
        raise click.BadParameter("at most 64 characters", param_hint="--source")
    try:
        if path is not None:
            file_format = FileFormat(fmt) if fmt is not None else None
            summary = import_item_file(settings, path, fmt=file_format, source=source, dry_run=dry_run)
        else:
            summary = import_from(settings, ImportFrom(importer or ""), source=source, dry_run=dry_run)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
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
