"""Prometheus metrics of the worker, served on ``worker.metrics_port`` (0 disables the endpoint)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from stream.processing import BatchResult

# A registry of our own: tests build several processors in one process without duplicate-metric errors
# from the global one.
REGISTRY = CollectorRegistry()

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


def observe(topic: str, result: BatchResult) -> None:
    EVENTS.labels(topic, "applied").inc(result.applied)
    EVENTS.labels(topic, "duplicate").inc(result.duplicates)
    EVENTS.labels(topic, "dead_lettered").inc(result.dead_lettered)
    for reason, count in result.reasons.items():
        DEAD_LETTERS.labels(topic, reason).inc(count)
    RETRIES.labels(topic).inc(result.retries)
    BATCH_SECONDS.labels(topic).observe(result.latency_s)


def serve(port: int, host: str = "127.0.0.1") -> None:
    if port:
        start_http_server(port, addr=host, registry=REGISTRY)
