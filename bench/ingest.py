"""Event ingestion: a plain confluent-kafka consume loop (the baseline) against the stream worker.

One real Kafka broker and one PostgreSQL server are started for the run (``deploy.kafka.KafkaBroker``,
``deploy.postgres.PostgresServer``, free ports, a temporary folder) and stopped at the end. N rating and
watch events (3 ratings : 1 watch, ``N_USERS`` users, ``N_ITEMS`` items) are published to fresh topics
with ``EventProducer`` before anything consumes, so both consumers start from a full backlog.

(a) raw rate: a new consumer group assigned every partition of the three event topics from the beginning,
    ``Consumer.consume`` in batches of 500 until N messages arrived, no parsing. Events/s = N / (time of
    the last message - time of ``assign``). Repeated; median with min/max.
(b) worker rate: ``python -m stream`` (settings through ``deploy.env.settings_env``, a 384-d random-vector
    item index of exactly the items used, a fresh consumer group). Clock starts when the worker's log
    shows ``worker ready`` (partitions assigned; polled every 20 ms) and stops at the first poll (every
    0.2 s) at which the ledger (``interactions``) holds N rows for this run's events: ingest_events_per_s
    = N / that time. One worker run per invocation; the spread given is over the 1-second windows of the
    ledger's growth during the run (p25/p75, min/max).
ingest_vs_raw_ratio = (b) / median of (a).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from confluent_kafka import Consumer, TopicPartition
from pydantic import SecretStr
from tqdm import tqdm

from bench.common import summary
from deploy.env import settings_env
from deploy.kafka import KafkaBroker
from deploy.postgres import PostgresServer
from deploy.process import free_ports
from llmrec.events.producer import EventProducer
from llmrec.events.schema import RatingEvent, WatchEvent, WatchStatus
from llmrec.events.topics import client_config, ensure_system_topics
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
from ranker.retrieval import ItemIndex

N_USERS = 1000
N_ITEMS = 2000
DIM = 384
PARTITIONS = 4
RAW_REPEATS = 5
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def make_settings(bootstrap: str, dsn: str, root: Path) -> Settings:
    worker_web, worker_metrics, api_port, api_metrics = free_ports(4)
    return Settings(
        state_dir=root,
        artifacts_dir=root / "artifacts",
        data_dir=Settings.model_fields["data_dir"].default,
        log_level="INFO",
        log_json=False,
        kafka=KafkaSettings(
            bootstrap=bootstrap,
            topic_prefix=f"bench{uuid.uuid4().hex[:8]}",
            partitions=PARTITIONS,
            consumer_group=f"llmrec-bench-{uuid.uuid4().hex[:8]}",
        ),
        postgres=PostgresSettings(dsn=SecretStr(dsn)),
        triton=TritonSettings(),
        worker=WorkerSettings(web_port=worker_web, metrics_port=worker_metrics),
        api=ApiSettings(port=api_port, metrics_port=api_metrics),
        preferences=PreferenceSettings(),
    )


def events(prefix: str, count: int, item_ids: np.ndarray) -> list[RatingEvent | WatchEvent]:
    out: list[RatingEvent | WatchEvent] = []
    for i in range(count):
        user, item = f"{prefix}u{i % N_USERS}", int(item_ids[(i * 7919) % len(item_ids)])
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


def raw_consume(settings: Settings, expected: int) -> float:
    consumer = Consumer(
        {
            **client_config(settings.kafka),
            "group.id": f"raw-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    try:
        parts = []
        for topic in settings.kafka.event_topics:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            parts += [TopicPartition(topic, p, 0) for p in meta.partitions]
        got = 0
        t0 = time.perf_counter()
        consumer.assign(parts)
        deadline = t0 + 300
        last = t0
        while got < expected and time.perf_counter() < deadline:
            for msg in consumer.consume(num_messages=500, timeout=0.5):
                if msg.error() is None:
                    got += 1
                    last = time.perf_counter()
        if got < expected:
            raise RuntimeError(f"raw consumer read {got} of {expected} events in 300 s")
        return expected / (last - t0)
    finally:
        consumer.close()


def ledger_count(conn: psycopg.Connection[Any], prefix: str) -> int:
    row = conn.execute("SELECT count(*) FROM interactions WHERE event_id LIKE %s", (f"{prefix}%",)).fetchone()
    return int(row[0]) if row else 0


def window_rates(samples: list[tuple[float, int]], window_s: float = 1.0) -> list[float]:
    rates: list[float] = []
    start_t, start_c = samples[0]
    for t, c in samples[1:]:
        if t - start_t >= window_s:
            rates.append((c - start_c) / (t - start_t))
            start_t, start_c = t, c
    return rates


def run_worker(settings: Settings, dsn: str, prefix: str, expected: int, timeout_s: float) -> dict[str, Any]:
    log_path = settings.state_dir / "worker.log"
    with log_path.open("wb") as log_file:
        spawned = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "stream"],
            cwd=REPO_ROOT,
            env=settings_env(settings),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        while "worker ready" not in log_path.read_text(errors="replace"):
            if process.poll() is not None:
                raise RuntimeError(f"worker exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
            if time.perf_counter() - spawned > 120:
                raise RuntimeError(f"worker not ready in 120 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.02)
        ready = time.perf_counter()
        samples: list[tuple[float, int]] = [(ready, 0)]
        with (
            psycopg.connect(dsn, autocommit=True) as conn,
            tqdm(total=expected, desc="worker -> ledger", unit="ev") as bar,
        ):
            count = 0
            while count < expected:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"worker exited ({process.returncode}):\n{log_path.read_text()[-3000:]}"
                    )
                if time.perf_counter() - ready > timeout_s:
                    raise RuntimeError(f"ledger held {count} of {expected} after {timeout_s} s")
                time.sleep(0.2)
                count = ledger_count(conn, prefix)
                samples.append((time.perf_counter(), count))
                bar.update(count - bar.n)
        done = samples[-1][0]
        elapsed = done - ready
        return {
            "events": expected,
            "startup_s": ready - spawned,
            "apply_s": elapsed,
            "ingest_events_per_s": expected / elapsed,
            "window_rates_per_s": summary(window_rates(samples)),
            "batches_logged": log_path.read_text(errors="replace").count("batch processed"),
        }
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run(quick: bool) -> dict[str, Any]:
    count = 20_000 if quick else 100_000
    root = Path(tempfile.mkdtemp(prefix="llmrec-bench-"))
    root.chmod(0o755)  # PostgreSQL may run as another user (when we are root) and must traverse this
    kafka_port, controller_port, pg_port = free_ports(3)
    broker = KafkaBroker(
        state_dir=root / "kafka",
        port=kafka_port,
        controller_port=controller_port,
        cache_dir=REPO_ROOT / ".llmrec",
        partitions=PARTITIONS,
    )
    server = PostgresServer(state_dir=root / "postgres", port=pg_port)  # durable (fsync on), as deployed
    result: dict[str, Any] = {"events": count, "users": N_USERS, "items": N_ITEMS, "partitions": PARTITIONS}
    try:
        t0 = time.perf_counter()
        print("ingest: starting Kafka and PostgreSQL ...", flush=True)
        broker.start()
        server.start()
        result["services_start_s"] = time.perf_counter() - t0
        settings = make_settings(broker.bootstrap, server.dsn, root / "state")
        settings.state_dir.mkdir(parents=True)
        migrate(server.dsn)
        ensure_system_topics(settings.kafka)
        item_ids = np.arange(1, N_ITEMS + 1, dtype=np.int64)
        vectors = np.random.default_rng(11).standard_normal((N_ITEMS, DIM)).astype(np.float32)
        ItemIndex.build(item_ids, vectors).save(settings.index_dir)

        prefix = f"b{uuid.uuid4().hex[:6]}-"
        batch = events(prefix, count, item_ids)
        t0 = time.perf_counter()
        with EventProducer(settings.kafka) as producer:
            for event in tqdm(batch, desc="publish", unit="ev"):
                producer.publish(event)
            producer.flush(120)
        del producer  # its librdkafka handle would otherwise outlive the broker and log reconnects
        result["publish_s"] = time.perf_counter() - t0
        result["publish_events_per_s"] = count / result["publish_s"]

        rates = [raw_consume(settings, count) for _ in tqdm(range(RAW_REPEATS), desc="raw consume")]
        result["raw_consume_events_per_s"] = summary(rates)
        worker = run_worker(settings, server.dsn, prefix, count, timeout_s=180 if quick else 900)
        result["worker"] = worker
        result["ingest_events_per_s"] = worker["ingest_events_per_s"]
        result["ingest_vs_raw_ratio"] = (
            worker["ingest_events_per_s"] / result["raw_consume_events_per_s"]["median"]
        )
    except Exception as exc:  # reported as null with the reason, never as a made-up number
        result.setdefault("ingest_events_per_s", None)
        result.setdefault("ingest_vs_raw_ratio", None)
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        for stop in (broker.stop, server.stop):
            try:
                stop()
            except Exception as exc:
                result.setdefault("stop_errors", []).append(f"{type(exc).__name__}: {exc}")
        shutil.rmtree(root, ignore_errors=True)
    return result
