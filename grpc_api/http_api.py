"""The HTTP/JSON API: the same ``RecommendationService`` as the gRPC servicer, on its own port, in the same
process and on the same event loop (uvicorn's ``Server`` runs as a task beside ``grpc.aio``).

Endpoints (the OpenAPI document, ``proto/openapi/llmrec.v1.json``, is generated from this module:
``make openapi``; ``make check`` fails when the committed file is stale):

- ``GET /v1/users/{user_id}/recommendations?k=&include_genres=&exclude_genres=&include_seen=``: Recommend;
- ``GET /v1/items/{item_id}/similar?k=``: SimilarItems (item ids such as ``mal:5114``; percent-encode them);
- ``GET /v1/users/{user_id}/profile``: GetUserProfile;
- ``POST /v1/events``: one interaction event or a JSON array of them, validated by
  ``llmrec.events.validation.parse_event`` and published with ``EventProducer``: 202 once Kafka acknowledged
  every event; 400 with a ``RejectReason`` per bad event (none is published then);
- ``POST /v1/items``: item events (``parse_item_event``, ``check_item_vector`` against the served index,
  ``EventProducer.publish_item``), likewise;
- ``GET /healthz``: 200 SERVING or 503 NOT_SERVING (the gRPC health of the whole server), open to all.

Answers carry the protobuf messages' field names (``user_id``, ``model_version``, ...), so an HTTP answer
parses into the gRPC response message with ``google.protobuf.json_format.ParseDict`` and compares equal.
Errors are ``{"code": "INVALID_ARGUMENT", "message": ...}`` with gRPC's code names, from the same table as
gRPC's statuses (``llmrec_client.status``): INVALID_ARGUMENT 400, UNAUTHENTICATED 401, NOT_FOUND 404,
RESOURCE_EXHAUSTED 429 (with Retry-After), INTERNAL 500, UNAVAILABLE 503, DEADLINE_EXCEEDED 504.

Access control is ``grpc_api.security``'s: the same TLS files (uvicorn's TLS; mTLS with a client CA), the
same tokens file (``Authorization: Bearer <token>``, ``TokenStore``), the same per-client token bucket
(``RateLimiter``, rate limit first, then authentication; its buckets are the HTTP server's own, so a client
gets the configured rate on each protocol). ``/healthz`` and ``/openapi.json`` are open, like gRPC health
and reflection. Metrics: ``llmrec_api_http_requests_total``, ``llmrec_api_http_request_duration_seconds`` and
``llmrec_api_http_requests_in_flight`` (``grpc_api.metrics``); Recommend answers also count in
``llmrec_api_recommendations_total``.

Every request to the endpoints above but ``/healthz`` has a deadline, ``api.http_request_timeout_s`` (a
POST: plus ``api.http_publish_timeout_s``, its wait for Kafka): past it the handler is cancelled and the
answer is 504 DEADLINE_EXCEEDED, as a gRPC call past its deadline (``DeadlineRoute``). The admin page's
routes (``grpc_api.admin``) bound their broker calls themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import grpc
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, TypeAdapter
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from grpc_api import metrics, security
from grpc_api.request_tracing import TraceHttp
from grpc_api.service import RecommendationService
from llmrec.events.producer import EventProducer, ProducerClient, PublishError, producer_config
from llmrec.events.schema import Event, ItemEvent
from llmrec.events.validation import (
    AnyEvent,
    InvalidEvent,
    RejectReason,
    check_item_vector,
    parse_event,
    parse_item_event,
)
from llmrec.logs import get_logger
from llmrec.settings import ApiSettings, KafkaSettings
from llmrec_client import models
from llmrec_client.errors import ServiceError, Unavailable
from llmrec_client.status import INTERNAL_MESSAGE, status_for

log = get_logger(__name__)

T = TypeVar("T")
API_VERSION = "v1"
OPENAPI_FILE = Path(__file__).resolve().parent.parent / "proto" / "openapi" / "llmrec.v1.json"

# gRPC's status codes as HTTP statuses (google.rpc's mapping); the code's name goes in the body.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# Refusals of the HTTP layer itself (no route, wrong method, ...) under the nearest gRPC code.
CODE_FOR_HTTP: dict[int, grpc.StatusCode] = {
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
STARTING_MESSAGE = "the server is starting; retry"  # as the gRPC servicer says it
QUIET_ROUTES = frozenset({"/healthz", "/openapi.json"})  # counted, not logged


# -- the JSON messages (field names as in proto/llmrec/v1/recommender.proto) ------------------------------


class ScoredItem(BaseModel):
    item_id: str = Field(description="The catalogue's item id, e.g. mal:5114.")
    title: str
    genres: list[str]
    score: float = Field(description="Higher is better; comparable within one response only.")
    reason: str = Field(description='A short explanation, e.g. "like Steins;Gate, which you rated 9".')


class RecommendResponse(BaseModel):
    user_id: str
    items: list[ScoredItem]
    strategy: Literal["personalized", "cold_start"] = Field(
        description='"personalized" when the user\'s preference vector was used, "cold_start" otherwise.'
    )
    model_version: str = Field(description="Version of the item index and ranker that produced the answer.")


class SimilarItemsResponse(BaseModel):
    item_id: str
    items: list[ScoredItem] = Field(description="Score is the cosine similarity of the two items.")
    model_version: str = Field(description="Version of the item index that produced the answer.")


class GenreWeight(BaseModel):
    genre: str
    weight: float


class UserProfile(BaseModel):
    user_id: str
    ratings: int
    reviews: int
    watch_events: int
    top_genres: list[GenreWeight] = Field(
        description="Genres of the user's items weighted by signal strength and time decay, heaviest "
        "first, normalised to sum to 1 over all positive genres."
    )
    last_event_time: datetime | None
    updated_at: datetime | None


class Error(BaseModel):
    code: str = Field(description="gRPC's name of the status code: INVALID_ARGUMENT, NOT_FOUND, ...")
    message: str


class RejectedEvent(BaseModel):
    index: int | None = Field(
        description="Position of the event in the request's array (0 for a single event); null when the "
        "body as a whole was refused (not JSON, too many events)."
    )
    reason: RejectReason = Field(description="The stable reason code, as on the dead-letter topic.")
    detail: str


class EventsRejected(Error):
    rejected: list[RejectedEvent] = Field(description="Every bad event; none of the request's was published.")


class Accepted(BaseModel):
    accepted: int = Field(description="Events published and acknowledged by Kafka.")
    event_ids: list[str]
    topics: list[str] = Field(description="The topics they went to, each once.")


class Health(BaseModel):
    status: Literal["SERVING", "NOT_SERVING"]


def _scored(items: Iterable[models.ScoredItem]) -> list[ScoredItem]:
    return [
        ScoredItem(item_id=i.item_id, title=i.title, genres=list(i.genres), score=i.score, reason=i.reason)
        for i in items
    ]


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def encode_recommendations(answer: models.Recommendations) -> RecommendResponse:
    return RecommendResponse(
        user_id=answer.user_id,
        items=_scored(answer.items),
        strategy=answer.strategy,
        model_version=answer.model_version,
    )


def encode_similar(answer: models.SimilarItems) -> SimilarItemsResponse:
    return SimilarItemsResponse(
        item_id=answer.item_id, items=_scored(answer.items), model_version=answer.model_version
    )


def encode_profile(answer: models.UserProfile) -> UserProfile:
    return UserProfile(
        user_id=answer.user_id,
        ratings=answer.ratings,
        reviews=answer.reviews,
        watch_events=answer.watch_events,
        top_genres=[GenreWeight(genre=g.genre, weight=g.weight) for g in answer.top_genres],
        last_event_time=_utc(answer.last_event_time),
        updated_at=_utc(answer.updated_at),
    )


# -- errors ----------------------------------------------------------------------------------------------


class HttpError(Exception):
    """An answer other than 2xx: the status, gRPC's code name and a message for the client."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        rejected: Sequence[RejectedEvent] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = HTTP_STATUS.get(code, 500)
        self.code = code
        self.message = message
        self.rejected = rejected
        self.headers = headers

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"code": self.code.name, "message": self.message}
        if self.rejected is not None:
            body["rejected"] = [r.model_dump(mode="json") for r in self.rejected]
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _error_response(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HttpError)
    return exc.response()


