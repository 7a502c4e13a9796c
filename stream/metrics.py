"""Prometheus metrics of the worker, served on ``worker.metrics_port`` (0 disables the endpoint)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)

from stream.processing import BatchResult

# A registry of our own: tests build several processors in one process without duplicate-metric errors
# from the global one.
REGISTRY = CollectorRegistry()
# process_* series (resident memory, CPU seconds, open files) as the API's default registry has them.
ProcessCollector(registry=REGISTRY)

EVENTS = Counter(
    "llmrec_worker_events",
    "Events consumed, by outcome (applied, duplicate, dead_lettered).",
    ["topic", "outcome"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "llmrec_worker_dead_letters",
    "Events sent to the dead-letter topic, by reason.",
    ["topic", "reason"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "llmrec_worker_retries",
    "Failed attempts against Triton, PostgreSQL or Kafka that were retried.",
    ["topic"],
    registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "llmrec_worker_batch_seconds",
    "Time to process one batch, retries included.",
    ["topic"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "llmrec_worker_batch_size",
    "Messages per batch handed to the processor (bounded by worker.batch_size).",
    ["topic"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "llmrec_worker_consumer_lag",
    "Messages in the partition after the last one of the latest batch taken (high watermark minus the "
    "next offset), as the worker's consumer last saw the high watermark.",
    ["topic", "partition"],
    registry=REGISTRY,
)


def observe(topic: str, result: BatchResult) -> None:
    EVENTS.labels(topic, "applied").inc(result.applied)
    EVENTS.labels(topic, "duplicate").inc(result.duplicates)
    EVENTS.labels(topic, "dead_lettered").inc(result.dead_lettered)
    for reason, count in result.reasons.items():
        DEAD_LETTERS.labels(topic, reason).inc(count)
    RETRIES.labels(topic).inc(result.retries)
    BATCH_SECONDS.labels(topic).observe(result.latency_s)
    BATCH_SIZE.labels(topic).observe(result.received)


def observe_lag(topic: str, partition: int, lag: int) -> None:
    CONSUMER_LAG.labels(topic, str(partition)).set(max(0, lag))


def serve(port: int, host: str = "127.0.0.1") -> None:
    if port:
        start_http_server(port, addr=host, registry=REGISTRY)
