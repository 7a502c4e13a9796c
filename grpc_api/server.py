"""The gRPC server: a thin grpc.aio servicer over ``RecommendationService``, health, reflection, lifecycle.

Lifecycle (``ApiServer``):
1. bind and start at once with health NOT_SERVING, so orchestrators see the process while it warms up;
2. load the index + catalogue (in a thread) and open the store, retrying the store with backoff while
   the database is not up yet; then health SERVING;
3. on SIGTERM / SIGINT: health NOT_SERVING first (load balancers stop sending), then ``server.stop(grace)``
   lets requests in flight finish, then the store's pool closes. SIGHUP reloads the index from disk and
   swaps it in atomically.

Every RPC is decode -> one service call within the client's deadline -> encode, and writes one log line
(method, user or item, k, status, latency). Domain errors become status codes through
``grpc_api.status``; anything else is INTERNAL with a generic message, the traceback only in the log.

Access control (TLS / mTLS, bearer tokens, a per-client rate limit) is off unless ``ApiSettings`` asks
for it; see ``grpc_api.security``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from grpc_api import metrics, models, security
from grpc_api.errors import DeadlineExceeded, ServiceError, Unavailable
from grpc_api.service import RecommendationService, ServiceConfig, Snapshot
from grpc_api.status import INTERNAL_MESSAGE, status_for
from llmrec.logs import get_logger
from llmrec.settings import Settings
from llmrec.store.interface import ProfileReader, StoreUnavailable
from llmrec.v1 import recommender_pb2, recommender_pb2_grpc

if TYPE_CHECKING:
    from ranker.model.serving import LearnedRanker

log = get_logger(__name__)

SERVICE_NAME: str = recommender_pb2.DESCRIPTOR.services_by_name["Recommender"].full_name
T = TypeVar("T")
StoreFactory = Callable[[Settings], Awaitable["ClosableStore"]]
SnapshotLoader = Callable[[Settings], Snapshot]

# Waiting for the database at start-up: from 0.5 s doubling to 10 s between attempts.
STORE_RETRY_INITIAL_S = 0.5
STORE_RETRY_MAX_S = 10.0


class ClosableStore(ProfileReader, Protocol):
    async def close(self) -> None: ...


# -- encoding -------------------------------------------------------------------------------------------


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def _scored(item: models.ScoredItem) -> recommender_pb2.ScoredItem:
    return recommender_pb2.ScoredItem(
        item_id=item.item_id, title=item.title, genres=list(item.genres), score=item.score, reason=item.reason
    )


def encode_recommendations(answer: models.Recommendations) -> recommender_pb2.RecommendResponse:
    return recommender_pb2.RecommendResponse(
        user_id=answer.user_id,
        items=[_scored(i) for i in answer.items],
        strategy=answer.strategy,
        model_version=answer.model_version,
    )


def encode_similar(answer: models.SimilarItems) -> recommender_pb2.SimilarItemsResponse:
    return recommender_pb2.SimilarItemsResponse(
        item_id=answer.item_id, items=[_scored(i) for i in answer.items], model_version=answer.model_version
    )


def encode_profile(answer: models.UserProfile) -> recommender_pb2.UserProfile:
    return recommender_pb2.UserProfile(
        user_id=answer.user_id,
        ratings=answer.ratings,
        reviews=answer.reviews,
        watch_events=answer.watch_events,
        top_genres=[recommender_pb2.GenreWeight(genre=g.genre, weight=g.weight) for g in answer.top_genres],
        last_event_time=_timestamp(answer.last_event_time),
        updated_at=_timestamp(answer.updated_at),
    )


# -- servicer -------------------------------------------------------------------------------------------


async def _within_deadline(context: grpc.aio.ServicerContext[Any, Any], work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` but give up when the client's deadline passes (the client has stopped waiting, so
    finishing would only hold a database connection for nobody)."""
    remaining = context.time_remaining()
    if remaining is None:
        return await work
    if remaining <= 0.0:
        work.close()
        raise DeadlineExceeded("the deadline passed before the request was processed")
    timeout = asyncio.timeout(remaining)
    try:
        async with timeout:
            return await work
    except TimeoutError:
        if timeout.expired():
            raise DeadlineExceeded("the deadline passed before the answer was ready") from None
        raise


