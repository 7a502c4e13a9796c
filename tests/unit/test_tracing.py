"""Tracing (llmrec/tracing.py): off unless the OTEL_* variables ask for it, W3C trace context in Kafka
headers, a batch span that continues its first traced message and links the rest, and one trace from a
publish through the worker's batch to an HTTP recommendation, recorded with the SDK's in-memory exporter."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from encoder_triton.client import EncodeResult
from llmrec import tracing
from llmrec.catalogue import Item
from llmrec.events.producer import EventProducer
from llmrec.events.schema import RatingEvent, ReviewEvent
from llmrec.settings import KafkaSettings, PreferenceSettings
from llmrec.store.fake import FakeStore
from ranker.retrieval import ItemIndex
from stream.deadletter import DeadLetter
from stream.item_vectors import ArrayItemVectors
from stream.processing import (
    BatchProcessor,
    RawMessage,
    decay_from_settings,
    topic_event_types,
    weights_from_settings,
)
from tests.synthetic import genre_embeddings

KAFKA = KafkaSettings(bootstrap="127.0.0.1:1", topic_prefix="t")
GENRES = [("Action",), ("Drama",), ("Comedy", "Drama")]
ITEMS = [Item(item_id=i, title=f"Show {i}", genres=GENRES[i % 3], members=10 * i) for i in range(1, 31)]
VECTORS = genre_embeddings([it.genres for it in ITEMS], dim=16, seed=3)
T0 = datetime(2024, 5, 1, tzinfo=UTC)


class FakeKafka:
    """librdkafka's produce / poll / flush, keeping each message with its headers (None: none given)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes | None, bytes | None, Any]] = []
        self.calls: list[dict[str, Any]] = []
        self._pending: list[Any] = []

    def produce(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, **kwargs: Any
    ) -> None:
        self.calls.append(kwargs)
        self.messages.append((topic, key, value, kwargs.get("headers")))
        self._pending.append(kwargs.get("on_delivery"))

    def poll(self, timeout: float = 0) -> int:
        for callback in self._pending:
            callback(None, None)
        self._pending.clear()
        return 0

    def flush(self, timeout: float = 0) -> int:
        return self.poll()

    def consumed(self) -> list[RawMessage]:
        """The messages as the worker's agents hand them over (headers included while tracing is on)."""
        return [
            RawMessage(topic, 0, offset, key, value, tuple(headers or ()))
            for offset, (topic, key, value, headers) in enumerate(self.messages)
        ]


class FakeEncoder:
    async def embed_and_score(self, texts: Sequence[str]) -> EncodeResult:
        with tracing.child_span("triton infer fake", kind=SpanKind.CLIENT):
            return EncodeResult(np.zeros((len(texts), 16), np.float32), np.full(len(texts), 0.9, np.float32))


class NoLetters:
    async def send(self, letters: Sequence[DeadLetter]) -> None:
        assert not letters, letters


def processor(store: FakeStore) -> BatchProcessor:
    prefs = PreferenceSettings()
    return BatchProcessor(
        store=store,
        encoder=FakeEncoder(),
        dead_letters=NoLetters(),
        item_vectors=ArrayItemVectors([it.key for it in ITEMS], VECTORS),
        topic_types=topic_event_types(KAFKA),
        weights=weights_from_settings(prefs),
        decay=decay_from_settings(prefs),
    )


def rating(event_id: str, user: str, item: Item, hours: int = 0) -> RatingEvent:
    return RatingEvent(
        event_id=event_id,
        user_id=user,
        item_id=item.external_id,
        event_time=T0 + timedelta(hours=hours),
        rating=9,
    )


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for one test, recording into memory (the process's global provider is left alone)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with tracing.use_provider(provider):
        yield exporter
    provider.shutdown()


def named(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{name}: {[s.name for s in spans]}"
    return found[0]


# -- off by default -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, []),
        ({"OTEL_SERVICE_NAME": "x"}, []),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console, otlp"}, ["console", "otlp"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, []),
    ],
)
def test_only_the_otel_variables_switch_tracing_on(environ: dict[str, str], exporters: list[str]) -> None:
    assert tracing.exporters_from_env(environ) == exporters


def test_unconfigured_processes_install_no_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    assert tracing.configure("llmrec-test") is False
    assert not tracing.enabled()
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def test_off_a_publish_carries_no_headers_and_nothing_is_recorded() -> None:
    assert not tracing.enabled()
    kafka = FakeKafka()
    with EventProducer(KAFKA, client=kafka) as producer:
        producer.publish(rating("e1", "u1", ITEMS[0]))
    assert "headers" not in kafka.calls[0]
    assert tracing.kafka_headers() is None
    assert tracing.inject({}) == {}
    with tracing.span("anything") as span, tracing.batch_span("batch", [[("traceparent", b"x")]]) as batch:
        assert span is trace.INVALID_SPAN and batch is trace.INVALID_SPAN


