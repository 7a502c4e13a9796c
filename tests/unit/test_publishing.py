"""publish_file and replay, with the real EventProducer over a fake librdkafka client."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobs.publishing import PublishSummary, publish_file, replay, resolve_source
from llmrec.data_source import DataKind, sample_source
from llmrec.events.producer import EventProducer, PublishError
from llmrec.events.validation import parse_event
from llmrec.settings import KafkaSettings, Settings

RATING = {
    "event_id": "e1",
    "user_id": "mal:navieh",
    "item_id": "mal:11319",
    "event_time": "2023-01-02T03:04:05Z",
    "event_type": "rating",
    "rating": 9,
}
WATCH = {
    "event_id": "e2",
    "user_id": "mal:karthiga",
    "item_id": "mal:21",
    "event_time": "2013-03-03T10:52:53Z",
    "event_type": "watch",
    "status": "watching",
    "episodes_watched": 586,
}


class Message:
    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic


class RecordingClient:
    """A librdkafka stand-in that acknowledges everything except messages to ``fail``."""

    def __init__(self, fail: str | None = None) -> None:
        self.messages: list[tuple[str, bytes | None, bytes | None]] = []
        self.fail = fail
        self._pending: list[tuple[str, Callable[[Any, Any], None] | None]] = []

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        on_delivery: Callable[[Any, Any], None] | None = None,
    ) -> None:
        self.messages.append((topic, key, value))
        self._pending.append((topic, on_delivery))

    def poll(self, timeout: float = 0) -> int:
        for topic, callback in self._pending:
            if callback is not None:
                callback("boom" if topic == self.fail else None, Message(topic))
        self._pending.clear()
        return 0

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0


@pytest.fixture
def settings() -> Settings:
    return Settings(kafka=KafkaSettings(topic_prefix="t"))


def factory(client: RecordingClient) -> Callable[[Settings], EventProducer]:
    return lambda s: EventProducer(s.kafka, client=client)


def test_publish_file_sends_valid_lines_and_reports_invalid(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(
        "\n".join([json.dumps(RATING), "{oops", json.dumps(WATCH), json.dumps({**RATING, "item_id": 0})])
        + "\n"
    )
    client = RecordingClient()
    summary = publish_file(settings, path, progress=False, producer_factory=factory(client))
    assert [m[0] for m in client.messages] == ["t.ratings.v1", "t.watch.v1"]
    assert [m[1] for m in client.messages] == [b"mal:navieh", b"mal:karthiga"]
    assert summary.published == summary.delivered == 2 and summary.failed == 0
    assert summary.invalid_count == 2
    assert [(i.line_no, i.reason) for i in summary.invalid] == [(2, "invalid_json"), (4, "schema_violation")]
    assert summary.by_type == {"rating": 1, "watch": 1}
    assert json.loads(json.dumps(summary.as_dict()))["by_topic"] == {"t.ratings.v1": 1, "t.watch.v1": 1}


def test_publish_file_raw_sends_every_line_verbatim(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    bad_rating = json.dumps({**RATING, "rating": 42})
    path.write_text("\n".join(["{oops", bad_rating, "[]", json.dumps(WATCH)]) + "\n")
    client = RecordingClient()
    summary = publish_file(
        settings, path, progress=False, raw=True, raw_topic="t.reviews.v1", producer_factory=factory(client)
    )
    assert client.messages == [
        ("t.reviews.v1", None, b"{oops"),
        ("t.ratings.v1", b"mal:navieh", bad_rating.encode()),
        ("t.reviews.v1", None, b"[]"),
        ("t.watch.v1", b"mal:karthiga", json.dumps(WATCH).encode()),
    ]
    assert summary.published == 4 and summary.invalid_count == 0
    assert summary.by_type == {"invalid": 3, "watch": 1}


def test_raw_needs_jsonl(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("event_type\nrating\n")
    with pytest.raises(ValueError, match="JSON-lines"):
        publish_file(settings, path, progress=False, raw=True, producer_factory=factory(RecordingClient()))


def test_failed_delivery_raises_with_the_summary(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(RATING) + "\n" + json.dumps(WATCH) + "\n")
    with pytest.raises(PublishError) as caught:
        publish_file(
            settings, path, progress=False, producer_factory=factory(RecordingClient(fail="t.watch.v1"))
        )
    summary = caught.value.summary
    assert isinstance(summary, PublishSummary)
    assert (summary.published, summary.delivered, summary.failed) == (2, 1, 1)


def test_replay_of_the_sample_in_time_order(settings: Settings) -> None:
    client = RecordingClient()
    summary = replay(settings, "sample", limit=500, progress=False, producer_factory=factory(client))
    assert summary.published == summary.delivered == 500 == len(client.messages)
    assert summary.replay is not None and summary.replay.total_events > 500
    assert summary.replay.skipped  # the sample keeps rows that are skipped, with reasons
    decoded = [parse_event(value) for _, _, value in client.messages]
    times = [e.event_time for e in decoded]
    assert times == sorted(times)
    assert all(key == e.user_id.encode() for (_, key, _), e in zip(client.messages, decoded, strict=True))
    assert sum(summary.by_type.values()) == 500
    assert "shipped sample" in summary.source


def test_replay_is_repeatable(settings: Settings) -> None:
    first, second = RecordingClient(), RecordingClient()
    replay(settings, "sample", limit=200, progress=False, producer_factory=factory(first))
    replay(settings, sample_source(), limit=200, progress=False, producer_factory=factory(second))
    assert first.messages == second.messages


def test_resolve_source(settings: Settings, tmp_path: Path) -> None:
    assert resolve_source(settings, "sample").kind is DataKind.SAMPLE
    absent = Settings(data_dir=tmp_path / "absent")
    assert resolve_source(absent, None).kind is DataKind.SAMPLE
    assert resolve_source(absent, "auto").kind is DataKind.SAMPLE
    with pytest.raises(FileNotFoundError):
        resolve_source(absent, "full")
    with pytest.raises(FileNotFoundError):
        resolve_source(settings, tmp_path)
