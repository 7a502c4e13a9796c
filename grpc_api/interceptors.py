"""Server interceptors of the API's own: requests that cannot be decoded are INVALID_ARGUMENT.

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
