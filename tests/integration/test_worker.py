"""The worker as a process (``python -m stream``) against real Kafka and PostgreSQL.

Publishes valid and malformed events, waits until the ledger holds the valid ones and the dead-letter
topic the malformed ones, then publishes everything again and checks that no profile changed.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer

from llmrec.events.producer import EventProducer
from llmrec.events.schema import RatingEvent, ReviewEvent, WatchEvent, WatchStatus
from llmrec.events.topics import ensure_system_topics
from llmrec.events.validation import AnyEvent
from llmrec.item_ids import mal_item_id
from llmrec.settings import Settings, TritonSettings
from tests.integration.workers import WorkerProcess, build_index, caught_up, running_worker, wait_until

pytestmark = pytest.mark.integration

ITEM_IDS = [mal_item_id(i) for i in (1, 5, 6, 7, 20, 30, 5114, 9253, 1535, 11061)]
DIM = 16
T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
def worker_settings(settings_factory: Callable[..., Settings]) -> Settings:
    settings = settings_factory()
    build_index(settings, ITEM_IDS, DIM)
    return settings


@pytest.fixture
def worker(worker_settings: Settings) -> Iterator[WorkerProcess]:
    with running_worker(worker_settings) as handle:
        yield handle


def ledger_count(dsn: str, prefix: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM interactions WHERE event_id LIKE %s", (f"{prefix}%",)
        ).fetchone()
    return int(row[0]) if row else 0


def profiles(dsn: str, prefix: str) -> dict[str, tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT user_id, vector_sum::real[], weight_sum, ref_time, ratings, reviews, watch_events,"
            " updated_at FROM user_profiles WHERE user_id LIKE %s",
            (f"{prefix}%",),
        ).fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


def read_topic(
    settings: Settings, topic: str, expected: int, timeout_s: float = 60.0
) -> list[dict[str, Any]]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            records.append(json.loads(msg.value()))
    finally:
        consumer.close()
    return records


def valid_events(prefix: str, count: int) -> list[AnyEvent]:
    events: list[AnyEvent] = []
    for i in range(count):
        user, item = f"{prefix}user{i % 40}", ITEM_IDS[i % len(ITEM_IDS)]
        when = T0 + timedelta(minutes=i)
        if i % 4 == 3:
            events.append(
                WatchEvent(
                    event_id=f"{prefix}e{i}",
                    user_id=user,
                    item_id=item,
                    event_time=when,
                    status=WatchStatus.COMPLETED,
                    episodes_watched=12,
                    total_episodes=12,
                )
            )
        else:
            events.append(
                RatingEvent(
                    event_id=f"{prefix}e{i}", user_id=user, item_id=item, event_time=when, rating=1 + i % 10
                )
            )
    return events


def malformed(settings: Settings, prefix: str) -> list[tuple[str, bytes, str]]:
    """(topic, value, expected reason)."""
    k = settings.kafka
    rating = {
        "event_type": "rating",
        "event_id": f"{prefix}bad",
        "user_id": f"{prefix}u",
        "item_id": "mal:1",
        "event_time": "2025-01-01T00:00:00Z",
        "rating": 5,
    }
    return [
        (k.ratings_topic, b"{this is not json", "invalid_json"),
        (k.ratings_topic, json.dumps({**rating, "rating": 42}).encode(), "schema_violation"),
        (k.ratings_topic, json.dumps({**rating, "item_id": "mal:424242"}).encode(), "unknown_item"),
        (k.watch_topic, json.dumps(rating).encode(), "wrong_topic"),
        (k.watch_topic, b"\xff\xfe", "invalid_utf8"),
    ]


def publish(
    settings: Settings, events: list[AnyEvent], bad: list[tuple[str, bytes, str]], prefix: str
) -> None:
    with EventProducer(settings.kafka) as producer:
        for event in events:
            producer.publish(event)
        for topic, value, _ in bad:
            producer.publish_raw(topic, f"{prefix}u", value)


def test_worker_applies_valid_events_dead_letters_bad_ones_and_ignores_replays(
    worker_settings: Settings, worker: WorkerProcess, postgres_dsn: str
) -> None:
    prefix = f"w{uuid.uuid4().hex[:6]}-"
    events = valid_events(prefix, 4000)
    bad = malformed(worker_settings, prefix)

    started = time.monotonic()
    publish(worker_settings, events, bad, prefix)
    published = time.monotonic()
    wait_until(
        lambda: ledger_count(postgres_dsn, prefix) >= len(events), 120, "the ledger to hold every event"
    )
    applied = time.monotonic()
    rate = len(events) / (applied - started)
    print(
        f"\n{len(events)} events: published in {published - started:.2f}s, all applied after "
        f"{applied - started:.2f}s ({rate:.0f} events/s end to end)"
    )

    letters = read_topic(worker_settings, worker_settings.kafka.dead_letter_topic, len(bad))
    assert sorted(r["reason"] for r in letters) == sorted(reason for _, _, reason in bad)
    for record in letters:
        assert record["topic"] in worker_settings.kafka.event_topics
        assert isinstance(record["partition"], int) and isinstance(record["offset"], int)
        assert record["key"] == f"{prefix}u" and record["payload_base64"]
    assert ledger_count(postgres_dsn, prefix) == len(events)

    wait_until(lambda: caught_up(worker_settings), 60, "the worker to commit its offsets")
    before = profiles(postgres_dsn, prefix)
    assert len(before) == 40
    assert sum(p[3] + p[5] for p in before.values()) == len(events)  # ratings + watch events

    publish(worker_settings, events, bad, prefix)
    wait_until(lambda: caught_up(worker_settings), 120, "the worker to consume the replay")
    assert profiles(postgres_dsn, prefix) == before
    assert ledger_count(postgres_dsn, prefix) == len(events)
    assert "batch processed" in worker.log()

    assert worker.stop() == 0, worker.log()[-4000:]
    assert "worker stopped" in worker.log()


def duplicates_in(log: str) -> int:
    return sum(int(n) for n in re.findall(r"duplicates=(\d+)", log))


def test_worker_survives_stop_and_crash_without_loss_or_double_counting(
    worker_settings: Settings, postgres_dsn: str
) -> None:
    """SIGTERM mid-stream commits exactly what was applied; SIGKILL mid-stream loses nothing and the
    redelivered events are recognised as duplicates; the profiles count every event exactly once."""
    settings = worker_settings
    ensure_system_topics(settings.kafka)
    prefix = f"c{uuid.uuid4().hex[:6]}-"
    events = valid_events(prefix, 20000)
    publish(settings, events, [], prefix)

    with running_worker(settings, "first") as first:
        wait_until(
            lambda: ledger_count(postgres_dsn, prefix) >= 3000, 120, "the first worker to apply events"
        )
        began = time.monotonic()
        assert first.stop(timeout_s=30) == 0
        stop_s = time.monotonic() - began
    after_stop = ledger_count(postgres_dsn, prefix)
    assert after_stop < len(events), "the backlog drained before the stop; publish more events"

    with running_worker(settings, "second") as second:
        wait_until(lambda: ledger_count(postgres_dsn, prefix) >= after_stop + 3000, 120, "more events")
        second.process.kill()
        second.process.wait()
    # The stopped worker finished its batches and committed them: nothing it applied came back.
    assert duplicates_in(second.log()) == 0

    with running_worker(settings, "third") as third:
        wait_until(lambda: ledger_count(postgres_dsn, prefix) >= len(events), 180, "the rest of the events")
        wait_until(lambda: caught_up(settings), 60, "the third worker to commit")
        assert third.stop() == 0
    print(f"\nSIGTERM took {stop_s:.2f}s; after SIGKILL {duplicates_in(third.log())} events were redelivered")

    assert ledger_count(postgres_dsn, prefix) == len(events)
    counts = profiles(postgres_dsn, prefix)
    assert sum(p[3] + p[5] for p in counts.values()) == len(events)


def test_worker_scores_reviews_with_triton_and_dead_letters_texts_it_rejects(
    settings_factory: Callable[..., Settings], triton_settings: TritonSettings, postgres_dsn: str
) -> None:
    settings = settings_factory(triton=triton_settings)
    build_index(settings, ITEM_IDS, DIM)
    prefix = f"r{uuid.uuid4().hex[:6]}-"
    texts = {
        "pos": "A masterpiece. Wonderful characters, beautiful animation, I loved every episode.",
        "neg": "Boring and a complete waste of time; terrible story and annoying characters.",
    }
    reviews = [
        ReviewEvent(
            event_id=f"{prefix}{kind}{i}",
            user_id=f"{prefix}user{i % 3}",
            item_id=ITEM_IDS[i % 5],
            event_time=T0 + timedelta(hours=i),
            text=text,
        )
        for i in range(20)
        for kind, text in texts.items()
    ]
    # Passes validation, but nothing is left once the encoder drops control characters.
    rejected = ReviewEvent(
        event_id=f"{prefix}blank",
        user_id=f"{prefix}user0",
        item_id="mal:1",
        event_time=T0,
        text="\x7f\x80\x9f",
    )

    with running_worker(settings, "review-worker") as worker:
        publish(settings, [*reviews, rejected], [], prefix)
        wait_until(
            lambda: ledger_count(postgres_dsn, prefix) >= len(reviews), 180, "the reviews to be applied"
        )
        letters = read_topic(settings, settings.kafka.dead_letter_topic, 1)
        assert worker.stop() == 0

    assert [r["reason"] for r in letters] == ["encoder_rejected"]
    assert letters[0]["topic"] == settings.kafka.reviews_topic
    with psycopg.connect(postgres_dsn) as conn:
        rows = conn.execute(
            "SELECT event_id, sentiment, strength FROM interactions WHERE event_id LIKE %s", (f"{prefix}%",)
        ).fetchall()
    assert len(rows) == len(reviews)
    positive = [r[1] for r in rows if r[0].startswith(f"{prefix}pos")]
    negative = [r[1] for r in rows if r[0].startswith(f"{prefix}neg")]
    assert all(0.0 <= s <= 1.0 for s in positive + negative)
    assert min(positive) > max(negative)
    assert all(r[2] > 0 for r in rows if r[0].startswith(f"{prefix}pos"))
