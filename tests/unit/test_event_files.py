"""Event files for ``llmrec publish FILE``: JSON lines and CSV, valid and invalid lines with line numbers."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from llmrec.events.files import FileFormat, detect_format, read_event_file
from llmrec.events.schema import RatingEvent, ReviewEvent, WatchEvent, WatchStatus
from llmrec.events.validation import RejectReason

RATING = {
    "event_id": "e1",
    "user_id": "mal:navieh",
    "item_id": "mal:11319",
    "event_time": "2023-01-02T03:04:05Z",
    "event_type": "rating",
    "rating": 9,
}
REVIEW = {
    "event_id": "e2",
    "user_id": "mal:navieh",
    "item_id": "mal:11319",
    "event_time": "2023-01-02T03:04:06Z",
    "event_type": "review",
    "text": "Really successful as a comedy :)",
    "tag": "recommended",
}


def test_detect_format() -> None:
    assert detect_format(Path("a.jsonl")) is FileFormat.JSONL
    assert detect_format(Path("a.NDJSON.gz")) is FileFormat.JSONL
    assert detect_format(Path("a.csv")) is FileFormat.CSV
    with pytest.raises(ValueError, match="unknown event file type"):
        detect_format(Path("a.txt"))


def test_jsonl_valid_and_invalid_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    lines = [
        json.dumps(RATING),
        "",  # blank lines are skipped but still counted
        "{not json",
        json.dumps({**RATING, "event_id": "e3", "rating": 11}),
        json.dumps({**RATING, "event_id": "e4", "event_type": "like"}),
        json.dumps(REVIEW),
        "[1, 2]",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    records = list(read_event_file(path))
    assert [r.line_no for r in records] == [1, 3, 4, 5, 6, 7]
    assert [r.ok for r in records] == [True, False, False, False, True, False]
    assert isinstance(records[0].event, RatingEvent) and records[0].event.rating == 9.0
    assert records[0].event.item_id == "mal:11319"
    assert isinstance(records[4].event, ReviewEvent)
    reasons = [r.error.reason for r in records if r.error is not None]
    assert reasons == [
        RejectReason.INVALID_JSON,
        RejectReason.SCHEMA_VIOLATION,
        RejectReason.UNKNOWN_EVENT_TYPE,
        RejectReason.NOT_AN_OBJECT,
    ]
    assert records[1].raw == b"{not json"  # raw bytes kept for raw publishing


def test_jsonl_gzip(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps(RATING) + "\n")
    assert [r.ok for r in read_event_file(path)] == [True]


def test_csv_mixed_types_empty_cells_and_multiline_text(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "event_type,event_id,user_id,item_id,event_time,rating,text,tag,status,episodes_watched,total_episodes\n"
        "rating,r1,mal:i7Core,mal:2167,2023-01-01T00:00:00Z,10,,,,,\n"
        "review,v1,mal:_Redo_,mal:2167,2023-01-01T00:00:01+00:00,8,"
        '"Quiet and warm.\nSecond line.",recommended,,,\n'
        "watch,w1,mal:karthiga,mal:21,2013-03-03T10:52:53Z,,,,watching,586,\n"
        "watch,w2,mal:karthiga,mal:59,2013-03-10T13:54:51Z,,,,finished,26,26\n"
        "rating,r2,mal:i7Core,mal:2167,2023-01-01T00:00:00,7,,,,,\n"  # no timezone
        "rating,r3,mal:i7Core,mal:2167,2023-01-01T00:00:00Z,7,,,,,,extra\n",
        encoding="utf-8",
    )
    records = list(read_event_file(path))
    assert [r.line_no for r in records] == [2, 3, 5, 6, 7, 8]
    assert [r.ok for r in records] == [True, True, True, False, False, False]
    assert [r.event.item_id for r in records[:3] if r.event is not None] == ["mal:2167", "mal:2167", "mal:21"]
    review = records[1].event
    assert (
        isinstance(review, ReviewEvent)
        and review.text == "Quiet and warm.\nSecond line."
        and review.rating == 8
    )
    watch = records[2].event
    assert isinstance(watch, WatchEvent) and watch.status is WatchStatus.WATCHING
    assert watch.episodes_watched == 586 and watch.total_episodes is None
    assert all(r.error is not None and r.error.reason is RejectReason.SCHEMA_VIOLATION for r in records[3:])
    assert records[5].error is not None and "fields" in records[5].error.detail