def _invalid_request(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's request validation (a query parameter of the wrong type): INVALID_ARGUMENT, as gRPC."""
    assert isinstance(exc, RequestValidationError)
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return HttpError(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(parts) or "invalid request").response()


def _http_exception(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = CODE_FOR_HTTP.get(exc.status_code, grpc.StatusCode.INVALID_ARGUMENT)
    error = HttpError(code, str(exc.detail), headers=dict(exc.headers or {}))
    error.status = exc.status_code
    return error.response()


@contextlib.asynccontextmanager
async def answering(operation: str) -> AsyncIterator[None]:
    """Domain errors as their status (the one table, ``llmrec_client.status``); anything else INTERNAL, the
    traceback only in the log."""
    try:
        yield
    except HttpError:
        raise
    except ServiceError as exc:
        raise HttpError(status_for(exc), str(exc)) from None
    except Exception:
        log.exception("request failed", protocol="http", operation=operation)
        raise HttpError(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE) from None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {
        "model": Error,
        "description": "INVALID_ARGUMENT: a malformed id, k out of range, an unknown genre",
    },
    401: {"model": Error, "description": "UNAUTHENTICATED: a missing or unknown bearer token"},
    429: {"model": Error, "description": "RESOURCE_EXHAUSTED: over the client's rate limit"},
    500: {"model": Error, "description": "INTERNAL: a bug; the details are in the server log"},
    503: {"model": Error, "description": "UNAVAILABLE: starting, stopping, or a dependency is down; retry"},
    504: {"model": Error, "description": "DEADLINE_EXCEEDED: not answered within the server's deadline"},
}
NOT_FOUND_RESPONSE: dict[int | str, dict[str, Any]] = {404: {"model": Error, "description": "NOT_FOUND"}}


# -- access control (grpc_api.security's tokens and rate limiter) -----------------------------------------


class AccessGuard:
    """Rate limit, then bearer token, as ``security.interceptors`` orders them for gRPC."""

    def __init__(self, tokens: security.TokenStore | None, limiter: security.RateLimiter | None) -> None:
        self.tokens = tokens
        self.limiter = limiter

    @classmethod
    def from_settings(cls, api: ApiSettings) -> AccessGuard:
        tokens = security.TokenStore.load(api.auth_tokens_file) if api.auth_tokens_file is not None else None
        limiter = (
            security.RateLimiter(api.rate_limit_per_s, api.rate_limit_burst)
            if api.rate_limit_per_s is not None
            else None
        )
        return cls(tokens, limiter)

    def check(self, headers: Iterable[tuple[str, str]], peer: str) -> None:
        """Raise ``HttpError`` (429 or 401) to refuse the request."""
        if self.tokens is None and self.limiter is None:
            return
        token = security.bearer_token(headers)
        client = self.tokens.client_for(token) if self.tokens is not None and token is not None else None
        if self.limiter is not None:
            who = f"token:{client}" if client is not None else f"peer:{peer}"
            allowed, wait_s = self.limiter.allow(who)
            if not allowed:
                log.info("request", protocol="http", status="RESOURCE_EXHAUSTED", client=who)
                raise HttpError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"rate limit of {self.limiter.rate_per_s:g} requests/s exceeded; "
                    f"retry in {max(wait_s, 0.001):.3f} s",
                    headers={"Retry-After": str(max(1, int(wait_s + 0.999)))},
                )
        if self.tokens is not None and client is None:
            log.info("request", protocol="http", status="UNAUTHENTICATED", token_present=token is not None)
            raise HttpError(
                grpc.StatusCode.UNAUTHENTICATED,
                security.UNAUTHENTICATED_MESSAGE.replace("metadata `authorization", "header `Authorization"),
                headers={"WWW-Authenticate": "Bearer"},
            )


