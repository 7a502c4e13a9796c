"""OpenTelemetry tracing: off unless the standard ``OTEL_*`` variables ask for an exporter.

One trace follows an event from its publish, through Kafka (W3C ``traceparent`` in the message headers),
to the worker's batch, its Triton call and its PostgreSQL writes; and one follows every API request (gRPC
and HTTP) down to retrieval and ranking. A client that sends ``traceparent`` with its request joins both.

Switching it on (``configure``, called once by each process's entry point: API, worker, publishing jobs):
- ``OTEL_TRACES_EXPORTER`` = ``otlp`` (OTLP over HTTP/protobuf to ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), ``console`` (JSON on stdout), or a comma-separated list; a set
  OTLP endpoint alone means ``otlp``. Unset, ``none`` or ``OTEL_SDK_DISABLED=true``: off.
- everything else is the SDK's own reading of the standard variables: ``OTEL_SERVICE_NAME`` (default: the
  process's role), ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``/``_ARG``, ``OTEL_BSP_*``,
  ``OTEL_EXPORTER_OTLP_HEADERS``/``_TIMEOUT``/``_COMPRESSION``, ``OTEL_PROPAGATORS``.

Off means no SDK provider is installed: every helper here returns at its first check, publishes no
header and makes no span object (only the OpenTelemetry API is imported; the SDK is imported on demand).

A batch holds many messages, each perhaps from another trace: the batch's span is a child of the first
message that carries a trace context and links every traced message of the batch (up to the SDK's link
limit, 128 by default), so a traced publish continues into the batch that applied it, and the batch's
Triton and PostgreSQL spans hang under it. Spans of internal operations (``child_span``: store reads,
Triton calls) are made only inside a recorded span, so background polls produce no root spans.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span, SpanKind, Tracer
from opentelemetry.util.types import AttributeValue

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

__all__ = [
    "Span",
    "SpanKind",
    "batch_span",
    "child_span",
    "configure",
    "enabled",
    "exporters_from_env",
    "extract",
    "extract_headers",
    "force_flush",
    "inject",
    "kafka_headers",
    "producer_span",
    "span",
    "traced_child",
    "use_provider",
]

INSTRUMENTATION = "llmrec"
P = ParamSpec("P")
R = TypeVar("R")
KafkaHeaders = Sequence[tuple[str, bytes | None]]
Attributes = Mapping[str, AttributeValue]

# The provider this process records with; None is off (the default).
_provider: TracerProvider | None = None
_tracer: Tracer | None = None


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def exporters_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The span exporters the environment asks for; empty means tracing stays off."""
    env = os.environ if environ is None else environ
    if _flag(env.get("OTEL_SDK_DISABLED")):
        return []
    named = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not named:
        # The SDK's own default is "otlp" to localhost; ours is off unless somewhere to send to is named.
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return ["otlp"] if endpoint else []
    return [n for n in named if n != "none"]


def _exporter(name: str) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name == "otlp":
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        if protocol != "http/protobuf":
            # Only the HTTP exporter is a dependency (the gRPC one would pin grpcio against ours).
            raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: only http/protobuf is supported")
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()  # endpoint, headers, timeout, compression: from OTEL_EXPORTER_OTLP_*
    raise ValueError(f"OTEL_TRACES_EXPORTER={name!r}: supported are otlp, console and none")


def configure(service_name: str) -> bool:
    """Install a recording provider if the environment asks for one (see the module docstring); returns
    whether tracing is on. ``service_name`` is the default for ``OTEL_SERVICE_NAME``. Idempotent."""
    if _provider is not None:
        return True
    names = exporters_from_env()
    if not names:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Resource.create reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME, but attributes given to it win:
    # give the role's name only where the environment names no service.
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    resource = Resource.create(None if named else {SERVICE_NAME: service_name})
    # The sampler comes from OTEL_TRACES_SAMPLER; the provider flushes its spans at interpreter exit.
    provider = TracerProvider(resource=resource)
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    trace.set_tracer_provider(provider)
    _install(provider)
    return True


def _install(provider: TracerProvider | None) -> None:
    global _provider, _tracer
    _provider = provider
    _tracer = provider.get_tracer(INSTRUMENTATION) if provider is not None else None


