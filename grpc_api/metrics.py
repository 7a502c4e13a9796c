"""Prometheus metrics of the API process (one definition; documented in docs/metrics.md).

Served on ``api.metrics_port`` (``llmrec serve``; 0 turns it off) from the default registry, which also
carries prometheus_client's ``process_*`` collectors (resident memory, CPU seconds, open files).

The request metrics follow go-grpc-prometheus (names and labels), so the common gRPC dashboards and
alerts work on them as they are: ``grpc_type``, ``grpc_service``, ``grpc_method`` and ``grpc_code``
(``OK``, ``InvalidArgument``, ``Canceled``, ...: Go's names of the status codes).

- ``grpc_server_started_total``, ``grpc_server_handled_total`` (with ``grpc_code``) and the histogram
  ``grpc_server_handling_seconds`` (also with ``grpc_code``, beyond the convention, so the latency of
  answered requests can be told from that of refusals): every RPC of the Recommender service, answered
  or refused; the servicer observes what it handles, and requests refused before it (bad token, rate
  limit, over ``api.max_message_bytes``, undecodable bytes) are observed by the interceptor that refuses
  them. Health and reflection are not counted.
- ``llmrec_api_requests_in_flight{grpc_service, grpc_method}``: requests the servicer is working on now.
- ``llmrec_api_recommendations_total{strategy, ranker}``: Recommend answers by strategy (``personalized``,
  ``cold_start``) and the path that ranked them (``learned``, ``fusion``, ``popularity``).
- ``llmrec_api_index_items``, ``llmrec_api_index_info{version, kind}``,
  ``llmrec_api_index_loaded_timestamp_seconds``: the index being served, set at start-up and on reload.
"""

from __future__ import annotations

import time

import grpc
from prometheus_client import Counter, Gauge, Histogram, Info

from llmrec_client.v1 import recommender_pb2

SERVICE_NAME: str = recommender_pb2.DESCRIPTOR.services_by_name["Recommender"].full_name
UNARY = "unary"  # every Recommender RPC is unary

# Bucket edges from 0.5 ms (a cached cold-start answer) to 5 s (the client's default deadline).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# Go's names of the status codes (google.golang.org/grpc/codes), the values of ``grpc_code``.
CODE_NAMES: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}

RPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
STARTED = Counter("grpc_server_started_total", "RPCs started on the server", RPC_LABELS)
HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, whatever their status",
    (*RPC_LABELS, "grpc_code"),
)
HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from an RPC's arrival to its answer or refusal",
    (*RPC_LABELS, "grpc_code"),
    buckets=LATENCY_BUCKETS,
)
REQUESTS_IN_FLIGHT = Gauge(
    "llmrec_api_requests_in_flight", "gRPC requests being processed now", ("grpc_service", "grpc_method")
)
RECOMMENDATIONS = Counter(
    "llmrec_api_recommendations_total",
    "Recommend answers by strategy (personalized, cold_start) and the ranker that ordered them "
    "(learned, fusion, popularity)",
    ("strategy", "ranker"),
)
INDEX_ITEMS = Gauge("llmrec_api_index_items", "Items in the served index")
INDEX_INFO = Info("llmrec_api_index", "Version and kind of the served index")
INDEX_LOADED = Gauge(
    "llmrec_api_index_loaded_timestamp_seconds", "Unix time at which the served index was swapped in"
)


# -- HTTP/JSON API (grpc_api/http_api.py). The gRPC families above are labelled for gRPC (grpc_code, ...), so
# HTTP requests are counted in their own families, by route template (never the raw path: bounded labels)
# and HTTP status code. Refusals (401, 429) and unmatched paths (route "unmatched") are counted too.
HTTP_LABELS = ("method", "route", "code")
HTTP_REQUESTS = Counter(
    "llmrec_api_http_requests_total", "HTTP/JSON API requests by method, route and status code", HTTP_LABELS
)
HTTP_SECONDS = Histogram(
    "llmrec_api_http_request_duration_seconds",
    "Time from an HTTP request's arrival to its answer or refusal",
    HTTP_LABELS,
    buckets=LATENCY_BUCKETS,
)
# Unlabelled: the route is known only once the request is routed.
HTTP_IN_FLIGHT = Gauge("llmrec_api_http_requests_in_flight", "HTTP/JSON API requests being processed now")


def observe_http(method: str, route: str, code: int, started: float) -> None:
    """One HTTP request's end (``started``: ``time.perf_counter()`` at its arrival)."""
    labels = (method, route, str(code))
    HTTP_REQUESTS.labels(*labels).inc()
    HTTP_SECONDS.labels(*labels).observe(time.perf_counter() - started)


# -- end HTTP/JSON API


def code_name(code: grpc.StatusCode) -> str:
    return CODE_NAMES.get(code, "Unknown")


def split_method(full_method: str) -> tuple[str, str]:
    """ "/llmrec.v1.Recommender/Recommend" -> ("llmrec.v1.Recommender", "Recommend")."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service or SERVICE_NAME, method or full_method


def observe_start(method: str, service: str = SERVICE_NAME) -> None:
    STARTED.labels(UNARY, service, method).inc()


def observe_handled(method: str, code: grpc.StatusCode, started: float, service: str = SERVICE_NAME) -> None:
    """One RPC's end (``started``: ``time.perf_counter()`` at its arrival)."""
    name = code_name(code)
    HANDLED.labels(UNARY, service, method, name).inc()
    HANDLING_SECONDS.labels(UNARY, service, method, name).observe(time.perf_counter() - started)


def observe_refusal(full_method: str, code: grpc.StatusCode, started: float) -> None:
    """A request refused before the servicer saw it: it starts and ends here."""
    service, method = split_method(full_method)
    observe_start(method, service)
    observe_handled(method, code, started, service)


def handled_series(method: str, code: grpc.StatusCode = grpc.StatusCode.OK) -> str:
    """One ``grpc_server_handled_total`` series of the Recommender as the text exposition writes it (labels
    sorted by name), for ``llmrec.metrics_http.sample_value``."""
    labels = {
        "grpc_type": UNARY,
        "grpc_service": SERVICE_NAME,
        "grpc_method": method,
        "grpc_code": code_name(code),
    }
    inner = ",".join(f'{name}="{value}"' for name, value in sorted(labels.items()))
    return f"grpc_server_handled_total{{{inner}}}"


def recommendation_served(strategy: str, ranker: str) -> None:
    RECOMMENDATIONS.labels(strategy, ranker).inc()


def index_served(items: int, version: str, kind: str) -> None:
    INDEX_ITEMS.set(items)
    INDEX_INFO.info({"version": version, "kind": kind})
    INDEX_LOADED.set(time.time())
