"""Server interceptors of the API's own: requests over ``api.max_message_bytes`` are RESOURCE_EXHAUSTED,
requests that cannot be decoded INVALID_ARGUMENT; both counted in ``grpc_server_handled_total``.

The access-control interceptors (rate limit, bearer tokens) live in ``grpc_api.security``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from grpc_api import metrics
from llmrec.logs import get_logger

log = get_logger(__name__)


class _Undecodable:
    """Stands in for a request whose bytes are not the method's message (see ``RejectUndecodable``)."""


_UNDECODABLE = _Undecodable()
# Said as it is: the bytes did not decode as this method's request. Why (not protobuf, a field of the wrong
# wire type, a string that is not UTF-8, ...) the decoder does not tell apart.
UNDECODABLE_MESSAGE = "the request is not a valid protobuf message of this method"

# gRPC's int32 channel arguments.
_MAX_CORE_LIMIT = 2**31 - 1


def core_receive_limit(limit: int) -> int:
    """gRPC core's receive limit (``grpc.max_receive_message_length``) for an application limit of
    ``limit`` bytes (``api.max_message_bytes``): twice it. Core refuses a larger message before any
    interceptor runs, so nothing could count that refusal (grpc/grpc#27996); below this, ``RejectOversized``
    refuses and counts. It is also the memory bound: gRPC hands the process no larger request."""
    if limit <= 0:  # gRPC's "no limit"
        return -1
    return min(2 * limit, _MAX_CORE_LIMIT)


def oversized_message(size: int, limit: int) -> str:
    return f"the request is {size} bytes, over the server's limit of {limit} bytes (api.max_message_bytes)"


class _Oversized:
    """Stands in for a request over the limit (see ``RejectOversized``): its size, never its bytes."""

    def __init__(self, size: int) -> None:
        self.size = size


class RejectOversized(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc.aio is untyped
    """RESOURCE_EXHAUSTED, logged and counted, for a unary request of more than ``limit`` bytes, which is
    never decoded. The server sets gRPC core's own limit to ``core_receive_limit(limit)``, so requests up
    to twice the limit reach this check; larger ones core refuses itself, uncounted. Streaming methods
    (health Watch, reflection) have core's limit only."""

    def __init__(self, limit: int) -> None:
        self._limit = limit

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if (
            self._limit <= 0
            or handler is None
            or handler.unary_unary is None
            or handler.request_deserializer is None
        ):
            return handler
        decode, behaviour, limit = handler.request_deserializer, handler.unary_unary, self._limit
        method = handler_call_details.method

        def deserializer(data: bytes) -> Any:
            return _Oversized(len(data)) if len(data) > limit else decode(data)

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, _Oversized):
                exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
                log.info("request", method=method, status=exhausted.name, size=request.size, limit=limit)
                metrics.observe_refusal(method, exhausted, time.perf_counter())
                await context.abort(exhausted, oversized_message(request.size, limit))
            return await behaviour(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=deserializer, response_serializer=handler.response_serializer
        )


class RejectUndecodable(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc.aio is untyped
    """INVALID_ARGUMENT for a unary request that cannot be decoded (invalid UTF-8 in a string field, not
    protobuf at all). gRPC itself would answer UNKNOWN with the exception's class in the details."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        decode, behaviour = handler.request_deserializer, handler.unary_unary
        method = handler_call_details.method

        def deserializer(data: bytes) -> Any:
            try:
                return decode(data)
            except DecodeError:
                return _UNDECODABLE

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if request is _UNDECODABLE:
                log.info("request", method=method, status="INVALID_ARGUMENT", error="undecodable request")
                metrics.observe_refusal(method, grpc.StatusCode.INVALID_ARGUMENT, time.perf_counter())
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, UNDECODABLE_MESSAGE)
            return await behaviour(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=deserializer, response_serializer=handler.response_serializer
        )