@contextmanager
def use_provider(provider: TracerProvider) -> Iterator[None]:
    """Record with ``provider`` inside the block (tests: an ``InMemorySpanExporter``), then restore."""
    previous = _provider
    _install(provider)
    try:
        yield
    finally:
        _install(previous)


def enabled() -> bool:
    return _tracer is not None


def force_flush(timeout_ms: int = 5000) -> None:
    """Export what is buffered now (a short-lived job before it exits)."""
    if _provider is not None:
        _provider.force_flush(timeout_ms)


# -- spans -------------------------------------------------------------------------------------------------


def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Attributes | None = None,
    context: otel_context.Context | None = None,
    record_exception: bool = True,
) -> AbstractContextManager[Span]:
    """A span around the block, a child of ``context`` (default: the current span; a root without one); a
    no-op when tracing is off. ``record_exception=False`` leaves the status to the caller (a request that
    ends in an expected error status is not a failed span)."""
    if _tracer is None:
        return nullcontext(trace.INVALID_SPAN)
    return _tracer.start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes=attributes,
        record_exception=record_exception,
        set_status_on_exception=record_exception,
    )


def child_span(
    name: str, *, kind: SpanKind = SpanKind.INTERNAL, attributes: Attributes | None = None
) -> AbstractContextManager[Span]:
    """Like ``span``, but only inside a recorded span: an operation outside any traced work (a background
    catalogue poll, a health probe's query) makes no root span of its own."""
    if _tracer is None or not trace.get_current_span().is_recording():
        return nullcontext(trace.INVALID_SPAN)
    return _tracer.start_as_current_span(name, kind=kind, attributes=attributes)


def traced_child(
    name: str, *, kind: SpanKind = SpanKind.INTERNAL, attributes: Attributes | None = None
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Decorate an async function with ``child_span(name, ...)`` around each call."""

    def decorate(function: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        @functools.wraps(function)
        async def traced(*args: P.args, **kwargs: P.kwargs) -> R:
            with child_span(name, kind=kind, attributes=attributes):
                return await function(*args, **kwargs)

        return traced

    return decorate


def producer_span(topic: str) -> AbstractContextManager[Span]:
    """The span of one Kafka publish (``kafka_headers`` inside it carries it to the consumer)."""
    return span(
        f"send {topic}",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
        },
    )


@contextmanager
def batch_span(
    name: str, headers: Iterable[KafkaHeaders | None], attributes: Attributes | None = None
) -> Iterator[Span]:
    """The span of a consumed batch: child of the first message with a trace context, linked to each
    (see the module docstring). ``headers`` holds each message's Kafka headers."""
    if _tracer is None:
        yield trace.INVALID_SPAN
        return
    contexts = []
    for message_headers in headers:
        if not message_headers:
            continue
        found = trace.get_current_span(extract_headers(message_headers)).get_span_context()
        if found.is_valid:
            contexts.append(found)
    parent = trace.set_span_in_context(trace.NonRecordingSpan(contexts[0])) if contexts else None
    with _tracer.start_as_current_span(
        name,
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        links=[Link(c) for c in contexts],
    ) as batch:
        yield batch


# -- propagation -------------------------------------------------------------------------------------------


def kafka_headers() -> list[tuple[str, bytes]] | None:
    """The current trace context as Kafka headers (``traceparent``, ``tracestate``), or None when there is
    nothing to carry (tracing off, or no span): the message then goes out without headers."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(key, value.encode("ascii")) for key, value in carrier.items()] or None


def extract_headers(headers: KafkaHeaders) -> otel_context.Context:
    """The trace context carried by a Kafka message's headers (an empty context when none)."""
    carrier: dict[str, str] = {}
    for key, value in headers:
        if value is None:
            continue
        try:
            carrier[key.lower()] = value.decode("ascii")
        except UnicodeDecodeError:
            continue  # not a propagation header of ours; never fail a message over a header
    return propagate.extract(carrier)


def inject(carrier: dict[str, str]) -> dict[str, str]:
    """Add the current trace context to ``carrier`` (gRPC metadata, HTTP or Triton request headers)."""
    if _tracer is not None:
        propagate.inject(carrier)
    return carrier


def extract(carrier: Mapping[str, str]) -> otel_context.Context | None:
    """The trace context in request headers (keys lower case, as gRPC metadata and ASGI have them); None
    when tracing is off."""
    if _tracer is None:
        return None
    return propagate.extract(carrier)
