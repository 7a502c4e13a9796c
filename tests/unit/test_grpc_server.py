"""The gRPC server in-process over an in-memory store: wire encoding, status codes, deadlines, health,
reflection, lifecycle. The sync client runs in a thread so the server's event loop keeps serving."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY, generate_latest

from grpc_api import metrics
from grpc_api.health import LIST_METHOD, HealthListRequest, HealthListResponse, HealthServicer
from grpc_api.interceptors import UNDECODABLE_MESSAGE, core_receive_limit, oversized_message
from grpc_api.metrics import handled_series
from grpc_api.processes import child_settings
from grpc_api.server import SERVICE_NAME, ApiServer, event_loop_factory
from grpc_api.service import Snapshot
from llmrec.catalogue import Item
from llmrec.settings import ApiSettings, Settings
from llmrec.store.fake import FakeStore
from llmrec_client.client import RecommenderClient
from llmrec_client.errors import DeadlineExceeded, InvalidRequest, NotFound, RemoteError, Unavailable
from llmrec_client.v1 import recommender_pb2, recommender_pb2_grpc
from ranker.fusion import Candidates
from ranker.retrieval import ItemIndex
from tests.synthetic import Interaction, add_user, genre_embeddings

T = TypeVar("T")
T0 = datetime(2024, 5, 1, tzinfo=UTC)
GENRES = [("Action",), ("Drama",), ("Comedy", "Drama")]
ITEMS = [Item(item_id=i, title=f"Show {i}", genres=GENRES[i % 3], members=10 * i) for i in range(1, 31)]
VECTORS = genre_embeddings([it.genres for it in ITEMS], dim=16, seed=3)
VECTOR_BY_KEY = {it.key: VECTORS[row] for row, it in enumerate(ITEMS)}  # the ledger holds keys
SETTINGS = Settings(api=ApiSettings(port=0, metrics_port=0, max_k=20, grace_period_s=1.0))


def snapshot(ranker: Any = None, items: list[Item] = ITEMS) -> Snapshot:
    rows = [ITEMS.index(it) for it in items]
    return Snapshot(ItemIndex.build([it.key for it in items], VECTORS[rows]), items, ranker)


def key(anime_id: int) -> int:
    """The key the ledger stores for the MAL title ``anime_id`` (``ITEMS[anime_id - 1]``)."""
    return ITEMS[anime_id - 1].key


@dataclass
class Running:
    server: ApiServer
    store: FakeStore
    client: RecommenderClient
    target: str

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)


async def start(store: FakeStore, loader: Callable[[Settings], Snapshot]) -> Running:
    async def factory(_: Settings) -> FakeStore:
        return store

    server = ApiServer(SETTINGS, store_factory=factory, snapshot_loader=loader)
    port = await server.start()
    target = f"127.0.0.1:{port}"
    return Running(server, store, RecommenderClient(target, timeout_s=2.0), target)


@pytest.fixture
async def api() -> AsyncIterator[Running]:
    store = FakeStore()
    add_user(
        store,
        "u1",
        [Interaction(key(i), 0.4, T0 + timedelta(hours=i), rating=9.0) for i in (3, 6, 9)],  # Action titles
        VECTOR_BY_KEY,
    )
    running = await start(store, lambda _: snapshot())
    await running.server.wait_ready(10)
    yield running
    running.client.close()
    await running.server.stop(0.5)


async def test_recommend_over_the_wire(api: Running) -> None:
    answer = await api.call(api.client.recommend, "u1", k=4)
    assert answer.strategy == "personalized" and answer.user_id == "u1"
    assert len(answer.items) == 4 and all(i.genres == ("Action",) for i in answer.items)
    assert not {"mal:3", "mal:6", "mal:9"} & {i.item_id for i in answer.items}
    assert answer.items[0].reason.endswith("which you rated 9")
    assert answer.model_version == api.server.service.snapshot.version  # type: ignore[union-attr]

    cold = await api.call(api.client.recommend, "new-user", k=2, include_genres=["drama"])
    assert cold.strategy == "cold_start" and [i.item_id for i in cold.items] == ["mal:29", "mal:28"]
    assert cold.items[0].reason == "popular with Drama fans"


async def test_similar_items_and_profile_over_the_wire(api: Running) -> None:
    similar = await api.call(api.client.similar_items, "mal:3", k=3)
    assert similar.item_id == "mal:3" and len(similar.items) == 3 and similar.model_version
    assert "mal:3" not in {i.item_id for i in similar.items}
    assert all(i.item_id.startswith("mal:") and i.genres == ("Action",) for i in similar.items)
    profile = await api.call(api.client.user_profile, "u1")
    assert profile.ratings == 3 and profile.top_genres[0].genre == "Action"
    assert profile.last_event_time == T0 + timedelta(hours=9)
    assert profile.updated_at is not None and profile.updated_at.tzinfo is not None


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda c: c.recommend("u1", k=1000), InvalidRequest),
        (lambda c: c.recommend("bad id"), InvalidRequest),
        (lambda c: c.recommend("u1", include_genres=["Mecha"]), InvalidRequest),
        (lambda c: c.similar_items("mal:424242"), NotFound),
        (lambda c: c.similar_items("mal:3\n"), InvalidRequest),
        (lambda c: c.user_profile("stranger"), NotFound),
    ],
)
async def test_domain_errors_become_client_exceptions(
    api: Running, call: Callable[[RecommenderClient], Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await api.call(call, api.client)


async def test_status_codes_on_the_wire(api: Running) -> None:
    async with grpc.aio.insecure_channel(api.target) as channel:
        stub = recommender_pb2_grpc.RecommenderStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Recommend(recommender_pb2.RecommendRequest(user_id="u1", k=1000), timeout=2)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "k must be between 1 and 20 (0 means 10)"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.SimilarItems(recommender_pb2.SimilarItemsRequest(item_id="mal:424242"), timeout=2)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert "'mal:424242'" in (info.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.SimilarItems(recommender_pb2.SimilarItemsRequest(item_id="mal:3\nmal:4"), timeout=2)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "item_id" in (info.value.details() or "")
        api.store.delay_s = 3.0
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetUserProfile(recommender_pb2.GetUserProfileRequest(user_id="u1"), timeout=0.2)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_database_outage_is_unavailable(api: Running) -> None:
    api.store.unavailable = True
    with pytest.raises(Unavailable, match="database"):
        await api.call(api.client.recommend, "u1")


async def test_deadline_is_respected(api: Running) -> None:
    api.store.delay_s = 3.0
    started = time.perf_counter()
    with pytest.raises(DeadlineExceeded):
        await api.call(api.client.recommend, "u1", timeout_s=0.2)
    assert time.perf_counter() - started < 1.5


async def test_bugs_are_internal_without_details() -> None:
    class Broken:
        version = "broken-1"

        def score(self, user_vector: np.ndarray, candidates: Candidates) -> np.ndarray:
            raise RuntimeError("secret internals /etc/passwd")

    store = FakeStore()
    add_user(store, "u1", [Interaction(key(3), 0.4, T0, 9.0)], VECTOR_BY_KEY)
    running = await start(store, lambda _: snapshot(Broken()))
    await running.server.wait_ready(10)
    try:
        with pytest.raises(RemoteError) as info:
            await running.call(running.client.recommend, "u1")
        assert info.value.code == "INTERNAL"
        assert "secret" not in str(info.value) and "Traceback" not in str(info.value)
    finally:
        running.client.close()
        await running.server.stop(0)


async def test_not_serving_until_ready_then_serving_then_not_serving_on_stop() -> None:
    release = threading.Event()

    def slow_loader(_: Settings) -> Snapshot:
        release.wait(10)
        return snapshot()

    running = await start(FakeStore(), slow_loader)
    try:
        assert await running.call(running.client.health) == "NOT_SERVING"
        assert await running.call(running.client.health, "") == "NOT_SERVING"
        with pytest.raises(Unavailable, match="starting"):
            await running.call(running.client.recommend, "u1")
        release.set()
        await running.server.wait_ready(10)
        assert await running.call(running.client.health) == "SERVING"
        await running.call(running.client.wait_until_serving, 2.0)
        with pytest.raises(NotFound):
            await running.call(running.client.health, "no.such.Service")

        async with grpc.aio.insecure_channel(running.target) as channel:
            from grpc_health.v1 import health_pb2, health_pb2_grpc

            health = health_pb2_grpc.HealthStub(channel)
            stopping = asyncio.create_task(running.server.stop(1.0, drain_s=0.5))
            await asyncio.sleep(0.05)
            # While draining the server still answers, and says it is going away.
            reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1)
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert (await running.call(running.client.recommend, "someone", k=1)).items
            await stopping
        with pytest.raises(Unavailable):
            await running.call(running.client.health, timeout_s=0.5)
        assert running.store.closed
    finally:
        release.set()
        running.client.close()
        await running.server.stop(0)


async def test_a_missing_index_fails_warm_up() -> None:
    def missing(_: Settings) -> Snapshot:
        raise FileNotFoundError("no index at artifacts/index; run `llmrec build-index`")

    running = await start(FakeStore(), missing)
    try:
        with pytest.raises(FileNotFoundError, match="build-index"):
            await running.server.wait_ready(5)
        assert await running.call(running.client.health) == "NOT_SERVING"
    finally:
        running.client.close()
        await running.server.stop(0)


async def test_reload_swaps_the_index(api: Running) -> None:
    before = (await api.call(api.client.recommend, "new-user", k=1)).model_version
    api.server._snapshot_loader = lambda _: snapshot(items=ITEMS[:5])  # the next published version
    version = await api.server.reload()
    answer = await api.call(api.client.recommend, "new-user", k=1)
    assert answer.model_version == version != before
    assert answer.items[0].item_id == "mal:5"


async def test_reflection_lists_the_services(api: Running) -> None:
    async with grpc.aio.insecure_channel(api.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        names: set[str] = set()
        async for reply in stub.ServerReflectionInfo(iter([request]), timeout=2):
            names |= {s.name for s in reply.list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names


def reflect(target: str, service: str, **request: Any) -> Any:
    """One request to the server reflection ``service`` (v1 or v1alpha), in grpcio-reflection's v1alpha
    messages: the two versions have the same messages on the wire."""
    with grpc.insecure_channel(target) as channel:
        info = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        (reply,) = list(info(iter([reflection_pb2.ServerReflectionRequest(**request)]), timeout=2))
        return reply


def pool_of(reply: Any) -> descriptor_pool.DescriptorPool:
    """The files of a file_descriptor_response, in a pool of their own (each file after its imports)."""
    protos = {
        p.name: p
        for p in map(
            descriptor_pb2.FileDescriptorProto.FromString,
            reply.file_descriptor_response.file_descriptor_proto,
        )
    }
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(name: str) -> None:
        if name not in added:
            for dependency in protos[name].dependency:
                add(dependency)
            pool.Add(protos[name])
            added.add(name)

    for name in protos:
        add(name)
    return pool


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_reflection_resolves_services_and_methods(api: Running, version: str) -> None:
    """What grpcurl `describe llmrec.v1.Recommender.Recommend` and ghz ask: the file defining a method."""
    service = f"grpc.reflection.{version}.ServerReflection"
    listed = await api.call(reflect, api.target, service, list_services="")
    names = {s.name for s in listed.list_services_response.service}
    assert names == {
        SERVICE_NAME,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    for symbol in (f"{SERVICE_NAME}.Recommend", SERVICE_NAME, "llmrec.v1.RecommendRequest.user_id"):
        reply = await api.call(reflect, api.target, service, file_containing_symbol=symbol)
        method = pool_of(reply).FindMethodByName(f"{SERVICE_NAME}.Recommend")
        assert method.input_type.full_name == "llmrec.v1.RecommendRequest", symbol
        assert "strategy" in method.output_type.fields_by_name
    # Health as served, List included; a nested enum; the reflection services themselves.
    reply = await api.call(
        reflect,
        api.target,
        service,
        file_containing_symbol="grpc.health.v1.HealthCheckResponse.ServingStatus",
    )
    assert list(pool_of(reply).FindServiceByName("grpc.health.v1.Health").methods_by_name) == [
        "Check",
        "List",
        "Watch",
    ]
    reply = await api.call(
        reflect, api.target, service, file_containing_symbol="grpc.reflection.v1.ServerReflection"
    )
    assert pool_of(reply).FindServiceByName("grpc.reflection.v1.ServerReflection").methods_by_name
    missing = await api.call(
        reflect, api.target, service, file_containing_symbol="llmrec.v1.Recommender.Nope"
    )
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert missing.original_request.file_containing_symbol == "llmrec.v1.Recommender.Nope"


async def test_health_list_gives_every_service(api: Running) -> None:
    async with grpc.aio.insecure_channel(api.target) as channel:
        list_health = channel.unary_unary(
            LIST_METHOD,
            request_serializer=HealthListRequest.SerializeToString,
            response_deserializer=HealthListResponse.FromString,
        )
        reply = await list_health(HealthListRequest(), timeout=2)
        serving = health_pb2.HealthCheckResponse.SERVING
        assert {name: s.status for name, s in reply.statuses.items()} == {"": serving, SERVICE_NAME: serving}
        await api.server.stop(1.0, drain_s=0.3)  # health goes NOT_SERVING first, then the server stops


async def test_health_list_follows_shutdown() -> None:
    servicer = HealthServicer()
    await servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    await servicer.enter_graceful_shutdown()
    await servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)  # ignored from now on
    reply = await servicer.List(HealthListRequest(), None)
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    assert {name: s.status for name, s in reply.statuses.items()} == {
        "": not_serving,
        SERVICE_NAME: not_serving,
    }


async def test_undecodable_bytes_are_invalid_argument_without_guessing_why(api: Running) -> None:
    async with grpc.aio.insecure_channel(api.target) as channel:
        raw = channel.unary_unary(f"/{SERVICE_NAME}/Recommend")  # bytes in, bytes out
        for bad in (b"\xff\xff\xff\xff\xff", b"\x0a\x04al\xffe"):  # not protobuf; a string not UTF-8
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await raw(bad, timeout=2)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details() == UNDECODABLE_MESSAGE
    assert "UTF-8" not in UNDECODABLE_MESSAGE


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_request_metrics_follow_the_go_grpc_prometheus_convention(api: Running) -> None:
    rpc = {"grpc_type": "unary", "grpc_service": SERVICE_NAME, "grpc_method": "Recommend"}
    bad = {**rpc, "grpc_code": "InvalidArgument"}
    ok = {**rpc, "grpc_code": "OK"}
    before = {
        "started": sample("grpc_server_started_total", **rpc),
        "bad": sample("grpc_server_handled_total", **bad),
        "ok": sample("grpc_server_handled_total", **ok),
        "ok_seconds": sample("grpc_server_handling_seconds_count", **ok),
        "fusion": sample("llmrec_api_recommendations_total", strategy="personalized", ranker="fusion"),
        "cold": sample("llmrec_api_recommendations_total", strategy="cold_start", ranker="popularity"),
    }
    await api.call(api.client.recommend, "u1", k=2)
    await api.call(api.client.recommend, "new-user", k=2)
    with pytest.raises(InvalidRequest):
        await api.call(api.client.recommend, "u1", k=1000)
    assert sample("grpc_server_started_total", **rpc) == before["started"] + 3
    assert sample("grpc_server_handled_total", **ok) == before["ok"] + 2
    assert sample("grpc_server_handling_seconds_count", **ok) == before["ok_seconds"] + 2
    assert sample("grpc_server_handled_total", **bad) == before["bad"] + 1
    assert sample("llmrec_api_recommendations_total", strategy="personalized", ranker="fusion") == (
        before["fusion"] + 1
    )
    assert sample("llmrec_api_recommendations_total", strategy="cold_start", ranker="popularity") == (
        before["cold"] + 1
    )
    assert sample("llmrec_api_requests_in_flight", grpc_service=SERVICE_NAME, grpc_method="Recommend") == 0
    # No series keeps the old upper-case code names.
    exposed = generate_latest(REGISTRY).decode()
    assert 'grpc_code="INVALID_ARGUMENT"' not in exposed and "llmrec_api_request_seconds" not in exposed
    assert handled_series("Recommend") in exposed


async def test_a_request_over_the_size_limit_is_refused_and_counted(api: Running) -> None:
    limit = SETTINGS.api.max_message_bytes  # 4 MiB
    exhausted = {
        "grpc_type": "unary",
        "grpc_service": SERVICE_NAME,
        "grpc_method": "Recommend",
        "grpc_code": "ResourceExhausted",
    }
    before = sample("grpc_server_handled_total", **exhausted)
    too_large = recommender_pb2.RecommendRequest(user_id="u" * 5_000_000).SerializeToString()
    async with grpc.aio.insecure_channel(api.target) as channel:
        raw = channel.unary_unary(f"/{SERVICE_NAME}/Recommend")  # bytes in, bytes out
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw(too_large, timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert info.value.details() == oversized_message(len(too_large), limit)
        assert sample("grpc_server_handled_total", **exhausted) == before + 1
        # Beyond gRPC core's own limit (the memory bound) core refuses, before anything could count it.
        beyond = b"\x0a" + b"\x00" * core_receive_limit(limit)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw(beyond, timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert sample("grpc_server_handled_total", **exhausted) == before + 1
        # A request just within the limit is decoded and answered as usual.
        within = recommender_pb2.RecommendRequest(user_id="u1", k=2).SerializeToString()
        assert len(await raw(within, timeout=5)) > 0


def test_core_receive_limit() -> None:
    assert core_receive_limit(4 * 1024 * 1024) == 8 * 1024 * 1024
    assert core_receive_limit(2**30) == 2**31 - 1  # gRPC's channel arguments are int32
    assert core_receive_limit(-1) == -1


def test_every_status_code_has_its_go_name() -> None:
    assert set(metrics.CODE_NAMES) == set(grpc.StatusCode)
    assert metrics.code_name(grpc.StatusCode.INVALID_ARGUMENT) == "InvalidArgument"
    assert metrics.code_name(grpc.StatusCode.CANCELLED) == "Canceled"  # Go's spelling
    assert metrics.code_name(grpc.StatusCode.DEADLINE_EXCEEDED) == "DeadlineExceeded"
    assert metrics.split_method("/grpc.health.v1.Health/Check") == ("grpc.health.v1.Health", "Check")


def test_event_loop_setting() -> None:
    assert event_loop_factory("asyncio") is None
    factory = event_loop_factory("uvloop")
    assert factory is not None
    loop = factory()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()


def test_several_processes_need_a_fixed_port() -> None:
    with pytest.raises(ValueError, match=r"fixed api\.port"):
        ApiSettings(port=0, processes=2)
    assert ApiSettings(port=0).processes == 1


def test_each_child_process_gets_its_own_metrics_port() -> None:
    settings = Settings(api=ApiSettings(port=50600, metrics_port=19300, processes=3))
    assert [child_settings(settings, i).api.metrics_port for i in range(3)] == [19300, 19301, 19302]
    off = Settings(api=ApiSettings(port=50600, metrics_port=0, processes=2))
    assert child_settings(off, 1).api.metrics_port == 0
