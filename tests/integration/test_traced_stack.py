"""Tracing on the real stack: a client's trace runs from its Kafka publish through the worker process's
batch, its Triton call and its PostgreSQL writes, to the API process's gRPC and HTTP answers.

The worker and the API run as processes (``deploy.stack``) configured only by the standard variables
(``OTEL_TRACES_EXPORTER=otlp``, ``OTEL_EXPORTER_OTLP_ENDPOINT``); they export OTLP/HTTP to a collector this
test serves and decodes with OpenTelemetry's own protobuf messages. The client side records into memory.
"""

from __future__ import annotations

import gzip
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import httpx
import pytest
from api_process import publish_sample_index
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from deploy import stack
from llmrec import tracing
from llmrec.catalogue import Catalogue
from llmrec.events.lag import wait_until_consumed
from llmrec.events.producer import EventProducer
from llmrec.events.schema import RatingEvent, ReviewEvent
from llmrec.events.topics import ensure_system_topics
from llmrec.settings import Settings, TritonSettings
from llmrec.store import migrate
from llmrec_client.v1 import recommender_pb2, recommender_pb2_grpc

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    links: tuple[str, ...]


class Collector:
    """An OTLP/HTTP trace receiver (``POST /v1/traces``, protobuf) keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                collector.receive(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def receive(self, request: ExportTraceServiceRequest) -> None:
        with self._lock:
            for resource_spans in request.resource_spans:
                attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for s in scope_spans.spans:
                        self.spans.append(
                            Span(
                                service=attributes.get("service.name", ""),
                                name=s.name,
                                trace_id=s.trace_id.hex(),
                                span_id=s.span_id.hex(),
                                parent_id=s.parent_span_id.hex(),
                                links=tuple(link.span_id.hex() for link in s.links),
                            )
                        )

    def of_trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    running = Collector()
    yield running
    running.close()


@pytest.fixture
def traced_stack(
    settings_factory: Callable[..., Settings],
    triton_settings: TritonSettings,
    collector: Collector,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Settings, Catalogue]]:
    """Worker and API processes exporting to ``collector`` (the variables reach them through the
    environment ``deploy.stack`` passes on)."""
    settings = settings_factory(triton=triton_settings)
    migrate(settings.postgres.dsn.get_secret_value())
    ensure_system_topics(settings.kafka)
    catalogue = publish_sample_index(settings)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")  # export within a fraction of a second
    stack.up(settings, only=("worker", "api"), quiet=True)
    try:
        yield settings, catalogue
    finally:
        stack.down(settings, quiet=True)


def test_a_publish_and_the_recommendations_it_changes_are_one_trace(
    traced_stack: tuple[Settings, Catalogue], collector: Collector
) -> None:
    settings, catalogue = traced_stack
    user = f"traced-{uuid.uuid4().hex[:8]}"
    items = list(catalogue)[:3]
    start = datetime(2025, 6, 1, tzinfo=UTC)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    with tracing.use_provider(provider), tracing.span("client: rate, review, recommend") as root:
        with EventProducer(settings.kafka) as producer:
            for n, item in enumerate(items[:2]):
                producer.publish(
                    RatingEvent(
                        event_id=f"{user}-r{n}",
                        user_id=user,
                        item_id=item.external_id,
                        event_time=start + timedelta(hours=n),
                        rating=9.0,
                    )
                )
            producer.publish(
                ReviewEvent(
                    event_id=f"{user}-v",
                    user_id=user,
                    item_id=items[2].external_id,
                    event_time=start + timedelta(days=1),
                    rating=9.0,
                    text="Wonderful and moving; I loved every episode.",
                )
            )
        wait_until_consumed(settings.kafka, timeout_s=120)
        metadata = tuple(tracing.inject({}).items())
        with grpc.insecure_channel(settings.api.target) as channel:
            answer = recommender_pb2_grpc.RecommenderStub(channel).Recommend(
                recommender_pb2.RecommendRequest(user_id=user, k=5), metadata=metadata, timeout=10
            )
        http = httpx.get(
            f"http://127.0.0.1:{settings.api.http_port}/v1/users/{user}/recommendations?k=5",
            headers=tracing.inject({}),
            timeout=10,
        )
    assert answer.strategy == "personalized", answer
    assert http.status_code == 200 and http.json()["strategy"] == "personalized", http.text

    context = root.get_span_context()
    trace_id = f"{context.trace_id:032x}"
    client_spans = [
        Span(
            "client",
            s.name,
            f"{s.context.trace_id:032x}",
            f"{s.context.span_id:016x}",
            f"{s.parent.span_id:016x}" if s.parent else "",
            (),
        )
        for s in exporter.get_finished_spans()
    ]
    assert {s.trace_id for s in client_spans} == {trace_id}
    assert {s.name for s in client_spans} >= {f"send {settings.kafka.ratings_topic}"}

    wanted = {
        ("llmrec-worker", f"process {settings.kafka.ratings_topic}"),
        ("llmrec-worker", f"process {settings.kafka.reviews_topic}"),
        ("llmrec-worker", f"triton infer {settings.triton.model_name}"),
        ("llmrec-worker", "postgresql apply_batch"),
        ("llmrec-api", "llmrec.v1.Recommender/Recommend"),
        ("llmrec-api", "GET /v1/users/{user_id}/recommendations"),
        ("llmrec-api", "postgresql read_user"),
        ("llmrec-api", "retrieve candidates"),
    }
    deadline = time.monotonic() + 30
    while True:
        served = collector.of_trace(trace_id)
        found = {(s.service, s.name) for s in served}
        if wanted <= found or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert wanted <= found, f"missing {sorted(wanted - found)}; the trace holds {sorted(found)}"

    # Connected: every span reaches the client's root through its parents.
    spans = client_spans + served
    by_id = {s.span_id: s for s in spans}
    root_id = f"{context.span_id:016x}"
    for span in spans:
        hops = 0
        while span.parent_id and hops < 20:
            assert span.parent_id in by_id, (
                f"{span.service} {span.name}: parent {span.parent_id} not in trace"
            )
            span, hops = by_id[span.parent_id], hops + 1
        assert span.span_id == root_id, f"{span.name} is a second root"

    def parent_of(service: str, name: str) -> Span:
        (span,) = [s for s in served if (s.service, s.name) == (service, name)][:1]
        return by_id[span.parent_id]

    assert parent_of("llmrec-worker", f"triton infer {settings.triton.model_name}").name == (
        f"process {settings.kafka.reviews_topic}"
    )
    assert parent_of("llmrec-worker", f"process {settings.kafka.ratings_topic}").name == (
        f"send {settings.kafka.ratings_topic}"
    )
    assert parent_of("llmrec-api", "llmrec.v1.Recommender/Recommend").span_id == root_id