# Documents the header in the OpenAPI document; the check itself is AccessGuard's.
_BEARER = HTTPBearer(
    auto_error=False,
    description="Needed when the server has a tokens file (api.auth_tokens_file); ignored otherwise.",
)


async def check_access(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
) -> None:
    state: HttpState = request.app.state.llmrec
    peer = request.client.host if request.client is not None else "unknown"
    state.guard.check(request.headers.items(), peer)


# -- publishing ------------------------------------------------------------------------------------------


class EventPublisher:
    """Publishes a request's events with ``EventProducer`` and waits for Kafka's acknowledgement.

    One librdkafka producer for the process, made at the first POST (an API that never receives one never
    connects to Kafka); each request counts its own deliveries through an ``EventProducer`` of its own
    around it. The blocking produce and flush run in a thread, off the event loop.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        timeout_s: float = 10.0,
        client_factory: Callable[[], ProducerClient] | None = None,
    ) -> None:
        self._kafka = kafka
        self._timeout_s = timeout_s
        self._factory = client_factory or self._real_client
        self._client: ProducerClient | None = None

    def _real_client(self) -> ProducerClient:
        from confluent_kafka import Producer

        config = producer_config(self._kafka, client_id="llmrec-api", delivery_timeout_s=self._timeout_s)
        client: ProducerClient = Producer(config)
        return client

    def _shared(self) -> ProducerClient:
        if self._client is None:
            self._client = self._factory()
        return self._client

    def _send(self, send: Callable[[EventProducer], str], count: int) -> list[str]:
        producer = EventProducer(self._kafka, client=self._shared())
        topics = [send(producer) for _ in range(count)]
        producer.flush(self._timeout_s)
        return topics

    async def publish(self, events: Sequence[AnyEvent]) -> list[str]:
        """Publish and wait; ``Unavailable`` when Kafka did not acknowledge every event in time."""
        it = iter(events)
        return await self._run(lambda p: p.publish(next(it)), len(events))

    async def publish_items(self, events: Sequence[Any]) -> list[str]:
        it = iter(events)
        return await self._run(lambda p: p.publish_item(next(it)), len(events))

    async def _run(self, send: Callable[[EventProducer], str], count: int) -> list[str]:
        try:
            return await asyncio.to_thread(self._send, send, count)
        except PublishError as exc:
            log.warning("publish failed", protocol="http", failed=exc.failed, pending=exc.pending)
            raise Unavailable(
                f"Kafka acknowledged {exc.delivered} of {count} events; retry (event ids make a retry safe)"
            ) from None

    async def close(self, timeout_s: float = 5.0) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await asyncio.to_thread(client.flush, timeout_s)


Parser = Callable[[bytes], T]


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    too_large = HttpError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"the body exceeds {limit} bytes",
        rejected=[RejectedEvent(index=None, reason=RejectReason.TOO_LARGE, detail=f"over {limit} bytes")],
    )
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _refuse(rejected: list[RejectedEvent], total: int) -> HttpError:
    first = rejected[0]
    return HttpError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{len(rejected)} of {total} events rejected, none published; first: {first.reason.value}: "
        f"{first.detail}",
        rejected=rejected,
    )


def parse_batch(body: bytes, parse: Parser[T], max_events: int) -> list[T]:
    """One event (a JSON object) or a JSON array of 1 to ``max_events``, each validated by ``parse`` on its
    own JSON (so the framing checks and reason codes are the topics'). Raises ``HttpError`` (400) naming
    every bad event."""
    elements: list[bytes]
    if body.lstrip()[:1] == b"[":
        try:
            array = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise _refuse(
                [RejectedEvent(index=None, reason=RejectReason.INVALID_UTF8, detail=str(exc))], 0
            ) from None
        except (ValueError, RecursionError) as exc:
            detail = str(exc)[:200]
            raise _refuse(
                [RejectedEvent(index=None, reason=RejectReason.INVALID_JSON, detail=detail)], 0
            ) from None
        if not array:
            detail = "an empty array: send 1 or more events"
            raise _refuse([RejectedEvent(index=None, reason=RejectReason.EMPTY, detail=detail)], 0)
        if len(array) > max_events:
            detail = f"{len(array)} events; at most {max_events} per request"
            raise _refuse(
                [RejectedEvent(index=None, reason=RejectReason.TOO_LARGE, detail=detail)], len(array)
            )
        elements = [json.dumps(e, ensure_ascii=False).encode("utf-8") for e in array]
    else:
        elements = [body]
    parsed: list[T] = []
    rejected: list[RejectedEvent] = []
    for index, raw in enumerate(elements):
        try:
            parsed.append(parse(raw))
        except InvalidEvent as exc:
            rejected.append(RejectedEvent(index=index, reason=exc.reason, detail=exc.detail))
    if rejected:
        raise _refuse(rejected, len(elements))
    return parsed


# -- the application -------------------------------------------------------------------------------------


class HttpState:
    """What the routes need, on ``app.state.llmrec``."""

    def __init__(
        self,
        api: ApiSettings,
        service: Callable[[], RecommendationService | None],
        serving: Callable[[], bool],
        publisher: EventPublisher | None,
    ) -> None:
        self.api = api
        self._service = service
        self.serving = serving
        self.publisher = publisher
        self.guard = AccessGuard.from_settings(api)

    def current(self) -> RecommendationService | None:
        """The served service, None while warming up."""
        return self._service()

    def service(self) -> RecommendationService:
        service = self._service()
        if service is None:
            raise Unavailable(STARTING_MESSAGE)
        return service

    def need_publisher(self) -> EventPublisher:
        if self.publisher is None:
            raise HttpError(grpc.StatusCode.UNIMPLEMENTED, "this server does not publish events")
        return self.publisher


def _state(request: Request) -> HttpState:
    state: HttpState = request.app.state.llmrec
    return state


class _Observe:
    """Counts and logs every HTTP request (``grpc_api.metrics.observe_http``), by route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        metrics.HTTP_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, sending)
        finally:
            metrics.HTTP_IN_FLIGHT.dec()
            matched = scope.get("route")
            route = matched.path_format if isinstance(matched, Route) else None
            if route is None:
                # Starlette's own routes (/openapi.json) by path; anything refused unrouted as one label.
                route = str(scope.get("path", "")) if status < 400 else "unmatched"
            method = str(scope.get("method", ""))
            metrics.observe_http(method, route, status, started)
            if route not in QUIET_ROUTES:  # probes every few seconds; gRPC's health is not logged either
                log.info(
                    "request",
                    protocol="http",
                    method=method,
                    route=route,
                    status=status,
                    latency_ms=round((time.perf_counter() - started) * 1000.0, 2),
                )


