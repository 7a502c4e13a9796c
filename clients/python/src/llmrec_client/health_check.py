"""``grpc.health.v1.Health/Check`` without the grpcio-health-checking package, so the client needs only
grpcio and protobuf.

Its two messages are declared here as descriptors in a private pool: a process that also runs the server
has grpcio-health-checking's own ``grpc/health/v1/health.proto`` in the default pool, and a second file
of that name there would clash. The wire format is that of grpc/grpc ``src/proto/grpc/health/v1``.
"""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

METHOD = "/grpc.health.v1.Health/Check"
_PACKAGE = "grpc.health.v1"
_STATUSES = ("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")


def _health_file() -> descriptor_pb2.FileDescriptorProto:
    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="grpc/health/v1/health.proto", package=_PACKAGE, syntax="proto3"
    )
    request = file.message_type.add(name="HealthCheckRequest")
    request.field.add(name="service", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    response = file.message_type.add(name="HealthCheckResponse")
    status = response.enum_type.add(name="ServingStatus")
    for number, name in enumerate(_STATUSES):
        status.value.add(name=name, number=number)
    response.field.add(
        name="status",
        number=1,
        type=field.TYPE_ENUM,
        type_name=f".{_PACKAGE}.HealthCheckResponse.ServingStatus",
        label=field.LABEL_OPTIONAL,
    )
    return file


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_health_file())
_REQUEST = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.HealthCheckRequest"))
_RESPONSE = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.HealthCheckResponse"))
_STATUS_ENUM = _POOL.FindEnumTypeByName(f"{_PACKAGE}.HealthCheckResponse.ServingStatus")


def request(service: str) -> message.Message:
    """A HealthCheckRequest for ``service`` ("" asks about the whole server)."""
    return _REQUEST(service=service)


def response_from_wire(data: bytes) -> message.Message:
    """A HealthCheckResponse parsed from its serialized bytes."""
    return _RESPONSE.FromString(data)


def status_name(response: message.Message) -> str:
    """The ServingStatus name of a HealthCheckResponse: "SERVING", "NOT_SERVING", ..."""
    # proto3 leaves a zero field out of ListFields: no entry is UNKNOWN (0).
    number = next((value for field, value in response.ListFields() if field.name == "status"), 0)
    value = _STATUS_ENUM.values_by_number.get(number)
    return value.name if value is not None else str(number)


def method(channel: grpc.Channel) -> grpc.UnaryUnaryMultiCallable:
    """The Check call on ``channel``."""
    return channel.unary_unary(
        METHOD, request_serializer=_REQUEST.SerializeToString, response_deserializer=response_from_wire
    )
