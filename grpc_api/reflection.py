"""gRPC server reflection, v1 and v1alpha, answered from the served descriptors (``grpc_api.descriptors``).

grpcio-reflection's servicer speaks v1alpha only, and looks symbols up with the protobuf pool's
``FindFileContainingSymbol``, which in the upb implementation finds neither a method
(``llmrec.v1.Recommender.Recommend``: grpcurl says "Symbol not found", ghz cannot load the method) nor a
nested type. This one serves both versions (the protocol is the same; only the package differs) and
resolves every symbol a client asks for: packages' top-level types, nested types, fields, enum values,
services and their methods.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor

from grpc_api.descriptors import (
    REFLECTION_V1_PACKAGE,
    REFLECTION_V1ALPHA_PACKAGE,
    SERVED,
    ServedDescriptors,
)

SERVICE_NAMES = tuple(
    f"{package}.ServerReflection" for package in (REFLECTION_V1_PACKAGE, REFLECTION_V1ALPHA_PACKAGE)
)
METHOD = "ServerReflectionInfo"


def file_containing_symbol(pool: descriptor_pool.DescriptorPool, symbol: str) -> FileDescriptor:
    """The file that defines ``symbol`` (a fully qualified name); ``KeyError`` if none does."""
    try:
        found: FileDescriptor = pool.FindFileContainingSymbol(symbol)
        return found
    except KeyError:
        pass
    for find in (pool.FindMessageTypeByName, pool.FindEnumTypeByName, pool.FindServiceByName):
        try:
            return find(symbol).file
        except KeyError:
            continue
    parent, _, member = symbol.rpartition(".")
    if parent:
        # A member of a type: a service's method, a message's field or an enum's value.
        lookups = (
            (pool.FindServiceByName, "methods_by_name"),
            (pool.FindMessageTypeByName, "fields_by_name"),
            (pool.FindEnumTypeByName, "values_by_name"),
        )
        for find, members in lookups:
            try:
                owner = find(parent)
            except KeyError:
                continue
            if member in getattr(owner, members):
                return owner.file
    raise KeyError(symbol)


class ReflectionServicer:
    """``ServerReflectionInfo`` of one protocol version: each request on the stream gets one answer."""

    def __init__(self, package: str, services: Iterable[str], served: ServedDescriptors = SERVED) -> None:
        self._served = served
        self._services = tuple(sorted(services))
        self.request_class = served.message_class(f"{package}.ServerReflectionRequest")
        self.response_class = served.message_class(f"{package}.ServerReflectionResponse")

    async def ServerReflectionInfo(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        async for request in requests:
            yield self.answer(request)

    def answer(self, request: Any) -> Any:
        response = self.response_class(valid_host=request.host, original_request=request)
        pool = self._served.pool
        kind = request.WhichOneof("message_request")
        try:
            if kind == "file_by_filename":
                self._files(response, pool.FindFileByName(request.file_by_filename))
            elif kind == "file_containing_symbol":
                self._files(response, file_containing_symbol(pool, request.file_containing_symbol))
            elif kind == "file_containing_extension":
                wanted = request.file_containing_extension
                message = pool.FindMessageTypeByName(wanted.containing_type)
                extension = pool.FindExtensionByNumber(message, wanted.extension_number)
                self._files(response, extension.file)
            elif kind == "all_extension_numbers_of_type":
                message = pool.FindMessageTypeByName(request.all_extension_numbers_of_type)
                numbers = response.all_extension_numbers_response
                numbers.base_type_name = message.full_name
                numbers.extension_number.extend(sorted(e.number for e in pool.FindAllExtensions(message)))
            elif kind == "list_services":
                for name in self._services:
                    response.list_services_response.service.add(name=name)
            else:
                self._error(response, grpc.StatusCode.INVALID_ARGUMENT, "no request in the message")
        except KeyError:
            wanted = getattr(request, kind)
            if not isinstance(wanted, str):  # an extension request
                wanted = f"extension {wanted.extension_number} of {wanted.containing_type}"
            self._error(response, grpc.StatusCode.NOT_FOUND, f"{kind}: {wanted} not found")
        return response

    def _files(self, response: Any, file: FileDescriptor) -> None:
        """The file first, then every file it imports, directly or not."""
        names: list[str] = []
        pending = [file]
        while pending:
            current = pending.pop()
            if current.name not in names:
                names.append(current.name)
                pending.extend(current.dependencies)
        response.file_descriptor_response.file_descriptor_proto.extend(
            self._served.serialized[name] for name in names
        )

    @staticmethod
    def _error(response: Any, code: grpc.StatusCode, message: str) -> None:
        response.error_response.error_code = code.value[0]
        response.error_response.error_message = message


def enable_reflection(services: Sequence[str], server: grpc.aio.Server) -> None:
    """Serve reflection v1 and v1alpha on ``server``, listing ``services`` and the reflection services."""
    listed = (*services, *SERVICE_NAMES)
    for name in SERVICE_NAMES:
        servicer = ReflectionServicer(name.rpartition(".")[0], listed)
        handler = grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=servicer.request_class.FromString,
            response_serializer=servicer.response_class.SerializeToString,
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, {METHOD: handler}),))
