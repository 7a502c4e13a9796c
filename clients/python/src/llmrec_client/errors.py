"""Domain errors of the recommendation API. Their messages are shown to clients, so they never carry
internals (no DSN, no SQL, no traceback). ``llmrec_client.status`` maps them to gRPC status codes."""

from __future__ import annotations


class ServiceError(Exception):
    """Base of the errors a caller can act on."""


class InvalidRequest(ServiceError):
    """The request itself is wrong (k out of range, malformed user id, unknown genre): do not retry."""


class NotFound(ServiceError):
    """The item or user the request names does not exist."""


class Unavailable(ServiceError):
    """Transient: the server is warming up or shutting down, or its database is unreachable. Retry."""


class DeadlineExceeded(ServiceError, TimeoutError):
    """The caller's deadline passed before the answer was ready."""


class RemoteError(ServiceError):
    """Any other failure reported by the server (the client raises it with the status code's name)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
