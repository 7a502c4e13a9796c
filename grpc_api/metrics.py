"""Prometheus metrics of the API process (one definition; documented in docs/metrics.md).

Served on ``api.metrics_port`` (``llmrec serve``; 0 turns it off) from the default registry, which also
carries prometheus_client's ``process_*`` collectors (resident memory, CPU seconds, open files).

- ``llmrec_api_request_seconds{method, code}``: histogram of every RPC of the Recommender service,
  answered or refused: the servicer observes what it handles; requests refused before it (bad token,
  rate limit, undecodable bytes) are observed by the interceptor that refuses them.
- ``llmrec_api_requests_in_flight{method}``: requests the servicer is working on now.
- ``llmrec_api_index_items``, ``llmrec_api_index_info{version, kind}``,
  ``llmrec_api_index_loaded_timestamp_seconds``: the index being served, set at start-up and on reload.
"""

from __future__ import annotations

import time

from prometheus_client import Gauge, Histogram, Info

# Bucket edges from 0.5 ms (a cached cold-start answer) to 5 s (the client's default deadline).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

REQUEST_SECONDS = Histogram(
    "llmrec_api_request_seconds",
    "gRPC request latency by method and status code",
    ["method", "code"],
    buckets=LATENCY_BUCKETS,
)
REQUESTS_IN_FLIGHT = Gauge(
    "llmrec_api_requests_in_flight", "gRPC requests being processed now, by method", ["method"]
)
INDEX_ITEMS = Gauge("llmrec_api_index_items", "Items in the served index")
INDEX_INFO = Info("llmrec_api_index", "Version and kind of the served index")
INDEX_LOADED = Gauge(
    "llmrec_api_index_loaded_timestamp_seconds", "Unix time at which the served index was swapped in"
)


def method_name(full_method: str) -> str:
    """ "/llmrec.v1.Recommender/Recommend" -> "Recommend" (the label the servicer uses)."""
    return full_method.rsplit("/", 1)[-1] or full_method


def observe_refusal(full_method: str, code_name: str, started: float) -> None:
    """A request refused before the servicer saw it (``started``: ``time.perf_counter()`` at arrival)."""
    REQUEST_SECONDS.labels(method_name(full_method), code_name).observe(time.perf_counter() - started)


def index_served(items: int, version: str, kind: str) -> None:
    INDEX_ITEMS.set(items)
    INDEX_INFO.info({"version": version, "kind": kind})
    INDEX_LOADED.set(time.time())