class _AnyText(Convertor[str]):
    """A path parameter of any characters ('/' and line breaks too, percent-encoded by the client), so a
    malformed id reaches the service's validation (400) instead of missing the route (404)."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("llmrec_id", _AnyText())


class DeadlineRoute(APIRoute):
    """A route answered within ``api.http_request_timeout_s`` (a POST: plus ``api.http_publish_timeout_s``)
    or refused with 504 DEADLINE_EXCEEDED: the deadline covers reading the body, the access check and the
    handler. The handler is cancelled; work it started in a thread runs to its end, its result dropped."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        publishes = "POST" in (self.methods or ())

        async def within_deadline(request: Request) -> Response:
            api = _state(request).api
            timeout_s = api.http_request_timeout_s + (api.http_publish_timeout_s if publishes else 0.0)
            deadline = asyncio.timeout(timeout_s)
            try:
                async with deadline:
                    return await handler(request)
            except TimeoutError:
                if not deadline.expired():
                    raise  # not ours
                log.warning("request deadline exceeded", protocol="http", path=self.path, timeout_s=timeout_s)
                raise HttpError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"not answered within the server's deadline of {timeout_s:g} s; retry",
                ) from None

        return within_deadline


Genres = Annotated[
    list[str] | None,
    Query(description="Genre names, matched case-insensitively; repeat the parameter for several."),
]
K = Annotated[
    int,
    Query(description="How many items: 1 to the server's max_k (100 by default); 0 means the default, 10."),
]
router = APIRouter(prefix="/v1", dependencies=[Depends(check_access)], route_class=DeadlineRoute)


