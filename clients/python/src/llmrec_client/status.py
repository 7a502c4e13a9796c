"""The one table between domain errors and gRPC status codes, used both ways: the server turns an
exception into a status, the client turns a status back into the same exception class."""

from __future__ import annotations

import grpc

from llmrec_client.errors import (
    DeadlineExceeded,
    InvalidRequest,
    NotFound,
    RemoteError,
    ServiceError,
    Unavailable,
)

STATUS_BY_ERROR: dict[type[ServiceError], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}
ERROR_BY_STATUS: dict[grpc.StatusCode, type[ServiceError]] = {
    code: err for err, code in STATUS_BY_ERROR.items()
}

# Everything not in the table (a bug) reaches the client as this, with no detail; the log has the rest.
INTERNAL_MESSAGE = "internal error; see the server log"


def status_for(exc: ServiceError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return grpc.StatusCode.INTERNAL


def error_for(code: grpc.StatusCode, details: str) -> ServiceError:
    cls = ERROR_BY_STATUS.get(code)
    if cls is None:
        return RemoteError(code.name, details)
    return cls(details)
