"""What ``llmrec import-items`` does, minus the command-line parsing: a catalogue into item upsert events.

Inputs, all turned into the same item objects (``id``, ``title``, ``text``, ``categories``, ``attributes``,
``vector``) and then through one path (build the upsert, validate it as the worker would, publish it):

- a JSON-lines file: one item object per line (``read_items_jsonl``);
- a CSV file: columns ``id,title,text,categories`` (categories separated by ``|``), every other column a
  string attribute (``read_items_csv``);
- the MAL catalogue (``mal_items``, ids ``mal:<anime_id>``) and MovieLens ``movies.csv`` (``movielens_items``,
  ids ``ml:<movieId>``): importers, not special cases.

Each upsert's ``event_id`` is derived from the item id and a hash of its content (``item_event_id``), so
importing the same file twice publishes the same event ids and the worker applies each once. Invalid lines
are reported with their line number and reason and are not published.

The worker embeds and stores them (``stream.item_processing``); the API serves them at its next catalogue
poll (``grpc_api.live_catalogue``).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from jobs.publishing import finish_delivery
from llmrec import tracing
from llmrec.catalogue import Catalogue, Item, build_catalogue
from llmrec.data_source import find_data_file, open_data_file, resolve_data_source
from llmrec.events.files import FileFormat, csv_row_payload, detect_format
from llmrec.events.producer import EventProducer
from llmrec.events.schema import AnyItemEvent, ItemOp, UpsertItemEvent
from llmrec.events.topics import ensure_system_topics
from llmrec.events.validation import InvalidEvent, RejectReason, decode_object, parse_item_event
from llmrec.item_ids import MOVIELENS_NAMESPACE, namespaced_id
from llmrec.item_text import KIND_ATTRIBUTE, THEMES_ATTRIBUTE
from llmrec.logs import get_logger
from llmrec.settings import Settings

log = get_logger(__name__)

MAX_REPORTED_INVALID = 1000
CATEGORY_SEPARATOR = "|"
# The fields of an item object in a JSON-lines file (and the CSV columns with a meaning of their own).
ITEM_FIELDS = ("id", "title", "text", "categories", "attributes", "vector")
MOVIELENS_MOVIES = Path("movielens-latest-small") / "movies.csv"
_NO_GENRES = "(no genres listed)"
_YEAR = re.compile(r"\((\d{4})\)\s*$")


class ImportFrom(StrEnum):
    """The built-in importers (``llmrec import-items --from``)."""

    MAL = "mal"
    MOVIELENS = "movielens"


# One input item: its line number (1-based; for an importer, its position) and either its fields or why the
# line could not even be read as an item object.
RawItem = tuple[int, Mapping[str, Any] | InvalidEvent]


class ItemSink(Protocol):
    """What the import needs from a producer (``EventProducer``; a fake librdkafka client in unit tests)."""

    sent: int
    delivered: int
    failed: int

    def publish_item(self, event: AnyItemEvent) -> str: ...

    def flush(self, timeout: float = ...) -> None: ...


ItemSinkFactory = Callable[[Settings], ItemSink]


def _default_sink(settings: Settings) -> ItemSink:
    tracing.configure("llmrec-publisher")  # off unless OTEL_* asks for it; one trace per item event
    # The broker does not auto-create topics; creating them here (idempotent) lets an import run first.
    ensure_system_topics(settings.kafka)
    return EventProducer(settings.kafka, client_id="llmrec-import-items")


@dataclass(frozen=True)
class InvalidItem:
    line_no: int
    reason: str
    detail: str


@dataclass
class ImportSummary:
    source: str  # the file or importer that was read
    dry_run: bool = False
    read: int = 0  # items read (valid or not)
    published: int = 0  # handed to the producer (0 on a dry run)
    valid: int = 0
    delivered: int = 0  # acknowledged by the brokers
    failed: int = 0
    invalid: list[InvalidItem] = field(default_factory=list)  # first MAX_REPORTED_INVALID, in input order
    invalid_count: int = 0
    elapsed_s: float = 0.0

    def __str__(self) -> str:
        """A few lines for people (the CLI prints this)."""
        if self.dry_run:
            counts = f"read {self.read}, valid {self.valid}, invalid {self.invalid_count}"
            head = f"{self.source}: {counts} (dry run)"
        else:
            head = (
                f"{self.source}: read {self.read}, published {self.published}, invalid {self.invalid_count}; "
                f"delivered {self.delivered}, failed {self.failed}"
            )
        lines = [f"{head}, in {self.elapsed_s:.1f} s"]
        if self.invalid_count:
            shown = "; ".join(f"line {i.line_no}: {i.reason}: {i.detail}" for i in self.invalid[:5])
            more = f" (+{self.invalid_count - 5} more)" if self.invalid_count > 5 else ""
            lines.append(f"invalid items not published: {shown}{more}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "dry_run": self.dry_run,
            "read": self.read,
            "valid": self.valid,
            "published": self.published,
            "delivered": self.delivered,
            "failed": self.failed,
            "invalid_count": self.invalid_count,
            "invalid": [vars(line) for line in self.invalid],
            "elapsed_s": round(self.elapsed_s, 3),
        }


# -- one item object -> one upsert event -------------------------------------------------------------------


def _digest(value: Any) -> str:
    # ASCII: escapes any lone surrogate, so every input hashes.
    text = json.dumps(value, ensure_ascii=True, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def item_event_id(item_id: Any, content: Mapping[str, Any]) -> str:
    """A deterministic ``event_id`` for an upsert: the same item with the same content gets the same id, so
    re-importing a file is idempotent; any change of content makes a new event. The item id is hashed too,
    as it may hold characters an ``event_id`` may not."""
    return f"item-{_digest(item_id)[:24]}-{_digest(dict(content))[:24]}"


def build_upsert(fields: Mapping[str, Any], *, event_time: datetime, source: str | None) -> UpsertItemEvent:
    """The upsert for one item object, validated exactly as the worker will validate it (the wire bytes go
    through ``parse_item_event``). Raises ``InvalidEvent`` with the worker's reason code."""
    unknown = sorted(set(fields) - set(ITEM_FIELDS))
    if unknown:
        raise InvalidEvent(
            RejectReason.SCHEMA_VIOLATION,
            f"{', '.join(repr(k)[:60] for k in unknown[:5])}: not an item field "
            f"(fields: {', '.join(ITEM_FIELDS)})",
        )
    content = {key: value for key, value in fields.items() if key != "id" and value is not None}
    try:
        payload: dict[str, Any] = {
            "op": ItemOp.UPSERT.value,
            "event_id": item_event_id(fields.get("id"), content),
            "event_time": event_time.isoformat(),
            **content,
        }
        if "id" in fields:
            payload["item_id"] = fields["id"]
        if source is not None:
            payload["source"] = source
        text = json.dumps(payload, ensure_ascii=False, allow_nan=False)
    except ValueError:  # NaN or Infinity in a Python-built item (a JSON file cannot hold them)
        raise InvalidEvent(RejectReason.NON_FINITE_NUMBER, "an item field holds NaN or Infinity") from None
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate ("\ud800" in a JSON line): send it escaped, as a producer would, for the verdict.
        raw = json.dumps(payload, ensure_ascii=True).encode("ascii")
    event = parse_item_event(raw)
    assert isinstance(event, UpsertItemEvent)  # op is "upsert", and no item field can change it
    return event