@router.get(
    "/users/{user_id:llmrec_id}/recommendations",
    response_model=RecommendResponse,
    responses=ERROR_RESPONSES,
    operation_id="recommend",
    tags=["recommendations"],
    summary="Ranked items for a user",
    description="Items the user has interacted with are left out unless include_seen is set. An unknown "
    "user gets a cold-start answer (popular items), never NOT_FOUND.",
)
async def recommend(
    request: Request,
    user_id: str,
    k: K = 0,
    include_genres: Genres = None,
    exclude_genres: Genres = None,
    include_seen: bool = False,
) -> RecommendResponse:
    state = _state(request)
    async with answering("recommend"):
        answer = await state.service().recommend(
            user_id,
            k,
            include_genres=include_genres or (),
            exclude_genres=exclude_genres or (),
            include_seen=include_seen,
        )
    metrics.recommendation_served(answer.strategy, answer.ranker or "unknown")
    return encode_recommendations(answer)


@router.get(
    "/items/{item_id:llmrec_id}/similar",
    response_model=SimilarItemsResponse,
    responses={**ERROR_RESPONSES, **NOT_FOUND_RESPONSE},
    operation_id="similarItems",
    tags=["recommendations"],
    summary="Items nearest to one item",
    description="The item itself is never in the answer. NOT_FOUND for an item outside the catalogue. "
    "Item ids hold ':' and may hold other reserved characters: percent-encode them.",
)
async def similar_items(request: Request, item_id: str, k: K = 0) -> SimilarItemsResponse:
    state = _state(request)
    async with answering("similar_items"):
        answer = await state.service().similar_items(item_id, k)
    return encode_similar(answer)


