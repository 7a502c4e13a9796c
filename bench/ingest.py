"""Event ingestion: one stream worker, end to end into PostgreSQL, against a plain confluent-kafka consume
loop reading the same topics in the same run.

A Kafka broker and a PostgreSQL server (fsync on) are started for the run (``bench.streaming``). N rating
and watch events (3 ratings : 1 watch, ``USERS`` users, ``ITEMS`` items, ``PARTITIONS`` partitions per
topic, keyed by user id) are published to fresh topics before anything consumes, so both consumers start
from the same full backlog.

(a) raw rate (the baseline): a consumer with a new group assigned every partition of the rating and watch
    topics from the beginning; ``Consumer.consume`` in batches of 1,000 reading each message's key and
    value, no parsing, until all N arrived. One warm-up pass is discarded, then ``RAW_REPEATS`` timed
    passes: events/s = N / (arrival of the last message - arrival of the first), i.e. the steady rate
    without the start-up fetch. Median with spread.
(b) worker rate: ``python -m stream`` (a fresh consumer group, a 384-d random-vector item index of exactly
    the items used). The clock starts when the worker logs ``worker ready`` (partitions assigned) and stops
    at the first poll (every 0.1 s) at which the ledger holds all N events: ingest_events_per_s = N / that
    time. The spread given is over the 1-second windows of the ledger's growth within the run. The
    worker's own Prometheus metrics give the batch sizes it formed.
(c) bare store rate (the store baseline): the same events (the same generator, a fresh id prefix, so the
    same number of new ledger rows and new profiles) written by a plain synchronous psycopg loop on one
    connection, in batches of the worker's mean batch size as its metrics reported it: per batch one
    transaction with one multi-row ``INSERT .. ON CONFLICT DO NOTHING`` of the ledger rows (every ledger
    column, strengths computed up front) and one multi-row upsert of the batch's profiles (a fixed unit
    vector per user, the counters and the latest event time): no Kafka, no decoding, no preference
    arithmetic, no profile read. ``RAW_STORE_REPEATS`` passes, each on fresh ids; events/s = N / time from
    the first statement to the last commit.
ingest_store_ratio = (b) / median of (c): the share of a bare database writer's rate the worker keeps.
The consume ratio (b) / median of (a) stays in the section as ``worker_vs_raw_consume_ratio``.

``python -m bench.ingest [--quick] [--profile FILE] [--compare-batch-size N] [--baseline-src DIR]`` runs
this section alone. ``--profile`` attaches py-spy to the worker (collapsed stacks to FILE; the rate then
includes the sampler's overhead). ``--compare-batch-size`` and ``--baseline-src`` (the worker code of
another tree, e.g. ``git archive <commit> | tar -x -C DIR``) add worker runs on their own copies of the
backlog after the main one, for before/after figures from one run. The machine's 1-minute load average at
the start and the end is recorded: on a shared machine the absolute rates move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from confluent_kafka import Consumer, TopicPartition
from tqdm import tqdm

from bench.common import summary
from bench.streaming import (
    LedgerCounter,
    Services,
    kafka_and_postgres,
    publish_all,
    rating_watch_events,
    synthetic_items,
)
from deploy.worker import start_worker
from llmrec.events.schema import RatingEvent, WatchEvent
from llmrec.events.topics import client_config
from llmrec.events.validation import AnyEvent
from llmrec.item_ids import item_key
from llmrec.metrics_http import scrape
from llmrec.settings import Settings
from ranker.preferences import SignalWeights, event_strength
from ranker.retrieval import ItemIndex

USERS = 1000
ITEMS = 2000
DIM = 384
PARTITIONS = 4
RAW_REPEATS = 5
RAW_STORE_REPEATS = 3


def build_random_index(settings: Settings, item_ids: np.ndarray, dim: int = DIM, seed: int = 11) -> None:
    vectors = np.random.default_rng(seed).standard_normal((len(item_ids), dim)).astype(np.float32)
    ItemIndex.build(item_ids, vectors).save(settings.index_dir)


def raw_consume(settings: Settings, topics: tuple[str, ...], expected: int) -> dict[str, float]:
    """One pass over ``topics`` from the beginning with a plain consumer; see the module docstring."""
    consumer = Consumer(
        {
            **client_config(settings.kafka),
            "group.id": f"raw-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    try:
        parts = []
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            parts += [TopicPartition(topic, p, 0) for p in meta.partitions]
        got, size = 0, 0
        assigned = time.perf_counter()
        consumer.assign(parts)
        deadline = assigned + 300
        first = last = 0.0
        while got < expected and time.perf_counter() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error() is None:
                    size += len(msg.key() or b"") + len(msg.value() or b"")
                    got += 1
                    last = time.perf_counter()
                    if got == 1:
                        first = last
        if got < expected:
            raise RuntimeError(f"raw consumer read {got} of {expected} events in 300 s")
        return {
            "events_per_s": (expected - 1) / (last - first),
            "from_assign_events_per_s": expected / (last - assigned),
            "bytes": float(size),
        }
    finally:
        consumer.close()


_BARE_LEDGER = """
INSERT INTO interactions (
    event_id, user_id, item_id, event_type, event_time, strength, rating, sentiment, status,
    episodes_watched, source_topic, source_partition, source_offset)
