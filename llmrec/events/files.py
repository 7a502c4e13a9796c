"""Read events from a file for ``llmrec publish FILE``.

Formats (by extension; ``.gz`` allowed on top):

- JSON lines (``.jsonl``, ``.ndjson``, ``.json``): one event object per line, exactly the wire form. Blank
  lines are ignored.
- CSV (``.csv``): a header row naming event fields; ``event_type`` picks the type of each row. An empty cell
  means "field absent", so one file can mix ratings (``rating``), reviews (``text``, ``tag``) and watch events
  (``status``, ``episodes_watched``, ``total_episodes``). Numbers are read as text and converted by the
  schema.

Each line is validated with ``llmrec.events.validation.parse_event``, so a bad line gets the same reason code
the worker would give it. Validation never stops the file: every record comes back with its line number and
either an event or the error, and the caller decides (``publish_file`` publishes the valid ones and reports
the rest; its raw mode sends every JSON line unvalidated, for dead-letter tests).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from llmrec.data_source import open_data_file
from llmrec.events.validation import AnyEvent, InvalidEvent, RejectReason, parse_event


class FileFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


_SUFFIXES = {
    ".jsonl": FileFormat.JSONL,
    ".ndjson": FileFormat.JSONL,
    ".json": FileFormat.JSONL,
    ".csv": FileFormat.CSV,
}


@dataclass(frozen=True)
class FileRecord:
    line_no: int  # 1-based line where the record starts (a quoted CSV field may span several lines)
    raw: bytes  # the bytes that would be published: the JSON line as written, or the CSV row as JSON
    event: AnyEvent | None
    error: InvalidEvent | None

    @property
    def ok(self) -> bool:
        return self.event is not None


def detect_format(path: Path) -> FileFormat:
    name = path.name.lower().removesuffix(".gz")
    for suffix, fmt in _SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    raise ValueError(
        f"{path.name}: unknown event file type (use .jsonl, .ndjson, .json or .csv, optionally .gz)"
    )


def _record(line_no: int, raw: bytes) -> FileRecord:
    try:
        return FileRecord(line_no, raw, parse_event(raw), None)
    except InvalidEvent as exc:
        return FileRecord(line_no, raw, None, exc)


def read_jsonl(path: Path) -> Iterator[FileRecord]:
    with open_data_file(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            text = line.rstrip("\r\n")
            if text.strip():
                yield _record(line_no, text.encode("utf-8"))


def csv_row_payload(header: list[str], cells: list[str]) -> dict[str, str]:
    """The non-empty cells of a CSV row by column name; InvalidEvent when the row is wider than the header."""
    if len(cells) > len(header):
        raise InvalidEvent(
            RejectReason.SCHEMA_VIOLATION, f"row has {len(cells)} fields, the header has {len(header)}"
        )
    return {name: value.strip() for name, value in zip(header, cells, strict=False) if name and value.strip()}


def read_csv(path: Path) -> Iterator[FileRecord]:
    with open_data_file(path) as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        previous_end = reader.line_num
        for cells in reader:
            line_no, previous_end = previous_end + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            try:
                payload = csv_row_payload(header, cells)
            except InvalidEvent as exc:
                yield FileRecord(line_no, json.dumps(cells, ensure_ascii=False).encode("utf-8"), None, exc)
                continue
            yield _record(line_no, json.dumps(payload, ensure_ascii=False).encode("utf-8"))


def read_event_file(path: Path) -> Iterator[FileRecord]:
    """Every record of a JSONL or CSV event file, valid or not, in file order."""
    if detect_format(path) is FileFormat.JSONL:
        return read_jsonl(path)
    return read_csv(path)