@router.get(
    "/users/{user_id:llmrec_id}/profile",
    response_model=UserProfile,
    responses={**ERROR_RESPONSES, **NOT_FOUND_RESPONSE},
    operation_id="getUserProfile",
    tags=["users"],
    summary="What the system knows about a user",
    description="NOT_FOUND for a user with no applied events.",
)
async def user_profile(request: Request, user_id: str) -> UserProfile:
    state = _state(request)
    async with answering("user_profile"):
        answer = await state.service().user_profile(user_id)
    return encode_profile(answer)


REJECTED_RESPONSE: dict[int | str, dict[str, Any]] = {
    400: {"model": EventsRejected, "description": "INVALID_ARGUMENT: the reason code of every bad event"}
}


def _body_schema(what: str) -> dict[str, Any]:
    """``requestBody`` of a POST: one event or an array of them (the schema is the topics' own)."""
    one = {"$ref": f"#/components/schemas/{what}"}
    schema = {"oneOf": [one, {"type": "array", "items": one, "minItems": 1}]}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)
ITEM_ADAPTER: TypeAdapter[Any] = TypeAdapter(ItemEvent)


@router.post(
    "/events",
    status_code=202,
    response_model=Accepted,
    responses={**ERROR_RESPONSES, **REJECTED_RESPONSE},
    operation_id="publishEvents",
    tags=["events"],
    summary="Publish interaction events (ratings, reviews, watch progress) to Kafka",
    description="One event or a JSON array of them (at most api.http_max_events, 500 by default), each "
    "validated as the worker validates the topics' messages. 202 once Kafka acknowledged every event; 400 "
    "when any is invalid (none is published); 503 when Kafka did not acknowledge in time (retrying is "
    "safe: the worker applies an event_id once).",
    openapi_extra={"requestBody": _body_schema("InteractionEvent")},
)
async def publish_events(request: Request) -> Accepted:
    state = _state(request)
    publisher = state.need_publisher()
    body = await _read_body(request, state.api.max_message_bytes)
    events = parse_batch(body, parse_event, state.api.http_max_events)
    async with answering("publish_events"):
        topics = await publisher.publish(events)
    return Accepted(accepted=len(events), event_ids=[e.event_id for e in events], topics=sorted(set(topics)))