SELECT * FROM unnest(
    %s::text[], %s::text[], %s::bigint[], %s::text[], %s::timestamptz[], %s::float8[], %s::float8[],
    %s::float8[], %s::text[], %s::integer[], %s::text[], %s::integer[], %s::bigint[])
ON CONFLICT (event_id) DO NOTHING
"""

_BARE_PROFILES = """
INSERT INTO user_profiles AS p (
    user_id, vector_sum, weight_sum, ref_time, ratings, reviews, watch_events, last_event_time)
SELECT u.user_id, u.vector::real[], u.weight_sum, u.ref_time, u.ratings, 0, u.watch_events, u.ref_time
FROM unnest(%(users)s::text[], %(vectors)s::text[], %(weight_sums)s::float8[], %(ref_times)s::timestamptz[],
            %(ratings)s::integer[], %(watch_events)s::integer[])
     AS u(user_id, vector, weight_sum, ref_time, ratings, watch_events)
ON CONFLICT (user_id) DO UPDATE SET
    vector_sum = EXCLUDED.vector_sum,
    weight_sum = p.weight_sum + EXCLUDED.weight_sum,
    ref_time = GREATEST(p.ref_time, EXCLUDED.ref_time),
    ratings = p.ratings + EXCLUDED.ratings,
    watch_events = p.watch_events + EXCLUDED.watch_events,
    last_event_time = GREATEST(p.last_event_time, EXCLUDED.last_event_time),
    updated_at = now()
"""


def ledger_rows(events: list[AnyEvent], topics: dict[str, str]) -> list[tuple[Any, ...]]:
    """The ledger row of each event as the worker writes it (strength from the same signal weights);
    ``topics`` maps an event type to its topic name."""
    weights = SignalWeights()
    rows = []
    for offset, e in enumerate(events):
        rating = e.rating if isinstance(e, RatingEvent) else None
        watch = e if isinstance(e, WatchEvent) else None
        rows.append(
            (
                e.event_id,
                e.user_id,
                item_key(e.item_id),
                str(e.event_type.value),
                e.event_time,
                event_strength(e, weights),
                rating,
                None,
                watch.status.value if watch else None,
                watch.episodes_watched if watch else None,
                topics[str(e.event_type.value)],
                0,
                offset,
            )
        )
    return rows


def bare_store(dsn: str, rows: list[tuple[Any, ...]], batch_size: int, dim: int = DIM) -> dict[str, float]:
    """``rows`` written by a plain psycopg loop in batches of ``batch_size`` (see the module docstring)."""
    # One fixed unit vector, as a PostgreSQL array literal (parsed once per row by the server).
    vector = "{" + ",".join([f"{1.0 / np.sqrt(dim):.6f}"] * dim) + "}"
    with psycopg.connect(dsn) as conn:
        t0 = time.perf_counter()
        batches = 0
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            columns = [list(c) for c in zip(*batch, strict=True)]
            users = sorted({r[1] for r in batch})
            ratings = {u: 0 for u in users}
            watches = {u: 0 for u in users}
            weight = {u: 0.0 for u in users}
            latest = {u: batch[0][4] for u in users}
            for r in batch:
                if r[3] == "watch":
                    watches[r[1]] += 1
                else:
                    ratings[r[1]] += 1
                weight[r[1]] += abs(r[5])
                latest[r[1]] = max(latest[r[1]], r[4])
            with conn.transaction():
                conn.execute(_BARE_LEDGER, columns)
                conn.execute(
                    _BARE_PROFILES,
                    {
                        "vectors": [vector] * len(users),
                        "users": users,
                        "weight_sums": [weight[u] for u in users],
                        "ref_times": [latest[u] for u in users],
                        "ratings": [ratings[u] for u in users],
                        "watch_events": [watches[u] for u in users],
                    },
                )
            batches += 1
        seconds = time.perf_counter() - t0
    return {"events_per_s": len(rows) / seconds, "seconds": seconds, "batches": float(batches)}


def window_rates(samples: list[tuple[float, int]], window_s: float = 1.0) -> list[float]:
    rates: list[float] = []
    start_t, start_c = samples[0]
    for t, c in samples[1:]:
        if t - start_t >= window_s:
            rates.append((c - start_c) / (t - start_t))
            start_t, start_c = t, c
    return rates


def batch_sizes(metrics_text: str) -> dict[str, float]:
    """Mean batch size per topic from the worker's ``llmrec_worker_batch_size`` histogram."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith("llmrec_worker_batch_size_sum{"):
            topic = line.split('topic="', 1)[1].split('"', 1)[0]
            sums[topic] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("llmrec_worker_batch_size_count{"):
            topic = line.split('topic="', 1)[1].split('"', 1)[0]
            counts[topic] = float(line.rsplit(" ", 1)[1])
    return {t: sums[t] / counts[t] for t in sums if counts.get(t)}