def test_an_unsupported_exporter_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jaeger")
    with pytest.raises(ValueError, match="jaeger"):
        tracing.configure("llmrec-test")
    assert not tracing.enabled()


# -- propagation ----------------------------------------------------------------------------------------


def test_a_publish_puts_its_producer_span_in_a_w3c_traceparent_header(spans: InMemorySpanExporter) -> None:
    kafka = FakeKafka()
    with EventProducer(KAFKA, client=kafka) as producer:
        producer.publish(rating("e1", "u1", ITEMS[0]))
    send = named(spans.get_finished_spans(), f"send {KAFKA.ratings_topic}")
    assert send.kind is SpanKind.PRODUCER
    assert (
        send.attributes is not None and send.attributes["messaging.destination.name"] == KAFKA.ratings_topic
    )
    headers = dict(kafka.messages[0][3])
    context = send.get_span_context()
    flags = int(context.trace_flags)
    assert flags & 1, "sampled"
    assert headers["traceparent"] == f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}".encode()
    extracted = trace.get_current_span(tracing.extract_headers(kafka.messages[0][3])).get_span_context()
    assert (extracted.trace_id, extracted.span_id, extracted.is_remote) == (
        context.trace_id,
        context.span_id,
        True,
    )


def test_foreign_or_broken_headers_are_ignored(spans: InMemorySpanExporter) -> None:
    context = tracing.extract_headers(
        [("traceparent", b"\xff\xfe"), ("other", None), ("traceparent", b"junk")]
    )
    assert not trace.get_current_span(context).get_span_context().is_valid


async def test_a_batch_continues_its_first_traced_message_and_links_every_traced_one(
    spans: InMemorySpanExporter,
) -> None:
    kafka = FakeKafka()
    with EventProducer(KAFKA, client=kafka) as producer:
        for n in range(2):
            with tracing.span(f"client {n}"):
                producer.publish(rating(f"e{n}", f"u{n}", ITEMS[n]))
    untraced = RawMessage(
        KAFKA.ratings_topic, 0, 9, b"u9", rating("e9", "u9", ITEMS[2]).model_dump_json().encode()
    )
    result = await processor(FakeStore()).process([untraced, *kafka.consumed()])
    assert result.applied == 3

    finished = spans.get_finished_spans()
    first, second = (named(finished, f"client {n}") for n in range(2))
    sends = [s for s in finished if s.kind is SpanKind.PRODUCER]
    batch = named(finished, f"process {KAFKA.ratings_topic}")
    assert batch.kind is SpanKind.CONSUMER
    assert batch.parent is not None and batch.parent.span_id == sends[0].context.span_id
    assert batch.context.trace_id == first.context.trace_id != second.context.trace_id
    assert [link.context.span_id for link in batch.links] == [s.context.span_id for s in sends]
    assert batch.attributes is not None
    assert batch.attributes["messaging.batch.message_count"] == 3
    assert batch.attributes["llmrec.batch.applied"] == 3


# -- one trace ------------------------------------------------------------------------------------------


async def test_publish_worker_batch_and_recommendation_form_one_trace(spans: InMemorySpanExporter) -> None:
    """A client publishes a rating and a review, the worker applies them (Triton for the review's
    sentiment), and the client asks the HTTP API for recommendations: every span is in the client's trace
    and reaches its root through parents."""
    from grpc_api.http_api import create_app
    from grpc_api.service import RecommendationService, ServiceConfig, Snapshot
    from llmrec.settings import ApiSettings

    store = FakeStore()
    service = RecommendationService(
        store, Snapshot(ItemIndex.build([it.key for it in ITEMS], VECTORS), ITEMS), ServiceConfig()
    )
    app = create_app(ApiSettings(), service=lambda: service)
    kafka = FakeKafka()
    with tracing.span("publish then recommend") as root:
        with EventProducer(KAFKA, client=kafka) as producer:
            producer.publish(rating("e1", "fan", ITEMS[3]))
            producer.publish(
                ReviewEvent(
                    event_id="e2",
                    user_id="fan",
                    item_id=ITEMS[6].external_id,
                    event_time=T0,
                    text="great fights",
                )
            )
        worker = processor(store)
        consumed = kafka.consumed()
        for topic in (KAFKA.ratings_topic, KAFKA.reviews_topic):
            # Outside the client's context, as in the worker process: only the headers connect them.
            token = otel_context.attach(otel_context.Context())
            try:
                await worker.process([m for m in consumed if m.topic == topic])
            finally:
                otel_context.detach(token)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            answer = await client.get("/v1/users/fan/recommendations?k=3", headers=tracing.inject({}))
    assert answer.status_code == 200, answer.text
    assert answer.json()["strategy"] != "cold_start"

    finished = spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in finished}
    trace_id = root.get_span_context().trace_id
    assert {s.context.trace_id for s in finished} == {trace_id}
    for span in finished:
        hops = 0
        while span.parent is not None:
            span, hops = by_id[span.parent.span_id], hops + 1
        assert span.name == "publish then recommend"
    names = {s.name for s in finished}
    assert {
        f"send {KAFKA.ratings_topic}",
        f"process {KAFKA.ratings_topic}",
        f"process {KAFKA.reviews_topic}",
        "triton infer fake",
        "GET /v1/users/{user_id}/recommendations",
        "retrieve candidates",
        "rank fusion",
    } <= names, names
    server = named(finished, "GET /v1/users/{user_id}/recommendations")
    assert server.kind is SpanKind.SERVER and server.parent is not None
    assert server.parent.span_id == root.get_span_context().span_id
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 200
    triton = named(finished, "triton infer fake")
    assert triton.parent is not None
    assert by_id[triton.parent.span_id].name == f"process {KAFKA.reviews_topic}"