@router.post(
    "/items",
    status_code=202,
    response_model=Accepted,
    responses={**ERROR_RESPONSES, **REJECTED_RESPONSE},
    operation_id="publishItems",
    tags=["events"],
    summary="Publish item (catalogue) events to Kafka",
    description="upsert, hide, unhide or delete; one event or a JSON array of them, as POST /v1/events. An "
    "upsert's vector must have the served index's dimension.",
    openapi_extra={"requestBody": _body_schema("ItemEvent")},
)
async def publish_items(request: Request) -> Accepted:
    state = _state(request)
    publisher = state.need_publisher()
    body = await _read_body(request, state.api.max_message_bytes)
    served = state.current()
    dim = served.snapshot.index.dim if served is not None else None

    def parse(raw: bytes) -> Any:
        event = parse_item_event(raw)
        problem = check_item_vector(event, dim) if dim is not None else None
        if problem is not None:
            raise problem
        return event

    events = parse_batch(body, parse, state.api.http_max_events)
    async with answering("publish_items"):
        topics = await publisher.publish_items(events)
    return Accepted(accepted=len(events), event_ids=[e.event_id for e in events], topics=sorted(set(topics)))


health_router = APIRouter()


@health_router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "Not serving (warming up or shutting down)"}},
    operation_id="health",
    tags=["health"],
    summary="Whether the server is serving (gRPC health of the whole server); no token needed",
)
async def health(request: Request) -> Any:
    if _state(request).serving():
        return Health(status="SERVING")
    return JSONResponse({"status": "NOT_SERVING"}, status_code=503)


def create_app(
    api: ApiSettings,
    *,
    service: Callable[[], RecommendationService | None],
    serving: Callable[[], bool] | None = None,
    publisher: EventPublisher | None = None,
) -> FastAPI:
    """The ASGI application. ``service`` returns the served ``RecommendationService`` (None while warming
    up: 503); ``serving`` says whether ``/healthz`` reports SERVING (default: a service is attached)."""
    app = FastAPI(
        title="llmrec",
        version=API_VERSION,
        description="The recommendation API over HTTP/JSON: the same answers, errors and access control "
        "as the gRPC service llmrec.v1.Recommender (proto/llmrec/v1/recommender.proto), plus publishing "
        "interaction and item events to Kafka.",
        docs_url=None,  # Swagger UI loads its assets from a CDN; the document is at /openapi.json
        redoc_url=None,
    )
    app.state.llmrec = HttpState(
        api, service, serving if serving is not None else (lambda: service() is not None), publisher
    )
    app.include_router(router)
    app.include_router(health_router)
    app.add_exception_handler(HttpError, _error_response)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_middleware(_Observe)
    app.add_middleware(TraceHttp)  # outermost: its span covers the whole request (no-op unless configured)
    document = openapi_document(app)
    app.openapi = lambda: document  # type: ignore[method-assign]
    return app


