"""EventProducer and the publishing commands against a real Kafka broker."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from jobs.publishing import publish_file, replay
from llmrec.events.producer import EventProducer, PublishError
from llmrec.events.schema import RatingEvent, ReviewEvent, ReviewTag, WatchEvent, WatchStatus
from llmrec.events.topics import ensure_topics, system_topics
from llmrec.events.validation import AnyEvent, parse_event
from llmrec.settings import KafkaSettings, Settings

pytestmark = pytest.mark.integration

PARTITIONS = 4
WHEN = datetime(2023, 1, 2, 3, 4, 5, tzinfo=UTC)
Record = tuple[str, int, int, bytes | None, bytes | None]  # topic, partition, offset, key, value


@pytest.fixture
def kafka(kafka_bootstrap: str) -> KafkaSettings:
    """Settings with topics of their own, so tests never read each other's messages."""
    settings = KafkaSettings(
        bootstrap=kafka_bootstrap, topic_prefix=f"prod{uuid.uuid4().hex[:8]}", partitions=PARTITIONS
    )
    ensure_topics(kafka_bootstrap, system_topics(settings), PARTITIONS)
    return settings


def consume(
    kafka: KafkaSettings, topics: tuple[str, ...], expected: int, timeout_s: float = 30.0
) -> list[Record]:
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": f"check-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe(list(topics))
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            records.append(
                (message.topic(), message.partition(), message.offset(), message.key(), message.value())
            )
        # Anything beyond the expected count is a bug (a duplicate, or a message that should not be there).
        extra = consumer.poll(1.0)
        if extra is not None and extra.error() is None:
            records.append((extra.topic(), extra.partition(), extra.offset(), extra.key(), extra.value()))
    finally:
        consumer.close()
    return records


def user_events(user: str, start: int) -> Iterator[AnyEvent]:
    for n in range(start, start + 5):
        yield WatchEvent(
            event_id=f"{user}-w{n}",
            user_id=user,
            item_id="mal:2167",
            event_time=WHEN,
            status=WatchStatus.WATCHING,
            episodes_watched=n,
            total_episodes=23,
        )
    yield RatingEvent(event_id=f"{user}-r", user_id=user, item_id="mal:2167", event_time=WHEN, rating=9)
    yield ReviewEvent(
        event_id=f"{user}-v",
        user_id=user,
        item_id="mal:2167",
        event_time=WHEN,
        text="Quiet and warm.",
        tag=ReviewTag.RECOMMENDED,
    )


def test_events_land_on_their_topic_keyed_by_user_in_order(kafka: KafkaSettings) -> None:
    sent = [*user_events("mal:i7Core", 1), *user_events("mal:_Redo_", 1)]
    with EventProducer(kafka) as producer:
        for event in sent:
            producer.publish(event)
    assert (producer.delivered, producer.failed) == (len(sent), 0)

    records = consume(kafka, kafka.event_topics, len(sent))
    assert len(records) == len(sent)
    by_id = {event.event_id: event for event in sent}
    for topic, _, _, key, value in records:
        assert value is not None
        event = parse_event(value)
        assert event == by_id[event.event_id]
        assert key == event.user_id.encode()
        assert (
            topic
            == {"rating": kafka.ratings_topic, "review": kafka.reviews_topic, "watch": kafka.watch_topic}[
                event.event_type.value
            ]
        )
    # One user's watch events: one partition, offsets in publish order.
    for user in ("mal:i7Core", "mal:_Redo_"):
        watch = sorted(
            (partition, offset, value)
            for topic, partition, offset, key, value in records
            if topic == kafka.watch_topic and key == user.encode()
        )
        assert len({partition for partition, _, _ in watch}) == 1
        assert [parse_event(value).event_id for _, _, value in watch] == [f"{user}-w{n}" for n in range(1, 6)]


def test_publish_raw_sends_bytes_verbatim(kafka: KafkaSettings) -> None:
    payloads = [b"\xff\xfe not utf-8", b"{not json", b'{"event_type": "rating"}']
    with EventProducer(kafka) as producer:
        for value in payloads:
            producer.publish_raw(kafka.ratings_topic, "mal:fuzz", value)
    records = consume(kafka, (kafka.ratings_topic,), len(payloads))
    assert sorted(value for *_, value in records if value is not None) == sorted(payloads)
    assert {key for _, _, _, key, _ in records} == {b"mal:fuzz"}


def test_unknown_topic_fails_the_flush(kafka: KafkaSettings) -> None:
    producer = EventProducer(kafka, delivery_timeout_s=5.0)
    producer.publish_raw(f"{kafka.topic_prefix}.no-such-topic", None, b"{}")
    with pytest.raises(PublishError):
        producer.flush(20.0)
    assert producer.failed + producer.pending == 1


def test_publish_file_and_replay_end_to_end(kafka: KafkaSettings, tmp_path: Path) -> None:
    settings = Settings(kafka=kafka)
    rating = {
        "event_id": "f1",
        "user_id": "mal:navieh",
        "item_id": "mal:11319",
        "event_time": "2023-01-02T03:04:05Z",
        "event_type": "rating",
        "rating": 9,
    }
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(rating) + "\n{broken\n")
    summary = publish_file(settings, path, progress=False)
    assert (summary.delivered, summary.invalid_count) == (1, 1)

    replayed = replay(settings, "sample", limit=300, progress=False)
    assert replayed.delivered == 300 and replayed.failed == 0
    records = consume(kafka, kafka.event_topics, 301)
    assert len(records) == 301