async def test_grpc_requests_continue_the_callers_trace_and_carry_their_status(
    spans: InMemorySpanExporter,
) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from grpc_api.server import ApiServer
    from grpc_api.service import Snapshot
    from llmrec.settings import ApiSettings, Settings
    from llmrec_client.v1 import recommender_pb2, recommender_pb2_grpc

    store = FakeStore()

    async def open_store(_: Settings) -> FakeStore:
        return store

    server = ApiServer(
        Settings(api=ApiSettings(port=0, metrics_port=0, grace_period_s=0.5)),
        store_factory=open_store,
        snapshot_loader=lambda _: Snapshot(ItemIndex.build([it.key for it in ITEMS], VECTORS), ITEMS),
    )
    port = await server.start()
    await server.wait_ready(10)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = recommender_pb2_grpc.RecommenderStub(channel)
            with tracing.span("caller") as caller:
                metadata = tuple(tracing.inject({}).items())
                await stub.Recommend(
                    recommender_pb2.RecommendRequest(user_id="nobody", k=3), metadata=metadata
                )
                with pytest.raises(grpc.aio.AioRpcError) as missing:
                    await stub.SimilarItems(recommender_pb2.SimilarItemsRequest(item_id="mal:999999"))
            assert missing.value.code() is grpc.StatusCode.NOT_FOUND
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    finally:
        await server.stop(0.5)

    finished = spans.get_finished_spans()
    recommend = named(finished, "llmrec.v1.Recommender/Recommend")
    assert recommend.kind is SpanKind.SERVER
    assert recommend.parent is not None and recommend.parent.span_id == caller.get_span_context().span_id
    assert recommend.attributes is not None and recommend.attributes["rpc.grpc.status_code"] == 0
    assert named(finished, "rank popularity").parent == recommend.context  # an unknown user: cold start
    similar = named(finished, "llmrec.v1.Recommender/SimilarItems")
    assert similar.attributes is not None and similar.attributes["rpc.grpc.status_code"] == 5
    assert similar.status.is_unset, "a caller's mistake is not a server fault"
    assert not [s for s in finished if "Health" in s.name], "probes are not traced"


def test_log_lines_inside_a_span_carry_its_ids(spans: InMemorySpanExporter) -> None:
    from llmrec.logs import add_trace_ids

    assert "trace_id" not in add_trace_ids(None, "info", {"event": "outside"})
    with tracing.span("work") as work:
        line = add_trace_ids(None, "info", {"event": "inside"})
    context = work.get_span_context()
    assert (line["trace_id"], line["span_id"]) == (f"{context.trace_id:032x}", f"{context.span_id:016x}")


async def test_events_posted_over_http_are_published_under_the_request_span(
    spans: InMemorySpanExporter,
) -> None:
    from grpc_api.http_api import EventPublisher, create_app
    from llmrec.settings import ApiSettings

    kafka = FakeKafka()
    publisher = EventPublisher(KAFKA, timeout_s=1.0, client_factory=lambda: kafka)
    app = create_app(ApiSettings(), service=lambda: None, serving=lambda: True, publisher=publisher)
    body = [rating(f"e{n}", "poster", ITEMS[n]).model_dump(mode="json") for n in range(2)]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
        reply = await client.post("/v1/events", json=body)
    assert reply.status_code == 202, reply.text

    finished = spans.get_finished_spans()
    request = named(finished, "POST /v1/events")
    sends = [s for s in finished if s.kind is SpanKind.PRODUCER]
    assert len(sends) == 2 and all(s.parent == request.context for s in sends)
    carried = [
        trace.get_current_span(tracing.extract_headers(m[3])).get_span_context() for m in kafka.messages
    ]
    assert [c.span_id for c in carried] == [s.context.span_id for s in sends]
