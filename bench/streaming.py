"""What the streaming benchmarks share: a Kafka broker and a PostgreSQL server started for the run, settings
that point at them, synthetic rating and watch events, and readings of the database (through the store).
The worker processes come from ``deploy.worker``.

Used by ``bench.ingest``, ``bench.freshness`` and ``bench.scaleout`` (and the scale-out integration test).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
from confluent_kafka import Producer
from pydantic import SecretStr

from deploy.kafka import KafkaBroker
from deploy.postgres import PostgresServer
from deploy.process import free_ports
from deploy.triton import TritonServer
from llmrec.events.producer import producer_config, topic_for
from llmrec.events.schema import RatingEvent, WatchEvent, WatchStatus
from llmrec.events.topics import ensure_system_topics
from llmrec.events.validation import AnyEvent, encode_event
from llmrec.item_ids import item_keys, namespaced_id
from llmrec.settings import (
    REPO_ROOT,
    ApiSettings,
    KafkaSettings,
    PostgresSettings,
    PreferenceSettings,
    Settings,
    TritonSettings,
    WorkerSettings,
)
from llmrec.store import migrate
from llmrec.store.postgres import PostgresStore

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def make_settings(
    bootstrap: str,
    dsn: str,
    root: Path,
    *,
    partitions: int,
    triton: TritonSettings | None = None,
    topic_prefix: str | None = None,
    consumer_group: str | None = None,
    batch_size: int | None = None,
) -> Settings:
    worker_web, worker_metrics, api_port, api_metrics = free_ports(4)
    worker = WorkerSettings(web_port=worker_web, metrics_port=worker_metrics)
    if batch_size is not None:
        worker = worker.model_copy(update={"batch_size": batch_size})
    return Settings(
        state_dir=root,
        artifacts_dir=root / "artifacts",
        data_dir=Settings.model_fields["data_dir"].default,
        log_level="INFO",
        log_json=False,
        kafka=KafkaSettings(
            bootstrap=bootstrap,
            topic_prefix=topic_prefix or f"bench{uuid.uuid4().hex[:8]}",
            partitions=partitions,
            consumer_group=consumer_group or f"llmrec-bench-{uuid.uuid4().hex[:8]}",
        ),
        postgres=PostgresSettings(dsn=SecretStr(dsn)),
        triton=triton or TritonSettings(),
        worker=worker,
        api=ApiSettings(port=api_port, metrics_port=api_metrics, http_enabled=False),
        preferences=PreferenceSettings(),
    )


@dataclass
class Services:
    """A Kafka broker and a PostgreSQL server (fsync on, as deployed) in a temporary folder."""

    root: Path
    broker: KafkaBroker
    postgres: PostgresServer
    start_s: float

    @property
    def dsn(self) -> str:
        return self.postgres.dsn

    def settings(self, name: str, *, partitions: int, **kwargs: Any) -> Settings:
        """Fresh topics and consumer group; state under ``root/name``; schema migrated, topics created."""
        settings = make_settings(
            self.broker.bootstrap, self.dsn, self.root / name, partitions=partitions, **kwargs
        )
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        migrate(self.dsn)
        ensure_system_topics(settings.kafka)
        return settings


@contextlib.contextmanager
def kafka_and_postgres(partitions: int, label: str = "bench") -> Iterator[Services]:
    root = Path(tempfile.mkdtemp(prefix=f"llmrec-{label}-"))
    root.chmod(0o755)  # PostgreSQL may run as another user (when we are root) and must traverse this
    kafka_port, controller_port, pg_port = free_ports(3)
    broker = KafkaBroker(
        state_dir=root / "kafka",
        port=kafka_port,
        controller_port=controller_port,
        cache_dir=REPO_ROOT / ".llmrec",
        partitions=partitions,
    )
    server = PostgresServer(state_dir=root / "postgres", port=pg_port)
    try:
        t0 = time.perf_counter()
        print(f"{label}: starting Kafka and PostgreSQL ...", flush=True)
        broker.start()
        server.start()
        yield Services(root, broker, server, time.perf_counter() - t0)
    finally:
        errors = []
        for stop in (broker.stop, server.stop):
            try:
                stop()
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
        shutil.rmtree(root, ignore_errors=True)
        if errors:
            print(f"{label}: errors while stopping: {errors}", file=sys.stderr)


def synthetic_items(count: int) -> tuple[list[str], npt.NDArray[np.int64]]:
    """``count`` catalogue ids ``bench:1..`` and their keys (the ids an item index of them stores)."""
    external = [namespaced_id("bench", n) for n in range(1, count + 1)]
    return external, item_keys(external)


def rating_watch_events(
    prefix: str, count: int, item_ids: Sequence[str], users: int, start: int = 0
) -> list[AnyEvent]:
    """``count`` events, 3 ratings : 1 watch, users ``{prefix}u0..``, items spread over ``item_ids``;
    event ids ``{prefix}e{n}`` from ``start``. Deterministic."""
    out: list[AnyEvent] = []
    for i in range(start, start + count):
        user, item = f"{prefix}u{i % users}", item_ids[(i * 7919) % len(item_ids)]
        when = T0 + timedelta(seconds=30 * i)
        if i % 4 == 3:
            out.append(
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
            out.append(
                RatingEvent(
                    event_id=f"{prefix}e{i}", user_id=user, item_id=item, event_time=when, rating=1 + i % 10
                )
            )
    return out


def publish_all(kafka: KafkaSettings, events: Sequence[AnyEvent], timeout_s: float = 120.0) -> float:
    """Publish (keyed by user id, idempotent producer) and wait for every acknowledgement; returns seconds."""
    wire = [(topic_for(kafka, e.event_type), e.user_id.encode(), encode_event(e)) for e in events]
    producer = Producer(producer_config(kafka, client_id="bench-publisher", extra={"linger.ms": 20}))
    failures: list[str] = []

    def report(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    t0 = time.perf_counter()
    for topic, key, value in wire:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(timeout_s)
    elapsed = time.perf_counter() - t0
    if remaining or failures:
        raise RuntimeError(f"publish: {remaining} unacknowledged, errors {failures[:3]}")
    return elapsed


class LedgerCounter:
    """Counts a run's ledger rows (by event id prefix) through the store, from a synchronous polling loop:
    one connection, one event loop, kept open between readings."""

    def __init__(self, dsn: str) -> None:
        self._runner = asyncio.Runner()
        self._store = PostgresStore(dsn, min_size=1, max_size=1, name="llmrec-bench")

    def __enter__(self) -> LedgerCounter:
        try:
            self._runner.run(self._store.open())
        except BaseException:
            self._runner.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._runner.run(self._store.close())
        finally:
            self._runner.close()

    def count(self, prefix: str) -> int:
        return self._runner.run(self._store.count_events(prefix))


@dataclass(frozen=True)
class ProfilesSnapshot:
    """The profiles and ledger rows of users ``{prefix}*``, for comparing two runs (ids are taken without
    the prefix, so two runs of the same events under different prefixes compare equal).

    ``exact_sha256`` hashes what must match bit for bit: each profile's user id, event counts, reference
    time and last event time, and each ledger row (event id, user, item, type, strength). The decayed
    vector sums and weight sums are float sums whose rounding depends on how events were split into
    batches (the math is order-independent, float32 storage is not), so they are compared numerically.
    """

    profiles: int
    ledger_rows: int
    exact_sha256: str
    vectors: dict[str, np.ndarray]
    weights: dict[str, float]

    def max_vector_rel_diff(self, other: ProfilesSnapshot) -> float:
        """Largest ``|a - b| / max(|a|)`` over users (inf if the user sets differ)."""
        if self.vectors.keys() != other.vectors.keys():
            return float("inf")
        worst = 0.0
        for user, a in self.vectors.items():
            b = other.vectors[user]
            scale = max(float(np.abs(a).max()), 1e-12)
            worst = max(worst, float(np.abs(a - b).max()) / scale)
        return worst

    def max_weight_rel_diff(self, other: ProfilesSnapshot) -> float:
        if self.weights.keys() != other.weights.keys():
            return float("inf")
        return max(
            (abs(w - other.weights[u]) / max(abs(w), 1e-12) for u, w in self.weights.items()), default=0.0
        )


async def _rows_with_prefix(dsn: str, prefix: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    async with PostgresStore(dsn, min_size=1, max_size=1, name="llmrec-bench") as store:
        return await store.rows_with_prefix(prefix)


def profiles_snapshot(dsn: str, prefix: str) -> ProfilesSnapshot:
    rows, events = asyncio.run(_rows_with_prefix(dsn, prefix))
    digest = hashlib.sha256()
    vectors: dict[str, np.ndarray] = {}
    weights: dict[str, float] = {}
    cut = len(prefix)
    for user_id, ratings, reviews, watches, weight_sum, ref_time, last_time, vector in rows:
        user = user_id[cut:]
        digest.update(f"{user}|{ratings}|{reviews}|{watches}|{ref_time}|{last_time}\n".encode())
        vectors[user] = np.asarray(vector, dtype=np.float64)
        weights[user] = float(weight_sum)
    for event_id, user_id, item_id, event_type, strength in events:
        line = f"{event_id[cut:]}|{user_id[cut:]}|{item_id}|{event_type}|{strength!r}\n"
        digest.update(line.encode())
    return ProfilesSnapshot(len(rows), len(events), digest.hexdigest(), vectors, weights)


@contextlib.contextmanager
def triton_for(services: Services) -> Iterator[tuple[TritonSettings, float]]:
    """A Triton server with the project's encoder on free ports, beside ``services``: its settings and the
    seconds it took to start; stopped on exit."""
    http_port, grpc_port, metrics_port = free_ports(3)
    server = TritonServer(
        repository=TritonSettings().repository,
        state_dir=services.root / "triton",
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
    )
    try:
        t0 = time.perf_counter()
        server.start()
        started_s = time.perf_counter() - t0
        yield (
            TritonSettings(
                host=server.host,
                http_port=server.http_port,
                grpc_port=server.grpc_port,
                metrics_port=server.metrics_port,
                model_name=server.model_name,
            ),
            started_s,
        )
    finally:
        server.stop()
