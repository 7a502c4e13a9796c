"""Helpers for the fault tests (``test_faults.py``): private servers to break, ledger and profile queries,
and reading the worker's retry log lines.

Imported as ``from faults import ...`` (pytest puts this folder on ``sys.path``, as for ``workers``).
"""

from __future__ import annotations

import re
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import psycopg

from deploy.postgres import PostgresServer
from deploy.process import free_port
from llmrec.events.producer import EventProducer
from llmrec.events.validation import AnyEvent
from llmrec.settings import KafkaSettings
from tests.integration.tmpdirs import private_tmp


@contextmanager
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own, on a free port, stopped and deleted afterwards."""
    state_dir = private_tmp("llmrec-faults-postgres-")
    server = PostgresServer(state_dir=state_dir, port=free_port(), durable=False)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


def ledger_ids(dsn: str, prefix: str) -> Counter[str]:
    """Event ids in the ledger with ``prefix``, with how often each occurs (the primary key says once)."""
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT event_id FROM interactions WHERE event_id LIKE %s", (f"{prefix}%",)
        ).fetchall()
    return Counter(str(row[0]) for row in rows)


def ledger_count(dsn: str, prefix: str) -> int:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT count(*) FROM interactions WHERE event_id LIKE %s", (f"{prefix}%",)
        ).fetchone()
    return int(row[0]) if row else 0


def ledger_count_or_none(dsn: str, prefix: str) -> int | None:
    """``ledger_count``, or None while the server does not answer (a wait condition during an outage)."""
    try:
        return ledger_count(dsn, prefix)
    except psycopg.OperationalError:
        return None


def sentiments(dsn: str, prefix: str) -> dict[str, float | None]:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT event_id, sentiment FROM interactions WHERE event_id LIKE %s", (f"{prefix}%",)
        ).fetchall()
    return {str(row[0]): row[1] for row in rows}


def profile_counts(dsn: str, prefix: str) -> dict[str, tuple[int, int, int]]:
    """``{user_id: (ratings, reviews, watch_events)}`` for the users with ``prefix``."""
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT user_id, ratings, reviews, watch_events FROM user_profiles WHERE user_id LIKE %s",
            (f"{prefix}%",),
        ).fetchall()
    return {str(row[0]): (int(row[1]), int(row[2]), int(row[3])) for row in rows}


def retry_lines(log: str, what: str) -> list[str]:
    """The worker's ``transient failure, retrying`` lines for the operation ``what``
    (``store.apply_batch``, ``encoder.embed_and_score``, ...)."""
    pattern = re.compile(rf"\bwhat={re.escape(what)}\b")
    return [
        line for line in log.splitlines() if "transient failure, retrying" in line and pattern.search(line)
    ]


def batch_failures(log: str) -> list[str]:
    """Lines of batches that failed with an error the processor did not expect (see ``stream.agents``)."""
    return [line for line in log.splitlines() if "batch failed, retrying" in line]


def expected_counts(
    events: Iterable[tuple[str, str]],
) -> dict[str, tuple[int, int, int]]:
    """``(user_id, kind)`` pairs, one per distinct applied event -> the profile counters they must give."""
    counts: dict[str, list[int]] = {}
    column = {"rating": 0, "review": 1, "watch": 2}
    for user_id, kind in events:
        counts.setdefault(user_id, [0, 0, 0])[column[kind]] += 1
    return {user: (c[0], c[1], c[2]) for user, c in counts.items()}


class BackgroundPublisher:
    """Publishes ``make(start, count)`` events in chunks from a thread until ``stop()``: a stream that keeps
    flowing while a test breaks something. ``published`` holds what was handed to Kafka (flushed)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        make: Callable[[int, int], list[AnyEvent]],
        chunk: int = 50,
        pause_s: float = 0.1,
        limit: int = 100_000,
    ) -> None:
        self._kafka = kafka
        self._make = make
        self._chunk = chunk
        self._pause_s = pause_s
        self._limit = limit
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._published: list[AnyEvent] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="background-publisher", daemon=True)

    @property
    def published(self) -> list[AnyEvent]:
        with self._lock:
            return list(self._published)

    def start(self) -> BackgroundPublisher:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            with EventProducer(self._kafka) as producer:
                next_index = 0
                while not self._stop.is_set() and next_index < self._limit:
                    events = self._make(next_index, self._chunk)
                    for event in events:
                        producer.publish(event)
                    producer.flush(60)
                    with self._lock:
                        self._published.extend(events)
                    next_index += len(events)
                    self._stop.wait(self._pause_s)
        except BaseException as exc:  # reported by stop()
            self._error = exc

    def stop(self) -> list[AnyEvent]:
        self._stop.set()
        self._thread.join(120)
        assert not self._thread.is_alive(), "the background publisher did not stop"
        if self._error is not None:
            raise AssertionError(f"the background publisher failed: {self._error!r}") from self._error
        return self.published