class _Undecodable:
    """Stands in for a request whose bytes are not the method's message (see ``RejectUndecodable``)."""


_UNDECODABLE = _Undecodable()
UNDECODABLE_MESSAGE = "the request is not a valid protobuf message of this method (strings must be UTF-8)"


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
                metrics.observe_refusal(method, "INVALID_ARGUMENT", time.perf_counter())
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, UNDECODABLE_MESSAGE)
            return await behaviour(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=deserializer, response_serializer=handler.response_serializer
        )


class RecommenderServicer(recommender_pb2_grpc.RecommenderServicer):
    """Decode, one service call, encode. UNAVAILABLE until ``attach`` hands over a ready service."""

    def __init__(self) -> None:
        self._service: RecommendationService | None = None

    def attach(self, service: RecommendationService) -> None:
        self._service = service

    def _ready(self) -> RecommendationService:
        if self._service is None:
            raise Unavailable("the server is starting; retry")
        return self._service

    async def _call(
        self,
        method: str,
        context: grpc.aio.ServicerContext[Any, Any],
        fields: dict[str, object],
        run: Callable[[RecommendationService], Coroutine[Any, Any, T]],
        encode: Callable[[T], Any],
    ) -> Any:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        message = ""
        response: Any = None
        in_flight = metrics.REQUESTS_IN_FLIGHT.labels(method)
        in_flight.inc()
        try:
            response = encode(await _within_deadline(context, run(self._ready())))
        except ServiceError as exc:
            code, message = status_for(exc), str(exc)
        except asyncio.CancelledError:
            # gRPC cancels the handler when the client goes away or its deadline passes; say which.
            remaining = context.time_remaining()
            expired = remaining is not None and remaining <= 0.0
            code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
            raise
        except Exception:
            log.exception("request failed", method=method, **fields)
            code, message = grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
        finally:
            in_flight.dec()
            elapsed = time.perf_counter() - started
            metrics.REQUEST_SECONDS.labels(method, code.name).observe(elapsed)
            log.info(
                "request", method=method, **fields, status=code.name, latency_ms=round(elapsed * 1000.0, 2)
            )
        if code is not grpc.StatusCode.OK:
            await context.abort(code, message)
        return response

    async def Recommend(
        self, request: recommender_pb2.RecommendRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> recommender_pb2.RecommendResponse:
        response: recommender_pb2.RecommendResponse = await self._call(
            "Recommend",
            context,
            {"user_id": request.user_id, "k": request.k},
            lambda svc: svc.recommend(
                request.user_id,
                request.k,
                include_genres=list(request.genres.include),
                exclude_genres=list(request.genres.exclude),
                include_seen=request.include_seen,
            ),
            encode_recommendations,
        )
        return response

    async def SimilarItems(
        self, request: recommender_pb2.SimilarItemsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> recommender_pb2.SimilarItemsResponse:
        response: recommender_pb2.SimilarItemsResponse = await self._call(
            "SimilarItems",
            context,
            {"item_id": request.item_id, "k": request.k},
            lambda svc: svc.similar_items(request.item_id, request.k),
            encode_similar,
        )
        return response

    async def GetUserProfile(
        self, request: recommender_pb2.GetUserProfileRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> recommender_pb2.UserProfile:
        response: recommender_pb2.UserProfile = await self._call(
            "GetUserProfile",
            context,
            {"user_id": request.user_id},
            lambda svc: svc.user_profile(request.user_id),
            encode_profile,
        )
        return response


# -- assembly and lifecycle -----------------------------------------------------------------------------


def load_learned_ranker(settings: Settings, dim: int) -> LearnedRanker | None:
    """The trained ranker ``CURRENT`` under ``settings.ranker_dir``, or None (plain fusion) when none was
    trained or it does not fit this index; either way the choice is logged."""
    from ranker.model.serving import current_version, load_ranker

    version = current_version(settings.ranker_dir)
    if version is None:
        log.info("no trained ranker; serving plain fusion", ranker_dir=str(settings.ranker_dir))
        return None
    ranker = load_ranker(settings.ranker_dir / version)
    if ranker.dim != dim:
        log.warning(
            "trained ranker does not match the index; serving plain fusion", dim=ranker.dim, index_dim=dim
        )
        return None
    log.info("trained ranker loaded", version=ranker.version, items=len(ranker.universe_ids))
    return ranker


def load_snapshot(settings: Settings) -> Snapshot:
    """Index + catalogue from ``settings.index_dir`` (blocking: run it in a thread)."""
    from ranker.retrieval import load_artifacts

    index, catalogue = load_artifacts(settings.index_dir)
    snapshot = Snapshot(index, catalogue, learned=load_learned_ranker(settings, index.dim))
    log.info(
        "index loaded",
        version=snapshot.version,
        items=len(index),
        dim=index.dim,
        kind=index.kind,
        missing_metadata=snapshot.missing_metadata,
    )
    return snapshot


async def open_postgres_store(settings: Settings) -> ClosableStore:
    from llmrec.store.postgres import PostgresStore

    store = PostgresStore.from_settings(settings.postgres, name="llmrec-api")
    try:
        await store.open()
        await store.ping()
    except BaseException:
        await store.close()
        raise
    return store


class ApiServer:
    """One gRPC server process. ``start`` binds and returns; ``wait_ready`` waits for SERVING."""

    def __init__(
        self,
        settings: Settings,
        *,
        store_factory: StoreFactory = open_postgres_store,
        snapshot_loader: SnapshotLoader = load_snapshot,
        port: int | None = None,
        reuse_port: bool = False,
    ) -> None:
        """``reuse_port``: share the port with sibling processes (``grpc_api.processes``); otherwise a
        second server on the same port fails to bind instead of silently sharing the traffic."""
        self._settings = settings
        self._store_factory = store_factory
        self._snapshot_loader = snapshot_loader
        self._requested_port = settings.api.port if port is None else port
        self._store: ClosableStore | None = None
        self._service: RecommendationService | None = None
        self._servicer = RecommenderServicer()
        self._health = health.aio.HealthServicer()
        limit = settings.api.max_message_bytes
        self._server = grpc.aio.server(
            # Access control (off unless configured): rate limit, then token check; see grpc_api.security.
            interceptors=[*security.interceptors(settings.api), RejectUndecodable()],
            options=[
                ("grpc.max_send_message_length", limit),
                ("grpc.max_receive_message_length", limit),
                ("grpc.so_reuseport", 1 if reuse_port else 0),
            ],
        )
        # Generated code is untyped (no mypy-protobuf here).
        recommender_pb2_grpc.add_RecommenderServicer_to_server(self._servicer, self._server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        self.port = 0
        self._warmup: asyncio.Task[None] | None = None

    @property
    def service(self) -> RecommendationService | None:
        return self._service

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        for name in ("", SERVICE_NAME):
            await self._health.set(name, status)

    async def start(self) -> int:
        """Bind, start serving health (NOT_SERVING) and begin warming up; returns the bound port."""
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        address = f"{self._settings.api.host}:{self._requested_port}"
        credentials = security.server_credentials(self._settings.api)
        if credentials is None:
            self.port = self._server.add_insecure_port(address)
        else:
            self.port = self._server.add_secure_port(address, credentials)
        if self.port == 0:
            raise RuntimeError(f"cannot bind the gRPC server to {address}")
        await self._server.start()
        log.info(
            "grpc server listening",
            address=f"{self._settings.api.host}:{self.port}",
            tls=credentials is not None,
            mtls=self._settings.api.tls_client_ca_file is not None,
        )
        self._warmup = asyncio.create_task(self._warm_up(), name="llmrec-api-warmup")
        return self.port

    async def _warm_up(self) -> None:
        snapshot = await asyncio.to_thread(self._snapshot_loader, self._settings)
        delay = STORE_RETRY_INITIAL_S
        while True:
            try:
                self._store = await self._store_factory(self._settings)
                break
            except StoreUnavailable as exc:
                log.warning("database not reachable yet; retrying", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(STORE_RETRY_MAX_S, delay * 2)
        self._service = RecommendationService(
            self._store, snapshot, ServiceConfig.from_settings(self._settings)
        )
        self._servicer.attach(self._service)
        metrics.index_served(len(snapshot.index), snapshot.version, snapshot.index.kind)
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", version=snapshot.version, port=self.port)

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        """Return once SERVING; re-raise the warm-up's failure (a missing index, say)."""
        if self._warmup is None:
            raise RuntimeError("start() first")
        await asyncio.wait_for(asyncio.shield(self._warmup), timeout_s)

    async def reload(self) -> str:
        """Load the published index again and swap it in; requests in flight finish on the old one."""
        if self._service is None:
            raise Unavailable("not serving yet")
        snapshot = await asyncio.to_thread(self._snapshot_loader, self._settings)
        self._service.swap(snapshot)
        metrics.index_served(len(snapshot.index), snapshot.version, snapshot.index.kind)
        log.info("index swapped", version=snapshot.version)
        return snapshot.version

    async def stop(self, grace_s: float | None = None, drain_s: float = 0.0) -> None:
        """NOT_SERVING; keep serving for ``drain_s`` so health-checking load balancers move traffic away
        (gRPC refuses new calls as soon as ``stop`` begins); then let requests in flight finish for
        ``grace_s``; then close the store."""
        grace = self._settings.api.grace_period_s if grace_s is None else grace_s
        # enter_graceful_shutdown sets every service NOT_SERVING and ignores later set() calls.
        await self._health.enter_graceful_shutdown()
        if drain_s > 0:
            await asyncio.sleep(drain_s)
        if self._warmup is not None and not self._warmup.done():
            self._warmup.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._warmup
        await self._server.stop(grace)
        if self._store is not None:
            await self._store.close()
            self._store = None
        log.info("grpc server stopped", grace_s=grace)

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


def _start_metrics(settings: Settings) -> None:
    if settings.api.metrics_port <= 0:
        return
    from prometheus_client import start_http_server

    start_http_server(settings.api.metrics_port, addr=settings.api.host)


async def serve_async(settings: Settings, *, reuse_port: bool = False) -> None:
    """Run until SIGTERM or SIGINT; SIGHUP reloads the index."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    server = ApiServer(settings, reuse_port=reuse_port)
    reloads: set[asyncio.Task[str]] = set()

    def on_reload() -> None:
        task = loop.create_task(server.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, on_reload)
    await server.start()
    try:
        ready = asyncio.create_task(server.wait_ready())
        stop_wait = asyncio.create_task(stopping.wait())
        done, _ = await asyncio.wait({ready, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if ready in done:
            ready.result()  # a failed warm-up (no index) ends the process with its error
            await stop_wait
        else:
            ready.cancel()
    finally:
        log.info("shutting down", grace_s=settings.api.grace_period_s)
        await server.stop()


def serve(settings: Settings) -> None:
    """Entry point of ``llmrec serve``: blocks until SIGTERM / SIGINT, then stops gracefully. With
    ``api.processes`` > 1, runs that many processes on the port (``grpc_api.processes``)."""
    if settings.api.processes > 1:
        from grpc_api.processes import serve_processes

        raise SystemExit(serve_processes(settings))
    serve_one(settings)


def serve_one(settings: Settings, *, reuse_port: bool = False) -> None:
    """One API process; ``reuse_port`` lets sibling processes bind the same port."""
    _start_metrics(settings)
    with asyncio.Runner(loop_factory=event_loop_factory(settings.api.event_loop)) as runner:
        runner.run(serve_async(settings, reuse_port=reuse_port))


def event_loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """``ApiSettings.event_loop`` as an ``asyncio.Runner`` loop factory (None: asyncio's default)."""
    if kind == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # not built for this platform (Windows): say so and serve on asyncio's loop
        log.warning("uvloop is not installed; serving on asyncio's event loop")
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
