"""Scale-out: one worker against two workers in one consumer group sharing the partitions, on the same
events, with the final state compared.

Topics are partitioned by user id (the producer keys every event by it), so each user's events stay in
order within one partition and exactly one worker of the group applies them. Each run gets fresh topics,
a fresh group and its own id prefix for the same N events (3 ratings : 1 watch), so the two runs write
disjoint rows of one PostgreSQL and their final states can be compared with the prefix taken off.

A run: start the group's workers on the empty topics and wait until the partitions are split between
them (each worker logs its assignment; the run waits until the latest assignments cover every partition
exactly once and every worker holds some). Then publish the N events and start the clock; stop it when
the ledger holds all N. Each worker's share comes from its own Prometheus metrics
(``llmrec_worker_events_total{outcome="applied"}``).

Identical final state: the hash over the exact columns (``bench.streaming.ProfilesSnapshot``: event counts,
times, ledger rows with their strengths) must be equal, and the decayed vector and weight sums equal to
float32 rounding (how the events were cut into batches differs between runs; the math is
order-independent).

``python -m bench.scaleout [--quick]`` runs this section alone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.streaming import (
    LedgerCounter,
    ProfilesSnapshot,
    Services,
    kafka_and_postgres,
    profiles_snapshot,
    publish_all,
    rating_watch_events,
    synthetic_items,
)
from deploy.process import free_ports
from deploy.worker import WorkerProcess, start_worker
from llmrec.lifecycle import WORKER_PARTITIONS_ASSIGNED, WORKER_READY
from llmrec.metrics_http import scrape
from llmrec.settings import Settings
from ranker.retrieval import ItemIndex

PARTITIONS = 4
USERS = 1000
ITEMS = 2000
DIM = 384
# Float32 sums cut into different batches agree to about 1e-6 relative; far below any ranking effect.
VECTOR_RTOL = 1e-4
_ASSIGNED = re.compile(
    rf"(?:{re.escape(WORKER_READY)}|{re.escape(WORKER_PARTITIONS_ASSIGNED)}).*?partitions=(\d+)"
)


def group_member_settings(settings: Settings) -> Settings:
    """The same settings (topics, group, database) with the worker's own ports: another group member."""
    web, metrics = free_ports(2)
    return settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"web_port": web, "metrics_port": metrics})}
    )


def latest_assignment(log: str) -> int | None:
    found = _ASSIGNED.findall(log)
    return int(found[-1]) if found else None


def wait_for_split(workers: Sequence[WorkerProcess], partitions: int, timeout_s: float = 90.0) -> None:
    deadline = time.perf_counter() + timeout_s
    while True:
        counts = [latest_assignment(w.log()) for w in workers]
        if all(c for c in counts) and sum(c or 0 for c in counts) == partitions:
            return
        for w in workers:
            w.check_alive()
        if time.perf_counter() > deadline:
            raise RuntimeError(f"partitions not split between the workers within {timeout_s} s: {counts}")
        time.sleep(0.1)


def applied_events(metrics_text: str) -> float:
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("llmrec_worker_events_total{") and 'outcome="applied"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def run_group(
    settings: Settings, dsn: str, prefix: str, count: int, workers: int, timeout_s: float = 300.0
) -> dict[str, Any]:
    """Start ``workers`` members of the settings' group, publish ``count`` events, wait until applied."""
    members = [settings] + [group_member_settings(settings) for _ in range(workers - 1)]
    item_ids, keys = synthetic_items(ITEMS)
    vectors = np.random.default_rng(11).standard_normal((ITEMS, DIM)).astype(np.float32)
    ItemIndex.build(keys, vectors).save(settings.index_dir)
    events = rating_watch_events(prefix, count, item_ids, USERS)
    runs: list[WorkerProcess] = []
    try:
        for n, member in enumerate(members):
            runs.append(start_worker(member, name=f"worker{n}"))
            runs[-1].wait_ready()
        wait_for_split(runs, len(settings.kafka.consumed_topics) * settings.kafka.partitions)
        assignment = [latest_assignment(r.log()) for r in runs]
        started = time.perf_counter()
        publish_all(settings.kafka, events)
        with LedgerCounter(dsn) as ledger:
            while (done := ledger.count(prefix)) < count:
                for r in runs:
                    r.check_alive()
                if time.perf_counter() - started > timeout_s:
                    raise RuntimeError(f"ledger held {done} of {count} after {timeout_s} s")
                time.sleep(0.1)
        elapsed = time.perf_counter() - started
        shares = [applied_events(scrape(m.worker.metrics_port)) for m in members]
    finally:
        for r in runs:
            r.stop()
    return {
        "workers": workers,
        "events": count,
        "partitions_per_worker": assignment,
        "seconds": elapsed,
        "events_per_s": count / elapsed,
        "applied_by_worker": shares,
        "events_per_s_by_worker": [s / elapsed for s in shares],
    }


def compare(a: ProfilesSnapshot, b: ProfilesSnapshot) -> dict[str, Any]:
    vector_diff = a.max_vector_rel_diff(b)
    weight_diff = a.max_weight_rel_diff(b)
    return {
        "profiles": [a.profiles, b.profiles],
        "ledger_rows": [a.ledger_rows, b.ledger_rows],
        "exact_sha256": [a.exact_sha256, b.exact_sha256],
        "exact_equal": a.exact_sha256 == b.exact_sha256,
        "max_vector_rel_diff": vector_diff,
        "max_weight_rel_diff": weight_diff,
        "identical": a.exact_sha256 == b.exact_sha256
        and vector_diff <= VECTOR_RTOL
        and weight_diff <= VECTOR_RTOL,
    }


def measure(services: Services, count: int) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    snapshots: list[ProfilesSnapshot] = []
    for workers in (1, 2):
        settings = services.settings(f"scaleout{workers}", partitions=PARTITIONS)
        prefix = f"s{uuid.uuid4().hex[:6]}-"
        runs[f"workers_{workers}"] = run_group(settings, services.dsn, prefix, count, workers)
        snapshots.append(profiles_snapshot(services.dsn, prefix))
    one, two = runs["workers_1"], runs["workers_2"]
    return {
        "partitions_per_topic": PARTITIONS,
        "users": USERS,
        **runs,
        "speedup_2_vs_1": two["events_per_s"] / one["events_per_s"],
        "final_state": compare(*snapshots),
    }


def run(quick: bool) -> dict[str, Any]:
    count = 10_000 if quick else 100_000
    try:
        with kafka_and_postgres(PARTITIONS, "scaleout") as services:
            load_before = os.getloadavg()[0]
            measured = measure(services, count)
            return {
                "services_start_s": services.start_s,
                **measured,
                "load_average_1m": [load_before, os.getloadavg()[0]],
            }
    except Exception as exc:  # reported with the reason, never as a made-up number
        return {"error": f"{type(exc).__name__}: {exc}"}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scaleout", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(run(args.quick), indent=2))


if __name__ == "__main__":
    main()
