"""The gRPC health service with ``List`` (every service's status in one call), which grpcio-health-checking
1.81 does not have: its asyncio servicer answers ``Check`` and ``Watch``, this one adds ``List``.

The messages of ``List`` come from the served descriptors (``grpc_api.descriptors``), which also tell
reflection that the service has the method.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from grpc_api.descriptors import HEALTH_PACKAGE, HEALTH_SERVICE, SERVED

ServingStatus: TypeAlias = "health_pb2.HealthCheckResponse.ServingStatus.ValueType"

LIST_METHOD = f"/{HEALTH_SERVICE}/List"
HealthListRequest: Any = SERVED.message_class(f"{HEALTH_PACKAGE}.HealthListRequest")
HealthListResponse: Any = SERVED.message_class(f"{HEALTH_PACKAGE}.HealthListResponse")
# The protocol asks a server to refuse List (RESOURCE_EXHAUSTED) beyond a limit it chooses; it suggests 100.
MAX_LISTED = 100


class HealthServicer(health.aio.HealthServicer):  # type: ignore[misc]  # grpc_health is untyped
    """grpcio-health-checking's asyncio servicer, which also keeps the statuses for ``List``."""

    def __init__(self) -> None:
        super().__init__()
        # The base class starts with the server ("") SERVING; so does this record of it.
        self._statuses: dict[str, ServingStatus] = {"": health_pb2.HealthCheckResponse.SERVING}
        self._shutting_down = False

    async def set(self, service: str, status: ServingStatus) -> None:
        if not self._shutting_down:  # the base class ignores it then too
            self._statuses[service] = status
        await super().set(service, status)

    async def enter_graceful_shutdown(self) -> None:
        if not self._shutting_down:
            self._shutting_down = True
            self._statuses = dict.fromkeys(self._statuses, health_pb2.HealthCheckResponse.NOT_SERVING)
        await super().enter_graceful_shutdown()

    def statuses(self) -> dict[str, ServingStatus]:
        return dict(self._statuses)

    async def List(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if len(self._statuses) > MAX_LISTED:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"more than {MAX_LISTED} services; Check them one by one"
            )
        response = HealthListResponse()
        for service, status in self._statuses.items():
            response.statuses[service].status = status
        return response


def add_health_servicer(servicer: HealthServicer, server: grpc.aio.Server) -> None:
    """``Check`` and ``Watch`` as grpcio-health-checking registers them, and ``List`` beside them."""
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    handler = grpc.unary_unary_rpc_method_handler(
        servicer.List,
        request_deserializer=HealthListRequest.FromString,
        response_serializer=HealthListResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(HEALTH_SERVICE, {"List": handler}),)
    )