# -- readers: files and importers -> item objects ----------------------------------------------------------


def read_items_jsonl(path: Path) -> Iterator[RawItem]:
    """One item object per non-blank line, decoded with the worker's rules (UTF-8, one object, no NaN, no
    huge numbers): a bad line is reported with its reason, and the lines after it are still read."""
    with gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            body = line.rstrip(b"\r\n")
            if not body.strip():
                continue
            try:
                yield line_no, decode_object(body)
            except InvalidEvent as exc:
                yield line_no, exc


def _split_categories(cell: str) -> list[str]:
    return [part.strip() for part in cell.split(CATEGORY_SEPARATOR) if part.strip()]


def read_items_csv(path: Path) -> Iterator[RawItem]:
    """Rows of a CSV file with a header; ``id``, ``title``, ``text`` and ``categories`` (``|``-separated) are
    the item's fields, every other non-empty cell a string attribute named by its column."""
    with open_data_file(path) as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        missing = [name for name in ("id", "title") if name not in header]
        if missing:
            raise ValueError(f"{path.name}: the CSV header has no {' and no '.join(missing)} column")
        previous_end = reader.line_num
        for cells in reader:
            line_no, previous_end = previous_end + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            try:
                row = csv_row_payload(header, cells)
            except InvalidEvent as exc:
                yield line_no, exc
                continue
            item: dict[str, Any] = {}
            attributes: dict[str, Any] = {}
            for name, value in row.items():
                if name == "categories":
                    item["categories"] = _split_categories(value)
                elif name in ("id", "title", "text"):
                    item[name] = value
                else:
                    attributes[name] = value
            if attributes:
                item["attributes"] = attributes
            yield line_no, item


def read_item_file(path: Path, fmt: FileFormat | None = None) -> Iterator[RawItem]:
    """Every item of a JSON-lines or CSV file (format from the extension unless given), in file order."""
    fmt = fmt if fmt is not None else detect_format(path)
    return read_items_jsonl(path) if fmt is FileFormat.JSONL else read_items_csv(path)


