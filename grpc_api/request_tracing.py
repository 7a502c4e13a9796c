"""A server span for every API request, gRPC and HTTP, continuing the caller's trace when it sends W3C
``traceparent`` (``llmrec.tracing``; off unless configured). The service's retrieval and ranking spans and
the store's PostgreSQL spans are its children.

Health checks, reflection and ``/healthz`` / ``/openapi.json`` get no span: probes every few seconds would
bury the requests (they are counted in the metrics).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
from opentelemetry.trace import Status, StatusCode
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmrec import tracing

UNTRACED_GRPC_PREFIX = "/grpc."  # health and reflection services
UNTRACED_HTTP_PATHS = frozenset({"/healthz", "/openapi.json"})
# Server-side gRPC codes that mean the server failed (OpenTelemetry's RPC conventions); the others are the
# caller's mistakes and leave the span unset.
SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def _text_metadata(metadata: Iterable[Any] | None) -> dict[str, str]:
    """gRPC metadata as a carrier: text entries only (``-bin`` ones are bytes and carry no context)."""
    carrier: dict[str, str] = {}
    for key, value in metadata or ():
        if isinstance(value, str):
            carrier[key.lower()] = value
    return carrier


class TraceRequests(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc.aio is untyped
    """First of the server's interceptors, so a request refused by access control is traced too."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if (
            not tracing.enabled()
            or handler is None
            or handler.unary_unary is None
            or method.startswith(UNTRACED_GRPC_PREFIX)
        ):
            return handler
        behaviour = handler.unary_unary
        service, _, name = method.lstrip("/").rpartition("/")
        parent = tracing.extract(_text_metadata(handler_call_details.invocation_metadata))
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            with tracing.span(
                method.lstrip("/"),
                kind=tracing.SpanKind.SERVER,
                attributes=attributes,
                context=parent,
                record_exception=False,
            ) as span:
                try:
                    return await behaviour(request, context)
                except grpc.aio.AbortError:
                    raise  # context.code() says how it ended
                except BaseException as exc:
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                    raise
                finally:
                    code = context.code() or grpc.StatusCode.OK
                    if isinstance(code, grpc.StatusCode):
                        span.set_attribute("rpc.grpc.status_code", code.value[0])
                        if code in SERVER_FAULTS:
                            span.set_status(Status(StatusCode.ERROR, code.name))

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class TraceHttp:
    """ASGI middleware: a server span per HTTP request, named by its route template once routed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not tracing.enabled() or scope.get("path") in UNTRACED_HTTP_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        method = str(scope.get("method", ""))
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        with tracing.span(
            method,
            kind=tracing.SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": str(scope.get("path", ""))},
            context=tracing.extract(headers),
        ) as span:
            try:
                await self.app(scope, receive, sending)
            finally:
                matched = scope.get("route")
                if isinstance(matched, Route):
                    span.update_name(f"{method} {matched.path_format}")
                    span.set_attribute("http.route", matched.path_format)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR, str(status)))