def _event_schemas() -> dict[str, Any]:
    """The events' JSON Schemas as OpenAPI components, ``event_type`` / ``op`` required (on the wire they
    are: the worker routes on them), as ``llmrec.events.schema.json_schemas`` publishes them."""
    components: dict[str, Any] = {}
    for name, adapter, key in (
        ("InteractionEvent", EVENT_ADAPTER, "event_type"),
        ("ItemEvent", ITEM_ADAPTER, "op"),
    ):
        schema = adapter.json_schema(ref_template="#/components/schemas/{model}")
        for title, definition in schema.pop("$defs", {}).items():
            if key in definition.get("properties", {}):
                definition["required"] = sorted({*definition.get("required", []), key})
            components[title] = definition
        components[name] = schema
    return components


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI 3 document of ``app``: FastAPI's, with the events' schemas added and its 422 answers
    (request validation errors are 400 INVALID_ARGUMENT here) taken out."""
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    doc = copy.deepcopy(doc)
    for path in doc.get("paths", {}).values():
        for operation in path.values():
            operation.get("responses", {}).pop("422", None)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas.update(_event_schemas())
    doc["components"]["schemas"] = dict(sorted(schemas.items()))
    return doc


def document_text() -> str:
    """The committed form of the document (``make openapi``): the app on default settings."""
    app = create_app(ApiSettings(), service=lambda: None)
    return json.dumps(openapi_document(app), indent=2, ensure_ascii=False) + "\n"


# -- the server ------------------------------------------------------------------------------------------


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the API process (``grpc_api.server``) owns SIGTERM / SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A listening socket; ``reuse_port`` shares the port with sibling API processes (SO_REUSEPORT)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(2048)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class HttpServer:
    """The HTTP/JSON API on ``api.http_port`` (or ``port``), as a task of the running event loop."""

    def __init__(self, app: FastAPI, api: ApiSettings, *, port: int | None = None, reuse_port: bool = False):
        self._app = app
        self._api = api
        self._port = api.http_port if port is None else port
        self._reuse_port = reuse_port
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    def _config(self) -> uvicorn.Config:
        api = self._api
        tls: dict[str, Any] = {}
        if api.tls_cert_file is not None and api.tls_key_file is not None:
            tls = {"ssl_certfile": str(api.tls_cert_file), "ssl_keyfile": str(api.tls_key_file)}
            if api.tls_client_ca_file is not None:
                tls |= {"ssl_ca_certs": str(api.tls_client_ca_file), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        return uvicorn.Config(
            self._app,
            lifespan="off",
            log_config=None,
            access_log=False,  # _Observe logs each request once, as the gRPC servicer does
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=int(max(1.0, api.grace_period_s)),
            **tls,
        )

    async def start(self) -> int:
        """Bind and serve; returns the bound port."""
        sock = bind(self._api.host, self._port, reuse_port=self._reuse_port)
        self.port = int(sock.getsockname()[1])
        self._server = _EmbeddedServer(self._config())
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="llmrec-api-http")
        while not self._server.started:
            if self._task.done():
                sock.close()
                self._task.result()
                raise RuntimeError("the HTTP server stopped while starting")
            await asyncio.sleep(0.01)
        scheme = "https" if self._api.tls_cert_file is not None else "http"
        log.info("http server listening", address=f"{scheme}://{self._api.host}:{self.port}")
        return self.port

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, let requests in flight finish for ``grace_s``, then close the rest."""
        if self._server is None or self._task is None:
            return
        self._server.config.timeout_graceful_shutdown = int(max(1.0, grace_s))
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace_s + 2.0)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        log.info("http server stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m grpc_api.http_api --write-openapi PATH`` writes the document; ``--check PATH`` fails
    (exit 1) when the file differs from what the code generates."""
    parser = argparse.ArgumentParser(prog="python -m grpc_api.http_api", description=main.__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write-openapi", type=Path, metavar="PATH")
    group.add_argument("--check", type=Path, metavar="PATH")
    args = parser.parse_args(argv)
    text = document_text()
    if args.write_openapi is not None:
        args.write_openapi.parent.mkdir(parents=True, exist_ok=True)
        args.write_openapi.write_text(text, encoding="utf-8")
        print(f"wrote {args.write_openapi}")
        return 0
    path: Path = args.check
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        print(f"{path} is stale: run `make openapi` and commit it", file=sys.stderr)
        return 1
    print(f"{path} is up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
