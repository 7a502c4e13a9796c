"""Faults survived: a real worker process (``python -m stream``) keeps every event while a service it
depends on goes away and comes back.

Each test starts its own private server for the component it breaks (never the session's shared ones,
which other tests use) and restarts it on the same port:
- PostgreSQL stopped mid-stream: batches retry ``store.apply_batch`` until it is back; every event is
  applied exactly once (the ledger is keyed by event id, so a batch whose COMMIT reply was lost, or one
  redelivered, adds nothing twice) and the profile counters are exact;
- Triton stopped while reviews arrive: reviews wait (the reviews agent retries the encoder with backoff)
  while ratings keep flowing, because each topic has its own agent (``stream.agents``) and a batch holds
  messages of one topic only; once Triton is back every review is applied exactly once with a sentiment.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from faults import (
    BackgroundPublisher,
    batch_failures,
    expected_counts,
    ledger_count,
    ledger_count_or_none,
    ledger_ids,
    private_postgres,
    private_tmp,
    profile_counts,
    retry_lines,
    sentiments,
)
from pydantic import SecretStr
from workers import build_index, caught_up, running_worker, wait_until

from deploy.postgres import PostgresServer
from deploy.process import free_ports
from deploy.triton import TritonServer
from llmrec.events.producer import EventProducer
from llmrec.events.schema import RatingEvent, ReviewEvent, WatchEvent, WatchStatus
from llmrec.events.topics import ensure_system_topics
from llmrec.events.validation import AnyEvent
from llmrec.item_ids import mal_item_id
from llmrec.settings import PostgresSettings, Settings, TritonSettings

pytestmark = pytest.mark.integration

ITEM_IDS = [mal_item_id(i) for i in (1, 5, 6, 7, 20, 30, 5114, 9253, 1535, 11061)]
T0 = datetime(2025, 1, 1, tzinfo=UTC)
POSITIVE = "A masterpiece. Wonderful characters, beautiful animation, I loved every episode."
NEGATIVE = "Boring and a complete waste of time; terrible story and annoying characters."


def kind_of(event: AnyEvent) -> str:
    return str(event.event_type.value)


def ratings_and_watches(prefix: str, start: int, count: int, users: int = 30) -> list[AnyEvent]:
    events: list[AnyEvent] = []
    for i in range(start, start + count):
        common: dict[str, Any] = {
            "event_id": f"{prefix}e{i}",
            "user_id": f"{prefix}user{i % users}",
            "item_id": ITEM_IDS[i % len(ITEM_IDS)],
            "event_time": T0 + timedelta(minutes=i),
        }
        if i % 4 == 3:
            events.append(
                WatchEvent(**common, status=WatchStatus.WATCHING, episodes_watched=i % 12, total_episodes=12)
            )
        else:
            events.append(RatingEvent(**common, rating=1 + i % 10))
    return events


def reviews(prefix: str, start: int, count: int, users: int = 5) -> list[AnyEvent]:
    return [
        ReviewEvent(
            event_id=f"{prefix}r{i}",
            user_id=f"{prefix}user{i % users}",
            item_id=ITEM_IDS[i % len(ITEM_IDS)],
            event_time=T0 + timedelta(hours=i),
            text=POSITIVE if i % 2 else NEGATIVE,
        )
        for i in range(start, start + count)
    ]


def publish(settings: Settings, events: Sequence[AnyEvent]) -> None:
    with EventProducer(settings.kafka) as producer:
        for event in events:
            producer.publish(event)
        producer.flush(60)


def assert_exactly_once(dsn: str, prefix: str, published: Sequence[AnyEvent]) -> None:
    """Every distinct published event id is in the ledger once, nothing else is, and the profile counters
    count each distinct event once."""
    distinct = {e.event_id: e for e in published}
    in_ledger = ledger_ids(dsn, prefix)
    assert set(in_ledger) == set(distinct), (
        f"missing {sorted(set(distinct) - set(in_ledger))[:10]}, "
        f"unexpected {sorted(set(in_ledger) - set(distinct))[:10]}"
    )
    assert max(in_ledger.values()) == 1
    assert profile_counts(dsn, prefix) == expected_counts((e.user_id, kind_of(e)) for e in distinct.values())


# --------------------------------------------------------------------------------------------------
# PostgreSQL


@pytest.fixture
def postgres_server() -> Iterator[PostgresServer]:
    with private_postgres() as server:
        yield server


def test_postgres_restart_mid_stream_loses_nothing_and_applies_nothing_twice(
    settings_factory: Callable[..., Settings], postgres_server: PostgresServer
) -> None:
    pg = postgres_server
    dsn = pg.dsn
    settings = settings_factory(postgres=PostgresSettings(dsn=SecretStr(dsn)))
    build_index(settings, ITEM_IDS)
    ensure_system_topics(settings.kafka)
    prefix = f"pg{uuid.uuid4().hex[:6]}-"
    # Ids already applied, published again while the database is down: they must stay single.
    replayed = ratings_and_watches(prefix, 0, 300)

    with running_worker(settings, "pg-fault-worker") as worker:
        stream = BackgroundPublisher(settings.kafka, lambda i, n: ratings_and_watches(prefix, i, n)).start()
        try:
            # Stop the database while events keep arriving (a batch transaction is likely in flight).
            wait_until(lambda: ledger_count(dsn, prefix) >= 500, 120, "the worker to start applying events")
            pg.stop()
            assert ledger_count_or_none(dsn, prefix) is None, "PostgreSQL still answers after stop()"
            published_at_stop = len(stream.published)
            publish(settings, replayed)
            wait_until(
                lambda: (
                    retry_lines(worker.log(), "store.apply_batch")
                    and len(stream.published) >= published_at_stop + 500
                ),
                90,
                "the worker to retry store.apply_batch while events arrive and PostgreSQL is down",
            )
            pg.start()
            published_at_start = len(stream.published)
            wait_until(
                lambda: len(stream.published) >= published_at_start + 300,
                60,
                "more events after PostgreSQL's return",
            )
        finally:
            streamed = stream.stop()

        published = [*streamed, *replayed]
        distinct = len({e.event_id for e in published})
        wait_until(lambda: ledger_count(dsn, prefix) >= distinct, 180, "every event to be applied")
        wait_until(lambda: caught_up(settings), 60, "the worker to commit its offsets")
        log = worker.log()
        assert worker.stop() == 0, log[-4000:]

    print(
        f"\n{len(published)} published ({distinct} distinct), {published_at_start - published_at_stop} "
        f"while PostgreSQL was down; {len(retry_lines(log, 'store.apply_batch'))} apply_batch retries"
    )
    assert_exactly_once(dsn, prefix, published)
    assert ledger_count(dsn, prefix) == distinct
    # Every database failure was recognised as transient inside the processor, none reached the agent.
    assert not batch_failures(log), "\n".join(batch_failures(log)[:5])


# --------------------------------------------------------------------------------------------------
# Triton


@pytest.fixture
def triton_server_private() -> Iterator[TritonServer]:
    http_port, grpc_port, metrics_port = free_ports(3)
    state_dir: Path = private_tmp("llmrec-faults-triton-")
    server = TritonServer(
        repository=TritonSettings().repository,
        state_dir=state_dir,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


def test_triton_outage_holds_reviews_while_ratings_flow(
    settings_factory: Callable[..., Settings], triton_server_private: TritonServer, postgres_dsn: str
) -> None:
    triton = triton_server_private
    settings = settings_factory(
        triton=TritonSettings(
            host=triton.host,
            http_port=triton.http_port,
            grpc_port=triton.grpc_port,
            metrics_port=triton.metrics_port,
            model_name=triton.model_name,
        )
    )
    build_index(settings, ITEM_IDS)
    ensure_system_topics(settings.kafka)
    prefix = f"tr{uuid.uuid4().hex[:6]}-"
    first = [*reviews(prefix, 0, 6), *ratings_and_watches(prefix, 0, 100)]
    held_reviews = reviews(prefix, 6, 20)
    flowing = ratings_and_watches(prefix, 100, 400)
    last = [*reviews(prefix, 26, 4), *ratings_and_watches(prefix, 500, 100)]
    review_ids = {e.event_id for e in [*first, *held_reviews, *last] if isinstance(e, ReviewEvent)}

    with running_worker(settings, "triton-fault-worker") as worker:
        publish(settings, first)
        wait_until(lambda: ledger_count(postgres_dsn, prefix) >= len(first), 120, "the first events")

        assert triton.stop()
        assert not triton.alive()
        publish(settings, [*held_reviews, *flowing])
        # Ratings and watch events go on while Triton is down...
        flowing_ids = {e.event_id for e in flowing}
        wait_until(
            lambda: flowing_ids <= set(ledger_ids(postgres_dsn, prefix)),
            120,
            "ratings and watch events to be applied while Triton is down",
        )
        # ...and the reviews wait: the worker retries the encoder, nothing is dropped or dead-lettered.
        wait_until(
            lambda: len(retry_lines(worker.log(), "encoder.embed_and_score")) >= 2,
            60,
            "the worker to retry the encoder",
        )
        assert not triton.alive()
        in_ledger = set(ledger_ids(postgres_dsn, prefix))
        assert not in_ledger & {e.event_id for e in held_reviews}, "a review was applied without Triton"

        outage_ended = time.monotonic()
        start_s = triton.start()
        publish(settings, last)
        published = [*first, *held_reviews, *flowing, *last]
        wait_until(
            lambda: ledger_count(postgres_dsn, prefix) >= len(published),
            180,
            "every event after Triton's return",
        )
        recovered_s = time.monotonic() - outage_ended
        wait_until(lambda: caught_up(settings), 60, "the worker to commit its offsets")
        log = worker.log()
        assert worker.stop() == 0, log[-4000:]

    print(
        f"\nTriton restart to every event applied: {recovered_s:.1f}s, of which Triton's own start "
        f"{start_s:.1f}s"
    )
    assert_exactly_once(postgres_dsn, prefix, published)
    scores = sentiments(postgres_dsn, prefix)
    for event_id in review_ids:
        score = scores[event_id]
        assert score is not None and 0.0 <= score <= 1.0, (event_id, score)
    assert all(scores[e.event_id] is None for e in published if e.event_id not in review_ids)
    assert not batch_failures(log), "\n".join(batch_failures(log)[:5])
