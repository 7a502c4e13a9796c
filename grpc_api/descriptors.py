"""The protobuf descriptors of every service the API serves, in a pool of their own that reflection
answers from (``grpc_api.reflection``):

- ``llmrec/v1/recommender.proto`` and what it imports;
- the health protocol with its ``List`` method (grpcio-health-checking 1.81 ships ``health.proto`` without
  it; ``grpc_api.health`` serves it), so reflection describes the service as it is served;
- server reflection ``v1alpha`` (grpcio-reflection's) and ``v1`` (the same messages under the package
  ``grpc.reflection.v1``; grpcio-reflection 1.81 has no v1 module, and current grpcurl, ghz and Postman
  ask v1 first).

A pool of its own rather than protobuf's default one: the changed health file and the v1 reflection
file must not collide with the files the installed packages register there under the same names.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2 as reflection_v1alpha_pb2

from llmrec_client.v1 import recommender_pb2

HEALTH_PACKAGE = "grpc.health.v1"
HEALTH_SERVICE = f"{HEALTH_PACKAGE}.Health"
REFLECTION_V1ALPHA_PACKAGE = "grpc.reflection.v1alpha"
REFLECTION_V1_PACKAGE = "grpc.reflection.v1"
REFLECTION_V1_FILE = "grpc/reflection/v1/reflection.proto"

FieldProto = descriptor_pb2.FieldDescriptorProto


def file_proto(file: FileDescriptor) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    return proto


def health_with_list() -> descriptor_pb2.FileDescriptorProto:
    """The installed ``health.proto`` with ``rpc List(HealthListRequest) returns (HealthListResponse)``
    as the gRPC repository defines it (``map<string, HealthCheckResponse> statuses = 1``)."""
    proto = file_proto(health_pb2.DESCRIPTOR)
    if "HealthListResponse" in health_pb2.DESCRIPTOR.message_types_by_name:
        return proto  # a grpcio-health-checking that has List already
    proto.message_type.add(name="HealthListRequest")
    response = proto.message_type.add(name="HealthListResponse")
    entry = response.nested_type.add(name="StatusesEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, label=FieldProto.LABEL_OPTIONAL, type=FieldProto.TYPE_STRING)
    entry.field.add(
        name="value",
        number=2,
        label=FieldProto.LABEL_OPTIONAL,
        type=FieldProto.TYPE_MESSAGE,
        type_name=f".{HEALTH_PACKAGE}.HealthCheckResponse",
    )
    response.field.add(
        name="statuses",
        number=1,
        label=FieldProto.LABEL_REPEATED,
        type=FieldProto.TYPE_MESSAGE,
        type_name=f".{HEALTH_PACKAGE}.HealthListResponse.StatusesEntry",
    )
    (service,) = proto.service
    methods = list(service.method)
    service.ClearField("method")
    for method in methods:
        service.method.add().CopyFrom(method)
        if method.name == "Check":  # the upstream order: Check, List, Watch
            service.method.add(
                name="List",
                input_type=f".{HEALTH_PACKAGE}.HealthListRequest",
                output_type=f".{HEALTH_PACKAGE}.HealthListResponse",
            )
    return proto


def reflection_v1() -> descriptor_pb2.FileDescriptorProto:
    """``grpc/reflection/v1/reflection.proto``: v1alpha's file under v1's package. The two protocols have
    the same messages, fields and numbers; v1 is v1alpha made stable."""
    proto = file_proto(reflection_v1alpha_pb2.DESCRIPTOR)
    old, new = f".{REFLECTION_V1ALPHA_PACKAGE}.", f".{REFLECTION_V1_PACKAGE}."
    proto.name = REFLECTION_V1_FILE
    proto.package = REFLECTION_V1_PACKAGE
    proto.ClearField("options")  # v1alpha's language options (java_package, ...) and its deprecation
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(old, new, 1)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new, 1)
            method.output_type = method.output_type.replace(old, new, 1)
    return proto


class ServedDescriptors:
    """The pool of the served files, and each file as the bytes reflection sends."""

    def __init__(self) -> None:
        self.pool = descriptor_pool.DescriptorPool()
        self.serialized: dict[str, bytes] = {}
        self._add_with_imports(recommender_pb2.DESCRIPTOR)
        self._add(health_with_list())
        self._add(file_proto(reflection_v1alpha_pb2.DESCRIPTOR))
        self._add(reflection_v1())

    def _add(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        if proto.name in self.serialized:
            return
        data = proto.SerializeToString()
        self.pool.AddSerializedFile(data)
        self.serialized[proto.name] = data

    def _add_with_imports(self, file: FileDescriptor) -> None:
        for dependency in file.dependencies:
            self._add_with_imports(dependency)
        self._add(file_proto(file))

    def message_class(self, full_name: str) -> Any:
        """The message class of ``full_name`` in this pool (typed ``Any``: its fields are dynamic)."""
        return message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full_name))


SERVED = ServedDescriptors()
