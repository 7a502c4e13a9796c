"""The gRPC server process: health (``grpc_api.health``, with List), reflection v1 and v1alpha
(``grpc_api.reflection``) and the Recommender servicer on one port, and its lifecycle.

The pieces: ``grpc_api.codecs`` (domain answers as protobuf), ``grpc_api.interceptors`` and
``grpc_api.security`` (what runs before a handler), ``grpc_api.servicer`` (decode, one
``RecommendationService`` call, encode), ``grpc_api.loading`` (the served index and the profile store).

Lifecycle (``ApiServer``):
1. bind and start at once with health NOT_SERVING, so orchestrators see the process while it warms up;
2. load the index + catalogue (in a thread) and open the store, retrying the store with backoff while
   the database is not up yet; then health SERVING;
3. on SIGTERM / SIGINT: health NOT_SERVING first (load balancers stop sending), then ``server.stop(grace)``
   lets requests in flight finish, then the store's pool closes. SIGHUP reloads the index from disk and
   swaps it in atomically.

Access control (TLS / mTLS, bearer tokens, a per-client rate limit) is off unless ``ApiSettings`` asks
for it; see ``grpc_api.security``.

The HTTP/JSON API (``grpc_api.http_api``; ``api.http_enabled``, on by default, on ``api.http_port``) is
served by the same process on the same event loop, from the same ``RecommendationService``; it starts
with gRPC and stops with it (in every process of ``api.processes``, sharing the port with SO_REUSEPORT).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2
from prometheus_client import start_http_server

from grpc_api import admin, metrics, security
from grpc_api.descriptors import HEALTH_SERVICE
from grpc_api.health import HealthServicer, add_health_servicer
from grpc_api.http_api import EventPublisher, HttpServer, create_app
from grpc_api.interceptors import RejectOversized, RejectUndecodable, core_receive_limit
from grpc_api.live_catalogue import CatalogueFollower
from grpc_api.loading import (
    ClosableStore,
    SnapshotLoader,
    StoreFactory,
    load_learned_ranker,
    load_snapshot,
    open_postgres_store,
)
from grpc_api.processes import serve_processes
from grpc_api.reflection import enable_reflection
from grpc_api.request_tracing import TraceRequests
from grpc_api.service import RecommendationService, ServiceConfig
from grpc_api.servicer import RecommenderServicer
from llmrec import tracing
from llmrec.artifacts import current_version
from llmrec.logs import get_logger
from llmrec.settings import Settings
from llmrec.store.interface import StoreUnavailable
from llmrec_client.errors import Unavailable
from llmrec_client.v1 import recommender_pb2, recommender_pb2_grpc

log = get_logger(__name__)

SERVICE_NAME: str = recommender_pb2.DESCRIPTOR.services_by_name["Recommender"].full_name

# Waiting for the database at start-up: from 0.5 s doubling to 10 s between attempts.
STORE_RETRY_INITIAL_S = 0.5
STORE_RETRY_MAX_S = 10.0


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
        http: bool = False,
        http_port: int | None = None,
    ) -> None:
        """``reuse_port``: share the port with sibling processes (``grpc_api.processes``); otherwise a
        second server on the same port fails to bind instead of silently sharing the traffic. ``http``:
        also serve the HTTP/JSON API (``grpc_api.http_api``) on ``http_port`` (default ``api.http_port``);
        ``serve_async`` turns it on as ``api.http_enabled`` says."""
        self._settings = settings
        self._store_factory = store_factory
        self._snapshot_loader = snapshot_loader
        self._requested_port = settings.api.port if port is None else port
        self._store: ClosableStore | None = None
        self._service: RecommendationService | None = None
        self._servicer = RecommenderServicer()
        self._health = HealthServicer()
        limit = settings.api.max_message_bytes
        self._server = grpc.aio.server(
            # Tracing first, so refused requests are traced too (a no-op unless configured); then access
            # control (off unless configured): rate limit, then token check; see grpc_api.security. Then
            # the size limit and decoding, which answer and count what gRPC core would refuse uncounted.
            interceptors=[
                TraceRequests(),
                *security.interceptors(settings.api),
                RejectOversized(limit),
                RejectUndecodable(),
            ],
            options=[
                ("grpc.max_send_message_length", limit),
                # Above the limit, so that RejectOversized sees (and counts) requests up to twice it.
                ("grpc.max_receive_message_length", core_receive_limit(limit)),
                ("grpc.so_reuseport", 1 if reuse_port else 0),
            ],
        )
        # Generated code is untyped (no mypy-protobuf here).
        recommender_pb2_grpc.add_RecommenderServicer_to_server(self._servicer, self._server)  # type: ignore[no-untyped-call]
        add_health_servicer(self._health, self._server)
        # Reflection v1 and v1alpha, which also list themselves.
        enable_reflection((SERVICE_NAME, HEALTH_SERVICE), self._server)
        self.port = 0
        self._warmup: asyncio.Task[None] | None = None
        self._follower: CatalogueFollower | None = None
        self._following: asyncio.Task[None] | None = None
        self._ranker_following: asyncio.Task[None] | None = None
        # A ranker version on disk that could not be served (outdated, wrong dimension): not retried.
        self._refused_ranker: str | None = None
        # Serialises the two writers of the served snapshot: the catalogue follower and reload().
        self._swapping = asyncio.Lock()
        # -- HTTP/JSON API beside gRPC: the same service, health and access settings (grpc_api.http_api).
        self.http_port = 0
        self._publisher: EventPublisher | None = None
        self._http: HttpServer | None = None
        if http:
            self._publisher = EventPublisher(settings.kafka, timeout_s=settings.api.http_publish_timeout_s)
            app = create_app(
                settings.api,
                service=lambda: self._service,
                serving=lambda: self._health.statuses().get("") == health_pb2.HealthCheckResponse.SERVING,
                publisher=self._publisher,
            )
            if settings.api.admin_enabled:
                # The admin page reads seen items from the same store the service reads (grpc_api.admin).
                admin.install(app, admin.AdminBackend.from_settings(settings, store=lambda: self._store))
            self._http = HttpServer(app, settings.api, port=http_port, reuse_port=reuse_port)
        # -- end HTTP/JSON API

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
        if self._http is not None:
            try:
                self.http_port = await self._http.start()
            except BaseException:
                await self._server.stop(None)
                raise
        self._warmup = asyncio.create_task(self._warm_up(), name="llmrec-api-warmup")
        return self.port

    async def _warm_up(self) -> None:
        snapshot = await asyncio.to_thread(self._snapshot_loader, self._settings)
        delay = STORE_RETRY_INITIAL_S
        while True:
            try:
                if self._store is None:
                    self._store = await self._store_factory(self._settings)
                # The catalogue's changes since the index was built, before anything is answered: a
                # restarted process must not serve an item that was hidden or deleted meanwhile.
                follower = CatalogueFollower(self._store)
                snapshot, read = await follower.catch_up(snapshot)
                break
            except StoreUnavailable as exc:
                log.warning("database not reachable yet; retrying", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(STORE_RETRY_MAX_S, delay * 2)
        self._follower = follower
        log.info("catalogue followed", changes=read, cursor=follower.cursor, items=len(snapshot.items))
        self._service = RecommendationService(
            self._store, snapshot, ServiceConfig.from_settings(self._settings)
        )
        self._servicer.attach(self._service)
        metrics.index_served(len(snapshot.index), snapshot.version, snapshot.index.kind)
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", version=snapshot.version, port=self.port)
        self._following = asyncio.create_task(self._follow_catalogue(), name="llmrec-api-catalogue")
        self._ranker_following = asyncio.create_task(self._follow_ranker(), name="llmrec-api-ranker")

    async def _follow_ranker(self) -> None:
        """Swap in a newly trained ranker (``CURRENT`` changed) until stopped."""
        while True:
            await asyncio.sleep(self._settings.api.ranker_poll_s)
            try:
                await self.swap_ranker_if_new()
            except Exception:
                log.exception("ranker swap failed; serving the previous one")

    async def swap_ranker_if_new(self) -> str | None:
        """Load the ranker ``CURRENT`` names if it is not the one served, and swap it in atomically
        (loaded off the event loop; requests in flight finish on the old snapshot). Returns the version
        swapped in, None when nothing changed."""
        if self._service is None:
            return None
        on_disk = current_version(self._settings.ranker_dir)
        served = self._service.snapshot.learned
        if on_disk is None or on_disk == self._refused_ranker or (served and served.version == on_disk):
            return None
        dim = self._service.snapshot.index.dim
        learned = await asyncio.to_thread(load_learned_ranker, self._settings, dim)
        if learned is None:
            self._refused_ranker = on_disk
            return None
        async with self._swapping:
            snapshot = await asyncio.to_thread(self._service.snapshot.with_learned, learned)
            self._service.swap(snapshot)
        log.info("ranker swapped", version=learned.version, snapshot=snapshot.version)
        return learned.version

    async def _follow_catalogue(self) -> None:
        """Serve the catalogue's changes as they are committed, one poll at a time, until stopped."""
        poll_s = self._settings.api.catalogue_poll_s
        while True:
            await asyncio.sleep(poll_s)
            try:
                async with self._swapping:
                    if self._service is None or self._follower is None:
                        continue
                    snapshot, read = await self._follower.catch_up(self._service.snapshot)
                    if read:
                        self._service.swap(snapshot)
                        metrics.index_served(len(snapshot.index), snapshot.version, snapshot.index.kind)
                        log.info("catalogue changes served", changes=read, version=snapshot.version)
            except StoreUnavailable as exc:
                log.warning("catalogue feed unavailable; serving the last catalogue", error=str(exc))
            except Exception:
                # Never stop following: the next poll starts again from the last cursor.
                log.exception("catalogue follow failed")

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        """Return once SERVING; re-raise the warm-up's failure (a missing index, say)."""
        if self._warmup is None:
            raise RuntimeError("start() first")
        await asyncio.wait_for(asyncio.shield(self._warmup), timeout_s)

    async def reload(self) -> str:
        """Load the published index again and swap it in; requests in flight finish on the old one."""
        if self._service is None or self._store is None:
            raise Unavailable("not serving yet")
        async with self._swapping:
            snapshot = await asyncio.to_thread(self._snapshot_loader, self._settings)
            # The new index knows nothing of the live catalogue: follow the feed again from its start.
            follower = CatalogueFollower(self._store)
            snapshot, _ = await follower.catch_up(snapshot)
            self._follower = follower
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
        for task in (self._warmup, self._following, self._ranker_following):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._http is not None:
            # Both servers stop accepting at once and let their requests in flight finish.
            await asyncio.gather(self._server.stop(grace), self._http.stop(grace))
        else:
            await self._server.stop(grace)
        if self._publisher is not None:
            await self._publisher.close()
        if self._store is not None:
            await self._store.close()
            self._store = None
        log.info("grpc server stopped", grace_s=grace)

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


def _start_metrics(settings: Settings) -> None:
    if settings.api.metrics_port <= 0:
        return
    start_http_server(settings.api.metrics_port, addr=settings.api.host)


async def serve_async(settings: Settings, *, reuse_port: bool = False) -> None:
    """Run until SIGTERM or SIGINT; SIGHUP reloads the index."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    server = ApiServer(settings, reuse_port=reuse_port, http=settings.api.http_enabled)
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
        raise SystemExit(serve_processes(settings, serve_one))
    serve_one(settings)


def serve_one(settings: Settings, *, reuse_port: bool = False) -> None:
    """One API process; ``reuse_port`` lets sibling processes bind the same port."""
    _start_metrics(settings)
    # Per process (an exporter's thread does not survive a fork); off unless OTEL_* asks for it.
    tracing.configure("llmrec-api")
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