def measure_worker(
    settings: Settings,
    dsn: str,
    prefix: str,
    expected: int,
    timeout_s: float,
    profile: Path | None = None,
    source: Path | None = None,
) -> dict[str, Any]:
    worker = start_worker(settings, source=source)
    profiler: subprocess.Popen[bytes] | None = None
    try:
        startup_s = worker.wait_ready()
        ready = worker.spawned_at + startup_s
        if profile is not None:
            # Attached once ready: py-spy writes its file when the worker exits (stopped below).
            spy = str(Path(sys.executable).parent / "py-spy")
            profiler = subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(worker.pid),
                    "--rate",
                    "100",
                    "--format",
                    "raw",
                    *("--nonblocking", "--output", str(profile)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        samples: list[tuple[float, int]] = [(ready, 0)]
        with (
            LedgerCounter(dsn) as ledger,
            tqdm(total=expected, desc="worker -> ledger", unit="ev") as bar,
        ):
            count = 0
            while count < expected:
                worker.check_alive()
                if time.perf_counter() - ready > timeout_s:
                    raise RuntimeError(f"ledger held {count} of {expected} after {timeout_s} s")
                time.sleep(0.1)
                count = ledger.count(prefix)
                samples.append((time.perf_counter(), count))
                bar.update(count - bar.n)
        elapsed = samples[-1][0] - ready
        sizes = batch_sizes(scrape(settings.worker.metrics_port))
        return {
            "events": expected,
            "startup_s": startup_s,
            "apply_s": elapsed,
            "ingest_events_per_s": expected / elapsed,
            "window_rates_per_s": summary(window_rates(samples)),
            "mean_batch_size_by_topic": sizes,
            "batches_logged": worker.log().count("batch processed"),
            "profiled": profile is not None,
        }
    finally:
        worker.stop()
        if profiler is not None:
            profiler.wait(60)


def publish_backlog(
    services: Services, name: str, count: int, batch_size: int | None
) -> tuple[Settings, str, float]:
    """Fresh topics and group, a random item index, and ``count`` events published; returns the settings,
    the events' id prefix and the publishing time."""
    settings = services.settings(name, partitions=PARTITIONS, batch_size=batch_size)
    item_ids, keys = synthetic_items(ITEMS)
    build_random_index(settings, keys)
    prefix = f"b{uuid.uuid4().hex[:6]}-"
    return (
        settings,
        prefix,
        publish_all(settings.kafka, rating_watch_events(prefix, count, item_ids, USERS)),
    )


def measure(
    services: Services,
    count: int,
    profile: Path | None = None,
    compare_batch_sizes: tuple[int, ...] = (),
    baseline: tuple[Path, int] | None = None,
) -> dict[str, Any]:
    settings, prefix, publish_s = publish_backlog(services, "ingest", count, None)
    result: dict[str, Any] = {
        "events": count,
        "users": USERS,
        "items": ITEMS,
        "partitions": PARTITIONS,
        "worker_batch_size": settings.worker.batch_size,
        "worker_batch_within_s": settings.worker.batch_within_s,
        "publish_s": publish_s,
        "publish_events_per_s": count / publish_s,
    }
    topics = (settings.kafka.ratings_topic, settings.kafka.watch_topic)
    raw_consume(settings, topics, count)  # warm-up: page cache, broker, client
    passes = [raw_consume(settings, topics, count) for _ in tqdm(range(RAW_REPEATS), desc="raw consume")]
    result["raw_consume_events_per_s"] = summary([p["events_per_s"] for p in passes])
    result["raw_consume_from_assign_events_per_s"] = summary([p["from_assign_events_per_s"] for p in passes])
    result["raw_bytes_read"] = passes[0]["bytes"]
    worker = measure_worker(settings, services.dsn, prefix, count, timeout_s=300, profile=profile)
    result["worker"] = worker
    result["ingest_events_per_s"] = worker["ingest_events_per_s"]
    result["worker_vs_raw_consume_ratio"] = (
        worker["ingest_events_per_s"] / result["raw_consume_events_per_s"]["median"]
    )
    # The store baseline: the same rows through a bare psycopg loop, in the worker's batch sizes.
    sizes = worker["mean_batch_size_by_topic"]
    batch = max(1, round(sum(sizes.values()) / len(sizes))) if sizes else settings.worker.batch_size
    topic_of = {"rating": settings.kafka.ratings_topic, "watch": settings.kafka.watch_topic}
    item_ids, _ = synthetic_items(ITEMS)
    bare = []
    for _ in tqdm(range(RAW_STORE_REPEATS), desc="bare store"):
        events = rating_watch_events(f"s{uuid.uuid4().hex[:6]}-", count, item_ids, USERS)
        bare.append(bare_store(services.dsn, ledger_rows(events, topic_of), batch))
    result["bare_store_batch_size"] = batch
    result["bare_store_events_per_s"] = summary([b["events_per_s"] for b in bare])
    result["ingest_store_ratio"] = worker["ingest_events_per_s"] / result["bare_store_events_per_s"]["median"]
    # Other batch sizes on their own copies of the backlog, right after, for a same-run comparison.
    for size in compare_batch_sizes:
        other, other_prefix, _ = publish_backlog(services, f"ingest-batch{size}", count, size)
        run = measure_worker(other, services.dsn, other_prefix, count, timeout_s=300)
        result.setdefault("batch_size_comparison", {})[str(size)] = run
    if baseline is not None:
        # The worker of another source tree (say `git archive` of the commit before an optimisation), with
        # that tree's batch size, on its own copy of the backlog: before/after in one run.
        source, size = baseline
        other, other_prefix, _ = publish_backlog(services, "ingest-baseline", count, size)
        run = measure_worker(other, services.dsn, other_prefix, count, timeout_s=600, source=source)
        result["baseline_source"] = {"source": str(source), "batch_size": size, **run}
        result["speedup_vs_baseline_source"] = worker["ingest_events_per_s"] / run["ingest_events_per_s"]
    return result


def run(
    quick: bool,
    profile: Path | None = None,
    compare_batch_sizes: tuple[int, ...] = (),
    baseline: tuple[Path, int] | None = None,
) -> dict[str, Any]:
    count = 50_000 if quick else 200_000
    result: dict[str, Any] = {"events": count}
    load_before = os.getloadavg()[0]
    try:
        with kafka_and_postgres(PARTITIONS, "ingest") as services:
            measured = measure(services, count, profile, compare_batch_sizes, baseline)
            result = {"services_start_s": services.start_s, **measured}
            result["load_average_1m"] = [load_before, os.getloadavg()[0]]
    except Exception as exc:  # reported as null with the reason, never as a made-up number
        result.setdefault("ingest_events_per_s", None)
        result.setdefault("ingest_store_ratio", None)
        result["error"] = f"{type(exc).__name__}: {exc}"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", type=Path, help="run the worker under py-spy, collapsed stacks here")
    parser.add_argument(
        "--compare-batch-size", type=int, action="append", default=[], help="also run with this batch size"
    )
    parser.add_argument(
        "--baseline-src", type=Path, help="also run the worker of this source tree (e.g. git archive HEAD)"
    )
    parser.add_argument("--baseline-batch-size", type=int, default=256, help="batch size for --baseline-src")
    parser.add_argument("--out", type=Path, help="write the result here as JSON (default: stdout)")
    args = parser.parse_args()
    text = json.dumps(
        run(
            args.quick,
            args.profile.resolve() if args.profile else None,
            tuple(args.compare_batch_size),
            (args.baseline_src.resolve(), args.baseline_batch_size) if args.baseline_src else None,
        ),
        indent=2,
    )
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
