"""Access control for the gRPC API: TLS / mTLS credentials, bearer tokens and a per-client rate limit.

Everything is off unless configured in ``ApiSettings`` (``tls_cert_file`` + ``tls_key_file``,
``tls_client_ca_file``, ``auth_tokens_file``, ``rate_limit_per_s``); with nothing set the server is
exactly the insecure, open server it was before.

- ``server_credentials``: ``grpc.ssl_server_credentials`` from the PEM files; with a client CA, client
  certificates are required and verified (mTLS), so a client without one fails the handshake.
- ``AuthInterceptor``: ``authorization: Bearer <token>`` metadata checked against the tokens file, in
  constant time (SHA-256 digests compared with ``hmac.compare_digest``, every token compared). Missing or
  wrong: UNAUTHENTICATED.
- ``RateLimitInterceptor``: a token bucket per client, keyed by the client id of a valid token, else the
  peer certificate's common name, else the peer's host (without its port). Over the rate:
  RESOURCE_EXHAUSTED.

Health checks and reflection (``OPEN_SERVICES``) are neither authenticated nor rate limited, so load
balancers and orchestrators can probe the server without a token. TLS, when configured, still applies to
them. Tokens are never logged nor echoed in a status message; a client is named by its client id
(``client_id:token`` lines) or ``token#<line>`` for a bare token.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import grpc

from grpc_api import metrics
from grpc_api.descriptors import HEALTH_SERVICE
from grpc_api.reflection import SERVICE_NAMES as REFLECTION_SERVICES
from llmrec.logs import get_logger
from llmrec.settings import ApiSettings

log = get_logger(__name__)

OPEN_SERVICES: frozenset[str] = frozenset({HEALTH_SERVICE, *REFLECTION_SERVICES})
UNAUTHENTICATED_MESSAGE = "missing or invalid bearer token (metadata `authorization: Bearer <token>`)"
MAX_RATE_LIMITED_CLIENTS = 10_000

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Check = Callable[[Context], Awaitable[None]]


def is_open(method: str) -> bool:
    """Whether ``method`` ("/package.Service/Method") belongs to a service that needs no access check."""
    parts = method.split("/")
    return len(parts) == 3 and parts[1] in OPEN_SERVICES


# -- TLS ------------------------------------------------------------------------------------------------


def server_credentials(api: ApiSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings' PEM files, or None when TLS is not configured (insecure port)."""
    if api.tls_cert_file is None or api.tls_key_file is None:
        return None
    chain = api.tls_cert_file.read_bytes()
    key = api.tls_key_file.read_bytes()
    client_ca = api.tls_client_ca_file.read_bytes() if api.tls_client_ca_file is not None else None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


# -- tokens ---------------------------------------------------------------------------------------------


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class TokenStore:
    """Known tokens as (client id, SHA-256 digest); the tokens themselves are not kept."""

    entries: tuple[tuple[str, bytes], ...]

    @classmethod
    def parse(cls, text: str) -> TokenStore:
        entries: list[tuple[str, bytes]] = []
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            client, sep, token = line.partition(":")
            if not sep:
                client, token = f"token#{number}", line
            client, token = client.strip(), token.strip()
            if not client or not token:
                # Say where, never what: the line holds a secret.
                raise ValueError(f"line {number} of the tokens file is not `token` or `client_id:token`")
            entries.append((client, _digest(token)))
        if not entries:
            raise ValueError("the tokens file holds no token")
        return cls(tuple(entries))

    @classmethod
    def load(cls, path: Path) -> TokenStore:
        return cls.parse(path.read_text(encoding="utf-8"))

    def client_for(self, token: str) -> str | None:
        """The client id of ``token``, or None. Compares against every entry, in constant time each."""
        digest = _digest(token)
        found: str | None = None
        for client, known in self.entries:
            if hmac.compare_digest(digest, known) and found is None:
                found = client
        return found


def bearer_token(metadata: Any) -> str | None:
    """The token of an ``authorization: Bearer <token>`` metadata entry, if any."""
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


# -- rate limit -----------------------------------------------------------------------------------------


class TokenBucket:
    """``capacity`` requests at once, refilled at ``rate_per_s``. Times are the caller's clock (seconds)."""

    def __init__(self, rate_per_s: float, capacity: float, now: float) -> None:
        if rate_per_s <= 0 or capacity < 1:
            raise ValueError("a token bucket needs rate_per_s > 0 and capacity >= 1")
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self._tokens = capacity
        self._updated = now

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate_per_s)
            self._updated = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def retry_after_s(self, now: float) -> float:
        """Seconds until one token is available (0 when one is)."""
        self._refill(now)
        return max(0.0, (1.0 - self._tokens) / self.rate_per_s)


