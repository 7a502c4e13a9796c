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
ingest_vs_raw_ratio = (b) / median of (a).

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
from llmrec.events.topics import client_config
from llmrec.metrics_http import scrape
from llmrec.settings import Settings
from ranker.retrieval import ItemIndex

USERS = 1000
ITEMS = 2000
DIM = 384
PARTITIONS = 4
RAW_REPEATS = 5


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
    result["ingest_vs_raw_ratio"] = (
        worker["ingest_events_per_s"] / result["raw_consume_events_per_s"]["median"]
    )
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
        result.setdefault("ingest_vs_raw_ratio", None)
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
