"""``llmrec import-items``: the readers, the idempotent event ids, the importers and the command, over the
real EventProducer with a fake librdkafka client (no Kafka)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import jobs.import_items as import_job
from cli.main import cli
from jobs.import_items import (
    ImportFrom,
    build_upsert,
    import_from,
    import_item_file,
    item_event_id,
    mal_items,
    read_item_file,
    read_items_csv,
    read_items_jsonl,
)
from llmrec.catalogue import build_catalogue
from llmrec.data_source import SAMPLE_DIR
from llmrec.events.files import FileFormat
from llmrec.events.producer import EventProducer, PublishError
from llmrec.events.schema import UpsertItemEvent
from llmrec.events.validation import InvalidEvent, RejectReason, parse_item_event
from llmrec.settings import KafkaSettings, Settings
from tests.unit.test_publishing import RecordingClient

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
KITCHEN = [
    {"id": "sku-kettle", "title": "Kettle", "categories": ["kitchen"], "attributes": {"price": 39.9}},
    {"id": "sku-pan", "title": "Frying pan, 28 cm", "text": "Cast iron.", "vector": [0.1, 0.2, 0.3]},
    {"id": "sku-whisk", "title": "Whisk"},
]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # No MAL data in data_dir: the MAL importer falls back to the shipped sample.
    return Settings(kafka=KafkaSettings(topic_prefix="shop"), data_dir=tmp_path / "data")


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def sink_of(client: RecordingClient) -> Callable[[Settings], EventProducer]:
    return lambda settings: EventProducer(settings.kafka, client=client)


def items_of(raw_items: Any) -> list[tuple[int, Any]]:
    return list(raw_items)


# -- readers ---------------------------------------------------------------------------------------------


def test_jsonl_reader_keeps_line_numbers_and_skips_blank_lines(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "items.jsonl", [KITCHEN[0], "", "{broken", "[1]", '{"id": "x", "n": NaN}'])
    read = items_of(read_items_jsonl(path))
    assert [line for line, _ in read] == [1, 3, 4, 5]
    assert read[0][1] == KITCHEN[0]
    reasons = [item.reason for _, item in read[1:] if isinstance(item, InvalidEvent)]
    assert reasons == [RejectReason.INVALID_JSON, RejectReason.NOT_AN_OBJECT, RejectReason.NON_FINITE_NUMBER]


def test_jsonl_reader_reports_bad_utf8_on_its_line_and_reads_on(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_bytes(b'{"id": "a", "title": "caf\xe9"}\n' + json.dumps(KITCHEN[2]).encode() + b"\n")
    read = items_of(read_items_jsonl(path))
    assert isinstance(read[0][1], InvalidEvent) and read[0][1].reason is RejectReason.INVALID_UTF8
    assert read[1] == (2, KITCHEN[2])


def test_csv_reader_splits_categories_and_keeps_other_columns_as_attributes(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text(
        "id,title,text,categories,brand,colour\n"
        "sku-1,Kettle,Boils water.,kitchen| appliances ,Acme,\n"
        '\nsku-2,"Pan, 28 cm","Cast iron,\nheavy.",kitchen,,black\n'
        "sku-3,Whisk,,,,\n"
        "sku-4,Too,many,cells,a,b,c\n"
    )
    read = items_of(read_items_csv(path))
    assert [line for line, _ in read] == [2, 4, 6, 7]
    assert read[0][1] == {
        "id": "sku-1",
        "title": "Kettle",
        "text": "Boils water.",
        "categories": ["kitchen", "appliances"],
        "attributes": {"brand": "Acme"},
    }
    assert read[1][1]["text"] == "Cast iron,\nheavy." and read[1][1]["attributes"] == {"colour": "black"}
    assert read[2][1] == {"id": "sku-3", "title": "Whisk"}
    assert isinstance(read[3][1], InvalidEvent) and read[3][1].reason is RejectReason.SCHEMA_VIOLATION


def test_csv_without_an_id_column_is_refused_up_front(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text("sku,title\n1,Kettle\n")
    with pytest.raises(ValueError, match="no id column"):
        list(read_items_csv(path))


def test_the_format_comes_from_the_extension_unless_given(tmp_path: Path) -> None:
    path = tmp_path / "items.txt"
    path.write_text("id,title\nsku-1,Kettle\n")
    with pytest.raises(ValueError, match="unknown event file type"):
        read_item_file(path)
    assert items_of(read_item_file(path, FileFormat.CSV)) == [(2, {"id": "sku-1", "title": "Kettle"})]


# -- events ------------------------------------------------------------------------------------------------


def test_an_item_object_becomes_a_valid_upsert() -> None:
    event = build_upsert(KITCHEN[1], event_time=NOW, source="shop")
    assert isinstance(event, UpsertItemEvent)
    assert (event.item_id, event.title, event.text, event.vector) == (
        "sku-pan",
        "Frying pan, 28 cm",
        "Cast iron.",
        (0.1, 0.2, 0.3),
    )
    assert (event.source, event.event_time) == ("shop", NOW)


def test_event_ids_are_deterministic_and_change_with_the_content() -> None:
    first = build_upsert(KITCHEN[0], event_time=NOW, source=None)
    again = build_upsert(dict(reversed(list(KITCHEN[0].items()))), event_time=datetime.now(UTC), source="x")
    assert first.event_id == again.event_id  # key order, import time and source do not matter
    changed = build_upsert({**KITCHEN[0], "title": "Kettle 2"}, event_time=NOW, source=None)
    other_item = build_upsert({**KITCHEN[0], "id": "sku-kettle-2"}, event_time=NOW, source=None)
    assert len({first.event_id, changed.event_id, other_item.event_id}) == 3
    # Any item id gives a valid event id (the id is hashed).
    assert item_event_id("Café crème 250 g / 🍵", {"title": "t"}).startswith("item-")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"title": "No id"}, RejectReason.SCHEMA_VIOLATION),
        ({"id": 5114, "title": "Numeric id"}, RejectReason.SCHEMA_VIOLATION),
        ({"id": "sku-1", "title": ""}, RejectReason.SCHEMA_VIOLATION),
        ({"id": "sku-1", "title": "t", "op": "delete"}, RejectReason.SCHEMA_VIOLATION),
        ({"id": "sku-1", "title": "t", "price": 3}, RejectReason.SCHEMA_VIOLATION),
        ({"id": "sku-1", "title": "t", "vector": [float("nan")]}, RejectReason.NON_FINITE_NUMBER),
        ({"id": "sku-1", "title": "t", "text": "a" * 1_000_000}, RejectReason.TOO_LARGE),
        ({"id": "sku-1", "title": "t", "attributes": {"a": "b" * 20_000}}, RejectReason.SCHEMA_VIOLATION),
        ({"id": "sku-1", "title": "lone \ud800 surrogate"}, RejectReason.SCHEMA_VIOLATION),
    ],
)
def test_invalid_items_get_the_workers_reason(fields: dict[str, Any], reason: RejectReason) -> None:
    with pytest.raises(InvalidEvent) as caught:
        build_upsert(fields, event_time=NOW, source=None)
    assert caught.value.reason is reason


# -- the import: validate, publish, summarise --------------------------------------------------------------


def test_a_file_is_published_to_the_items_topic_and_reimporting_it_is_idempotent(
    settings: Settings, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "kitchen.jsonl", [*KITCHEN, {"id": 7, "title": "bad"}, "nope"])
    runs = []
    for _ in range(2):
        client = RecordingClient()
        summary = import_item_file(
            settings, path, progress=False, source="shop", sink_factory=sink_of(client)
        )
        runs.append(client.messages)
        assert (summary.read, summary.published, summary.delivered, summary.invalid_count) == (5, 3, 3, 2)
        assert [(i.line_no, i.reason) for i in summary.invalid] == [
            (4, "schema_violation"),
            (5, "invalid_json"),
        ]
        assert "line 4: schema_violation" in str(summary) and "published 3" in str(summary)
    assert {topic for topic, _, _ in runs[0]} == {"shop.items.v1"}
    assert [key for _, key, _ in runs[0]] == [b"sku-kettle", b"sku-pan", b"sku-whisk"]
    events = [[parse_item_event(value) for _, _, value in run] for run in runs]
    assert [e.event_id for e in events[0]] == [e.event_id for e in events[1]]


def test_a_dry_run_validates_and_publishes_nothing(settings: Settings, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "kitchen.jsonl", [*KITCHEN, {"title": "no id"}])

    def no_sink(settings: Settings) -> EventProducer:
        raise AssertionError("a dry run must not connect to Kafka")

    summary = import_item_file(settings, path, progress=False, dry_run=True, sink_factory=no_sink)
    assert (summary.read, summary.valid, summary.published, summary.invalid_count) == (4, 3, 0, 1)
    assert "dry run" in str(summary)


def test_undelivered_items_raise_with_the_summary(settings: Settings, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "kitchen.jsonl", KITCHEN)
    with pytest.raises(PublishError) as caught:
        import_item_file(
            settings, path, progress=False, sink_factory=sink_of(RecordingClient(fail="shop.items.v1"))
        )
    summary = caught.value.summary
    assert isinstance(summary, import_job.ImportSummary) and summary.failed == 3


# -- importers ---------------------------------------------------------------------------------------------


def test_the_mal_catalogue_imports_as_mal_prefixed_items(settings: Settings) -> None:
    catalogue = build_catalogue(SAMPLE_DIR)
    first = next(iter(catalogue))
    client = RecordingClient()
    summary = import_from(settings, ImportFrom.MAL, progress=False, sink_factory=sink_of(client))
    assert summary.invalid_count == 0 and summary.published == len(catalogue) == len(client.messages)
    events = {e.item_id: e for e in (parse_item_event(value) for _, _, value in client.messages)}
    event = events[f"mal:{first.item_id}"]
    assert isinstance(event, UpsertItemEvent)
    assert (event.title, event.categories, event.source) == (first.title, first.genres, "mal")
    assert event.text == (first.synopsis or None)
    assert event.attributes["anime_id"] == first.item_id
    assert any(isinstance(e, UpsertItemEvent) and e.text for e in events.values())
    assert [line for line, _ in mal_items(catalogue)][:3] == [1, 2, 3]


def test_movielens_movies_import_as_ml_prefixed_items(settings: Settings) -> None:
    folder = settings.data_dir / "movielens-latest-small"
    folder.mkdir(parents=True)
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '11,"American President, The (1995)",Comedy|Drama|Romance\n'
        "182727,A Christmas Story Live! (2017),(no genres listed)\n"
        "99,,Drama\n"
    )
    client = RecordingClient()
    summary = import_from(settings, ImportFrom.MOVIELENS, progress=False, sink_factory=sink_of(client))
    assert (summary.read, summary.published, summary.invalid_count) == (4, 3, 1)
    assert summary.invalid[0].line_no == 5  # the movie without a title
    events = [parse_item_event(value) for _, _, value in client.messages]
    assert all(isinstance(e, UpsertItemEvent) for e in events)
    by_id = {e.item_id: e for e in events if isinstance(e, UpsertItemEvent)}
    assert by_id["ml:1"].categories == ("Adventure", "Animation", "Children", "Comedy", "Fantasy")
    assert by_id["ml:11"].title == "American President, The (1995)"
    assert by_id["ml:11"].attributes == {"year": 1995}
    assert by_id["ml:182727"].categories == () and by_id["ml:182727"].source == "movielens"


def test_movielens_without_its_file_says_where_it_looked(settings: Settings) -> None:
    with pytest.raises(FileNotFoundError, match=r"movies\.csv"):
        import_from(settings, ImportFrom.MOVIELENS, progress=False, dry_run=True)


# -- the command -------------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("LLMREC_ROOT", "LLMREC_DATA_DIR", "LLMREC_KAFKA__TOPIC_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LLMREC_ROOT", str(tmp_path))
    monkeypatch.setenv("LLMREC_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_the_command_dry_run_needs_no_kafka(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_sink(settings: Settings) -> EventProducer:
        raise AssertionError("a dry run must not connect to Kafka")

    monkeypatch.setattr(import_job, "_default_sink", no_sink)
    path = write_jsonl(cli_env / "kitchen.jsonl", [*KITCHEN, {"id": "x", "title": 3}])
    result = CliRunner().invoke(cli, ["import-items", str(path), "--dry-run"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "read 4, valid 3, invalid 1 (dry run)" in result.output
    assert "line 4: schema_violation" in result.output


def test_the_command_publishes_through_the_producer(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = RecordingClient()
    monkeypatch.setattr(import_job, "_default_sink", sink_of(client))
    path = cli_env / "kitchen.txt"
    path.write_text("id,title,categories,price\nsku-1,Kettle,kitchen|tea,39.90\n")
    args = ["import-items", str(path), "--format", "csv", "--source", "shop-csv"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "read 1, published 1, invalid 0; delivered 1" in result.output
    (event,) = [parse_item_event(value) for _, _, value in client.messages]
    assert isinstance(event, UpsertItemEvent)
    assert (event.item_id, event.categories, event.attributes, event.source) == (
        "sku-1",
        ("kitchen", "tea"),
        {"price": "39.90"},
        "shop-csv",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["import-items"], "either FILE or --from"),
        (["import-items", "--from", "mal", "FILE"], "either FILE or --from"),
        (["import-items", "--from", "movielens", "--dry-run"], "movies.csv"),
        (["import-items", "FILE.txt", "--dry-run"], "unknown event file type"),
    ],
)
def test_the_command_reports_usage_errors(cli_env: Path, args: list[str], message: str) -> None:
    (cli_env / "FILE").write_text("{}\n")
    (cli_env / "FILE.txt").write_text("{}\n")
    args = [str(cli_env / a) if a.startswith("FILE") else a for a in args]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0
    assert message in result.output