class RateLimiter:
    """One bucket per client id; the least recently seen clients are forgotten beyond ``max_clients``."""

    def __init__(
        self,
        rate_per_s: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_RATE_LIMITED_CLIENTS,
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = max(1.0, rate_per_s) if burst is None else burst
        self._clock = clock
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, client: str) -> tuple[bool, float]:
        """(allowed, seconds to wait before the next request would be)."""
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = TokenBucket(self.rate_per_s, self.burst, now)
            while len(self._buckets) > self._max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
        if bucket.take(now):
            return True, 0.0
        return False, bucket.retry_after_s(now)


def _peer_host(peer: str) -> str:
    """ "ipv4:10.0.0.1:5555" -> "ipv4:10.0.0.1"; "ipv6:[::1]:5555" -> "ipv6:[::1]"; others unchanged."""
    if peer.startswith(("ipv4:", "ipv6:")):
        host, sep, port = peer.rpartition(":")
        if sep and port.isdigit() and host not in ("ipv4", "ipv6"):
            return host
    return peer


def client_id(context: Context, tokens: TokenStore | None) -> str:
    """Who is calling: the client id of a valid token, else the certificate CN, else the peer host."""
    if tokens is not None:
        token = bearer_token(context.invocation_metadata())
        if token is not None:
            client = tokens.client_for(token)
            if client is not None:
                return f"token:{client}"
    names = (context.auth_context() or {}).get("x509_common_name") or []
    if names:
        name = names[0]
        return "cn:" + (name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name))
    return "peer:" + _peer_host(context.peer() or "unknown")


# -- interceptors ---------------------------------------------------------------------------------------


def _guarded(handler: grpc.RpcMethodHandler, check: Check) -> grpc.RpcMethodHandler:
    """``handler`` with ``check(context)`` (which aborts to refuse) run before its behaviour."""
    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        unary_unary = handler.unary_unary

        async def uu(request: Any, context: Context) -> Any:
            await check(context)
            return await unary_unary(request, context)

        return grpc.unary_unary_rpc_method_handler(uu, **codec)
    if handler.stream_unary is not None:
        stream_unary = handler.stream_unary

        async def su(requests: Any, context: Context) -> Any:
            await check(context)
            return await stream_unary(requests, context)

        return grpc.stream_unary_rpc_method_handler(su, **codec)

    behaviour = handler.unary_stream or handler.stream_stream

    async def streaming(request: Any, context: Context) -> AsyncIterator[Any]:
        await check(context)
        result = behaviour(request, context)
        if inspect.isasyncgen(result):
            async for response in result:
                yield response
        else:  # a coroutine that writes through context.write
            await result

    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(streaming, **codec)
    return grpc.stream_stream_rpc_method_handler(streaming, **codec)


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc.aio is untyped
    """UNAUTHENTICATED unless the call carries a known bearer token; ``OPEN_SERVICES`` pass freely."""

    def __init__(self, tokens: TokenStore) -> None:
        self._tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or is_open(method):
            return handler
        token = bearer_token(handler_call_details.invocation_metadata)
        if token is not None and self._tokens.client_for(token) is not None:
            return handler

        async def refuse(context: Context) -> None:
            log.info("request", method=method, status="UNAUTHENTICATED", token_present=token is not None)
            metrics.observe_refusal(method, grpc.StatusCode.UNAUTHENTICATED, time.perf_counter())
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)

        return _guarded(handler, refuse)


class RateLimitInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc.aio is untyped
    """RESOURCE_EXHAUSTED when a client exceeds its rate (see ``client_id``); ``OPEN_SERVICES`` exempt."""

    def __init__(self, limiter: RateLimiter, tokens: TokenStore | None = None) -> None:
        self._limiter = limiter
        self._tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or is_open(method):
            return handler

        async def limit(context: Context) -> None:
            started = time.perf_counter()
            client = client_id(context, self._tokens)
            allowed, wait_s = self._limiter.allow(client)
            if not allowed:
                log.info("request", method=method, status="RESOURCE_EXHAUSTED", client=client)
                metrics.observe_refusal(method, grpc.StatusCode.RESOURCE_EXHAUSTED, started)
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"rate limit of {self._limiter.rate_per_s:g} requests/s exceeded; "
                    f"retry in {max(wait_s, 0.001):.3f} s",
                )

        return _guarded(handler, limit)


def interceptors(api: ApiSettings) -> list[grpc.aio.ServerInterceptor]:
    """The access interceptors the settings ask for, outermost first: the rate limit (so that guessing
    tokens is limited too), then authentication. Empty when neither is configured."""
    tokens = TokenStore.load(api.auth_tokens_file) if api.auth_tokens_file is not None else None
    chain: list[grpc.aio.ServerInterceptor] = []
    if api.rate_limit_per_s is not None:
        chain.append(RateLimitInterceptor(RateLimiter(api.rate_limit_per_s, api.rate_limit_burst), tokens))
    if tokens is not None:
        chain.append(AuthInterceptor(tokens))
        log.info("token authentication on", clients=len(tokens.entries))
    return chain