def mal_item(item: Item) -> dict[str, Any]:
    """A MAL catalogue entry as an item object: ``mal:<anime_id>``, synopsis as text, genres as categories,
    themes and the rest as attributes."""
    attributes: dict[str, Any] = {"anime_id": item.item_id, "members": item.members, "catalogue": item.source}
    if item.themes:
        attributes[THEMES_ATTRIBUTE] = list(item.themes)
    if item.type:
        attributes[KIND_ATTRIBUTE] = item.type
    if item.episodes is not None:
        attributes["episodes"] = item.episodes
    fields: dict[str, Any] = {
        "id": item.external_id,
        "title": item.title,
        "categories": list(item.genres),
        "attributes": attributes,
    }
    if item.synopsis:
        fields["text"] = item.synopsis
    return fields


def mal_items(catalogue: Catalogue) -> Iterator[RawItem]:
    for position, item in enumerate(catalogue, start=1):
        yield position, mal_item(item)


def movielens_items(path: Path) -> Iterator[RawItem]:
    """MovieLens ``movies.csv`` (``movieId,title,genres``): ids ``ml:<movieId>``, genres as categories, the
    year in the title (``Toy Story (1995)``) also as the attribute ``year``."""
    with open_data_file(path) as handle:
        reader = csv.DictReader(handle)
        previous_end = reader.line_num
        for row in reader:
            line_no, previous_end = previous_end + 1, reader.line_num
            title = (row.get("title") or "").strip()
            genres = (row.get("genres") or "").strip()
            fields: dict[str, Any] = {
                "id": namespaced_id(MOVIELENS_NAMESPACE, (row.get("movieId") or "").strip()),
                "title": title,
                "categories": [] if genres == _NO_GENRES else _split_categories(genres),
            }
            year = _YEAR.search(title)
            if year:
                fields["attributes"] = {"year": int(year.group(1))}
            yield line_no, fields


def movielens_movies_path(settings: Settings) -> Path:
    path = find_data_file(settings.data_dir, MOVIELENS_MOVIES)
    if path is None:
        raise FileNotFoundError(f"no {MOVIELENS_MOVIES} under {settings.data_dir}")
    return path


# -- the one path: validate, publish, summarise -------------------------------------------------------------


def import_items(
    settings: Settings,
    items: Iterable[RawItem],
    *,
    label: str,
    source: str | None = None,
    dry_run: bool = False,
    progress: bool = True,
    total: int | None = None,
    now: datetime | None = None,
    sink_factory: ItemSinkFactory | None = None,
    flush_timeout_s: float = 60.0,
) -> ImportSummary:
    """Validate every item as an upsert and publish the valid ones to the items topic (none on a dry run).

    ``sink_factory`` defaults to an ``EventProducer`` on the configured Kafka (topics created first).
    Raises ``PublishError`` (with ``.summary``) if the brokers did not acknowledge everything.
    """
    started = time.monotonic()
    event_time = now if now is not None else datetime.now(UTC)
    summary = ImportSummary(source=label, dry_run=dry_run)
    sink = None if dry_run else (sink_factory or _default_sink)(settings)
    with tqdm(total=total, desc=f"import {label}", unit="item", disable=not progress) as bar:
        for line_no, fields in items:
            summary.read += 1
            bar.update(1)
            try:
                if isinstance(fields, InvalidEvent):
                    raise fields
                event = build_upsert(fields, event_time=event_time, source=source)
            except InvalidEvent as exc:
                summary.invalid_count += 1
                if len(summary.invalid) < MAX_REPORTED_INVALID:
                    summary.invalid.append(InvalidItem(line_no, exc.reason.value, exc.detail))
                continue
            summary.valid += 1
            if sink is not None:
                sink.publish_item(event)
                summary.published += 1
    if summary.invalid_count:
        log.warning(
            "import_invalid_items",
            source=label,
            invalid=summary.invalid_count,
            first_line=summary.invalid[0].line_no if summary.invalid else None,
        )
    if sink is not None:
        finish_delivery(sink, summary, started, flush_timeout_s)
    else:
        summary.elapsed_s = time.monotonic() - started
    log.info("import_items_done", **{k: v for k, v in summary.as_dict().items() if k != "invalid"})
    return summary


def import_item_file(
    settings: Settings, path: Path, *, fmt: FileFormat | None = None, **options: Any
) -> ImportSummary:
    """``llmrec import-items FILE``: a JSON-lines or CSV catalogue."""
    return import_items(settings, read_item_file(path, fmt), label=str(path), **options)


def import_from(
    settings: Settings, what: ImportFrom, *, source: str | None = None, **options: Any
) -> ImportSummary:
    """``llmrec import-items --from mal|movielens``: the MAL catalogue (the full data in ``settings.data_dir``
    when present, else the shipped sample) or MovieLens ``movies.csv`` from ``settings.data_dir``."""
    source = source if source is not None else what.value
    if what is ImportFrom.MAL:
        data = resolve_data_source(settings)
        catalogue = build_catalogue(data.path)
        return import_items(
            settings,
            mal_items(catalogue),
            label=f"MAL catalogue ({data.describe()})",
            source=source,
            total=len(catalogue),
            **options,
        )
    path = movielens_movies_path(settings)
    return import_items(settings, movielens_items(path), label=str(path), source=source, **options)
