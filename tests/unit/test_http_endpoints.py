"""The HTTP/JSON API (grpc_api/http_api.py) over an in-memory service: each endpoint, answers equal to the
gRPC encoding of the same service call, error mapping, access control, publishing with a fake Kafka
client, metrics, the embedded server beside gRPC, and the committed OpenAPI document's freshness."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from google.protobuf import json_format
from prometheus_client import REGISTRY

from grpc_api import codecs
from grpc_api.http_api import OPENAPI_FILE, EventPublisher, bind, create_app, document_text, main
from grpc_api.server import ApiServer
from grpc_api.service import RecommendationService, ServiceConfig, Snapshot
from llmrec.catalogue import Item
from llmrec.settings import ApiSettings, KafkaSettings, Settings
from llmrec.store.fake import FakeStore
from llmrec_client.v1 import recommender_pb2
from ranker.retrieval import ItemIndex
from tests.synthetic import Interaction, add_user, genre_embeddings

T0 = datetime(2024, 5, 1, tzinfo=UTC)
GENRES = [("Action",), ("Drama",), ("Comedy", "Drama")]
ITEMS = [Item(item_id=i, title=f"Show {i}", genres=GENRES[i % 3], members=10 * i) for i in range(1, 31)]
VECTORS = genre_embeddings([it.genres for it in ITEMS], dim=16, seed=3)
VECTOR_BY_KEY = {it.key: VECTORS[row] for row, it in enumerate(ITEMS)}
KAFKA = KafkaSettings(bootstrap="127.0.0.1:1", topic_prefix="t")
WHEN = "2024-05-01T12:00:00Z"


class FakeKafka:
    """librdkafka's produce / poll / flush; topics in ``fail`` get a delivery error."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.messages: list[tuple[str, bytes | None, bytes | None]] = []
        self._pending: list[tuple[str, Any]] = []
        self.fail = fail or set()

    def produce(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, on_delivery: Any = None
    ) -> None:
        self.messages.append((topic, key, value))
        self._pending.append((topic, on_delivery))

    def _deliver(self) -> None:
        for topic, callback in self._pending:
            if callback is not None:
                callback("Broker: not enough replicas" if topic in self.fail else None, None)
        self._pending.clear()

    def poll(self, timeout: float = 0) -> int:
        self._deliver()
        return 0

    def flush(self, timeout: float = 0) -> int:
        self._deliver()
        return 0


def service() -> tuple[RecommendationService, FakeStore]:
    store = FakeStore()
    add_user(
        store,
        "u1",
        [Interaction(ITEMS[i - 1].key, 0.4, T0 + timedelta(hours=i), rating=9.0) for i in (3, 6, 9)],
        VECTOR_BY_KEY,
    )
    snap = Snapshot(ItemIndex.build([it.key for it in ITEMS], VECTORS), ITEMS)
    return RecommendationService(store, snap, ServiceConfig(max_k=20)), store


class Api:
    def __init__(self, api: ApiSettings | None = None, kafka: FakeKafka | None = None) -> None:
        api = api or ApiSettings(max_k=20)
        self.service, self.store = service()
        self.kafka = kafka or FakeKafka()
        self.current: RecommendationService | None = self.service
        publisher = EventPublisher(KAFKA, timeout_s=1.0, client_factory=lambda: self.kafka)
        self.app = create_app(api, service=lambda: self.current, publisher=publisher)
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://api")


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    running = Api()
    yield running
    await running.client.aclose()


def parsed(body: dict[str, Any], message: Any) -> Any:
    """An HTTP answer as the gRPC response message (unknown fields refused: the names must be the proto's)."""
    return json_format.ParseDict(body, message)


async def test_recommend_equals_the_grpc_answer(api: Api) -> None:
    reply = await api.client.get("/v1/users/u1/recommendations", params={"k": 4})
    assert reply.status_code == 200
    body = reply.json()
    assert body["strategy"] == "personalized" and len(body["items"]) == 4
    assert body["model_version"] == api.service.snapshot.version
    expected = codecs.encode_recommendations(await api.service.recommend("u1", 4))
    assert parsed(body, recommender_pb2.RecommendResponse()) == expected

    reply = await api.client.get(
        "/v1/users/new-user/recommendations",
        params={"k": 2, "include_genres": ["drama"], "exclude_genres": ["comedy"], "include_seen": "true"},
    )
    expected = codecs.encode_recommendations(
        await api.service.recommend("new-user", 2, ["drama"], ["comedy"], include_seen=True)
    )
    assert reply.json()["strategy"] == "cold_start"
    assert parsed(reply.json(), recommender_pb2.RecommendResponse()) == expected


async def test_similar_items_with_an_encoded_id(api: Api) -> None:
    reply = await api.client.get(f"/v1/items/{quote('mal:3', safe='')}/similar", params={"k": 3})
    assert reply.status_code == 200
    body = reply.json()
    assert body["item_id"] == "mal:3" and len(body["items"]) == 3
    expected = codecs.encode_similar(await api.service.similar_items("mal:3", 3))
    assert parsed(body, recommender_pb2.SimilarItemsResponse()) == expected


async def test_profile_equals_the_grpc_answer(api: Api) -> None:
    reply = await api.client.get("/v1/users/u1/profile")
    assert reply.status_code == 200
    body = reply.json()
    assert body["ratings"] == 3 and body["top_genres"][0]["genre"] == "Action"
    assert body["last_event_time"] == "2024-05-01T09:00:00Z"
    expected = codecs.encode_profile(await api.service.user_profile("u1"))
    assert parsed(body, recommender_pb2.UserProfile()) == expected


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/v1/users/u1/recommendations", {"k": 1000}, 400, "INVALID_ARGUMENT"),
        ("/v1/users/u1/recommendations", {"k": "many"}, 400, "INVALID_ARGUMENT"),
        ("/v1/users/u1/recommendations", {"k": -1}, 400, "INVALID_ARGUMENT"),
        ("/v1/users/u1/recommendations", {"include_genres": "Mecha"}, 400, "INVALID_ARGUMENT"),
        (f"/v1/users/{quote('bad id', safe='')}/recommendations", {}, 400, "INVALID_ARGUMENT"),
        (f"/v1/users/{quote('a/b', safe='')}/recommendations", {}, 400, "INVALID_ARGUMENT"),
        ("/v1/users//recommendations", {}, 400, "INVALID_ARGUMENT"),
        (f"/v1/items/{quote('mal:424242', safe='')}/similar", {}, 404, "NOT_FOUND"),
        ("/v1/items/" + quote("mal:3\n", safe="") + "/similar", {}, 400, "INVALID_ARGUMENT"),
        ("/v1/users/stranger/profile", {}, 404, "NOT_FOUND"),
        ("/v1/nothing-here", {}, 404, "NOT_FOUND"),
    ],
)
async def test_domain_errors_map_to_http_statuses(
    api: Api, path: str, params: dict[str, Any], status: int, code: str
) -> None:
    reply = await api.client.get(path, params=params)
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["code"] == code and body["message"] and set(body) == {"code", "message"}


async def test_unavailable_while_starting_and_when_the_store_is_down(api: Api) -> None:
    api.current = None
    reply = await api.client.get("/v1/users/u1/recommendations")
    assert reply.status_code == 503 and reply.json() == {
        "code": "UNAVAILABLE",
        "message": "the server is starting; retry",
    }
    assert (await api.client.get("/healthz")).json() == {"status": "NOT_SERVING"}
    api.current = api.service
    assert (await api.client.get("/healthz")).json() == {"status": "SERVING"}
    api.store.unavailable = True
    reply = await api.client.get("/v1/users/u1/profile")
    assert reply.status_code == 503 and reply.json()["code"] == "UNAVAILABLE"


async def test_a_bug_is_internal_without_details(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(api.service, "recommend", broken)
    reply = await api.client.get("/v1/users/u1/recommendations")
    assert reply.status_code == 500 and reply.json()["code"] == "INTERNAL"
    assert "secret" not in reply.text


async def test_tokens_and_rate_limit_as_for_grpc(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("shop:s3cret\n")
    running = Api(ApiSettings(max_k=20, auth_tokens_file=tokens, rate_limit_per_s=1.0, rate_limit_burst=2))
    client = running.client
    try:
        reply = await client.get("/v1/users/u1/profile")
        assert reply.status_code == 401 and reply.json()["code"] == "UNAUTHENTICATED"
        assert reply.headers["www-authenticate"] == "Bearer"
        assert "s3cret" not in reply.text
        wrong = await client.get("/v1/users/u1/profile", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert (await client.get("/v1/users/u1/profile", headers=good)).status_code == 200
        assert (await client.get("/v1/users/u1/profile", headers=good)).status_code == 200
        limited = await client.get("/v1/users/u1/profile", headers=good)
        assert limited.status_code == 429 and limited.json()["code"] == "RESOURCE_EXHAUSTED"
        assert int(limited.headers["retry-after"]) >= 1
        # Health and the document are open, like gRPC health and reflection.
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/openapi.json")).status_code == 200
    finally:
        await client.aclose()


def rating(event_id: str, **changes: Any) -> dict[str, Any]:
    event = {
        "event_type": "rating",
        "event_id": event_id,
        "user_id": "u9",
        "item_id": "mal:3",
        "event_time": WHEN,
        "rating": 8,
    }
    return {**event, **changes}


async def test_post_events_publishes_them(api: Api) -> None:
    reply = await api.client.post("/v1/events", json=rating("e1"))
    assert reply.status_code == 202, reply.text
    assert reply.json() == {"accepted": 1, "event_ids": ["e1"], "topics": [KAFKA.ratings_topic]}
    watch = {
        "event_type": "watch",
        "event_id": "e2",
        "user_id": "u9",
        "item_id": "mal:5",
        "event_time": WHEN,
        "status": "completed",
        "episodes_watched": 12,
    }
    reply = await api.client.post("/v1/events", json=[rating("e3"), watch])
    assert reply.status_code == 202 and reply.json()["accepted"] == 2
    assert [(t, k) for t, k, _ in api.kafka.messages] == [
        (KAFKA.ratings_topic, b"u9"),
        (KAFKA.ratings_topic, b"u9"),
        (KAFKA.watch_topic, b"u9"),
    ]
    assert json.loads(api.kafka.messages[0][2] or b"")["event_id"] == "e1"


async def test_bad_events_are_refused_with_their_reasons(api: Api) -> None:
    batch = [
        rating("ok"),
        rating("bad", rating=11),
        {"event_type": "like"},
        rating("nan", rating=float("nan")),
    ]
    reply = await api.client.post(
        "/v1/events", content=json.dumps(batch), headers={"content-type": "application/json"}
    )
    assert reply.status_code == 400
    body = reply.json()
    assert body["code"] == "INVALID_ARGUMENT"
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [
        (1, "schema_violation"),
        (2, "unknown_event_type"),
        (3, "non_finite_number"),
    ]
    assert api.kafka.messages == []  # all or nothing

    for content, reason in [
        (b"{not json", "invalid_json"),
        (b"[1,", "invalid_json"),
        (b"", "empty_message"),
        (b"[]", "empty_message"),
        (b"\xff\xfe[", "invalid_utf8"),
        (b'"text"', "not_an_object"),
        (json.dumps([rating(f"e{i}") for i in range(501)]).encode(), "message_too_large"),
    ]:
        reply = await api.client.post("/v1/events", content=content)
        assert reply.status_code == 400, content
        assert reply.json()["rejected"][0]["reason"] == reason, content


async def test_kafka_failure_is_unavailable() -> None:
    running = Api(kafka=FakeKafka(fail={KAFKA.ratings_topic}))
    try:
        reply = await running.client.post("/v1/events", json=rating("e1"))
        assert reply.status_code == 503 and reply.json()["code"] == "UNAVAILABLE"
    finally:
        await running.client.aclose()


async def test_post_items(api: Api) -> None:
    upsert = {"op": "upsert", "event_id": "i1", "item_id": "sku-1", "event_time": WHEN, "title": "Tea"}
    hide = {"op": "hide", "event_id": "i2", "item_id": "sku-1", "event_time": WHEN}
    reply = await api.client.post("/v1/items", json=[upsert, hide])
    assert reply.status_code == 202 and reply.json()["topics"] == [KAFKA.items_topic]
    assert [k for _, k, _ in api.kafka.messages] == [b"sku-1", b"sku-1"]
    wrong = {**upsert, "event_id": "i3", "vector": [0.5] * 3}  # the served index has 16 dimensions
    reply = await api.client.post("/v1/items", json=wrong)
    assert reply.status_code == 400
    assert reply.json()["rejected"] == [
        {
            "index": 0,
            "reason": "vector_dimension_mismatch",
            "detail": "vector has 3 dimensions, the index has 16",
        }
    ]
    reply = await api.client.post("/v1/items", json=rating("e1"))
    assert reply.json()["rejected"][0]["reason"] == "wrong_topic"


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_requests_are_counted_by_route(api: Api) -> None:
    labels = {"method": "GET", "route": "/v1/users/{user_id}/recommendations", "code": "200"}
    before = sample("llmrec_api_http_requests_total", labels)
    served = sample("llmrec_api_recommendations_total", {"strategy": "personalized", "ranker": "fusion"})
    await api.client.get("/v1/users/u1/recommendations")
    assert sample("llmrec_api_http_requests_total", labels) == before + 1
    assert sample("llmrec_api_http_request_duration_seconds_count", labels) >= 1
    assert (
        sample("llmrec_api_recommendations_total", {"strategy": "personalized", "ranker": "fusion"})
        == served + 1
    )
    unmatched = {"method": "GET", "route": "unmatched", "code": "404"}
    before = sample("llmrec_api_http_requests_total", unmatched)
    await api.client.get("/nowhere")
    assert sample("llmrec_api_http_requests_total", unmatched) == before + 1


async def test_a_request_past_its_deadline_is_504_and_counted_in_flight_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    running = Api(ApiSettings(max_k=20, http_request_timeout_s=0.2))
    arrived = asyncio.Event()
    in_flight = sample("llmrec_api_http_requests_in_flight", {})

    async def slow(*_: Any, **__: Any) -> Any:
        arrived.set()
        await asyncio.sleep(30)

    monkeypatch.setattr(running.service, "recommend", slow)
    labels = {"method": "GET", "route": "/v1/users/{user_id}/recommendations", "code": "504"}
    before = sample("llmrec_api_http_requests_total", labels)
    try:
        request = asyncio.create_task(running.client.get("/v1/users/u1/recommendations"))
        await asyncio.wait_for(arrived.wait(), 5)
        assert sample("llmrec_api_http_requests_in_flight", {}) == in_flight + 1
        reply = await asyncio.wait_for(request, 5)
    finally:
        await running.client.aclose()
    assert reply.status_code == 504
    assert reply.json() == {
        "code": "DEADLINE_EXCEEDED",
        "message": "not answered within the server's deadline of 0.2 s; retry",
    }
    assert sample("llmrec_api_http_requests_total", labels) == before + 1
    assert sample("llmrec_api_http_requests_in_flight", {}) == in_flight


async def test_a_post_gets_the_publish_timeout_on_top_of_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    running = Api(ApiSettings(max_k=20, http_request_timeout_s=0.1, http_publish_timeout_s=0.3))
    publisher: EventPublisher = running.app.state.llmrec.publisher
    real_publish = publisher.publish
    delay_s = 0.25

    async def slow_publish(events: Any) -> list[str]:
        await asyncio.sleep(delay_s)
        return await real_publish(events)

    monkeypatch.setattr(publisher, "publish", slow_publish)
    try:
        reply = await running.client.post("/v1/events", json=rating("e1"))
        assert reply.status_code == 202, reply.text  # 0.25 s: past 0.1, within 0.1 + 0.3
        delay_s = 1.0
        reply = await running.client.post("/v1/events", json=rating("e2"))
        assert reply.status_code == 504 and reply.json()["code"] == "DEADLINE_EXCEEDED"
        assert "0.4 s" in reply.json()["message"]
    finally:
        await running.client.aclose()


async def test_the_api_process_serves_http_beside_grpc() -> None:
    """ApiServer with http on: a real socket on the same event loop, answering once warmed up."""
    svc, store = service()

    async def factory(_: Settings) -> FakeStore:
        return store

    settings = Settings(api=ApiSettings(port=0, metrics_port=0, http_port=0, max_k=20, grace_period_s=1.0))
    server = ApiServer(settings, store_factory=factory, snapshot_loader=lambda _: svc.snapshot, http=True)
    await server.start()
    try:
        assert server.http_port > 0
        await server.wait_ready(10)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as client:
            reply = await client.get("/v1/users/u1/recommendations", params={"k": 3})
            assert reply.status_code == 200 and reply.json()["strategy"] == "personalized"
            assert (await client.get("/healthz")).json() == {"status": "SERVING"}
    finally:
        await server.stop(0.5)
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as client:
            await client.get("/healthz")


def test_the_committed_openapi_document_is_fresh() -> None:
    assert OPENAPI_FILE.read_text(encoding="utf-8") == document_text(), "run `make openapi`"
    doc = json.loads(document_text())
    assert set(doc["paths"]) == {
        "/v1/users/{user_id}/recommendations",
        "/v1/items/{item_id}/similar",
        "/v1/users/{user_id}/profile",
        "/v1/events",
        "/v1/items",
        "/healthz",
    }
    assert all("422" not in op["responses"] for path in doc["paths"].values() for op in path.values())
    # The response messages carry the proto's field names.
    fields = set(recommender_pb2.RecommendResponse.DESCRIPTOR.fields_by_name)
    assert set(doc["components"]["schemas"]["RecommendResponse"]["properties"]) == fields
    assert doc["components"]["schemas"]["RatingEvent"]["required"].count("event_type") == 1


def test_check_mode_fails_on_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "openapi.json"
    assert main(["--check", str(path)]) == 1
    assert main(["--write-openapi", str(path)]) == 0
    assert main(["--check", str(path)]) == 0
    path.write_text(path.read_text().replace('"v1"', '"v0"'))
    assert main(["--check", str(path)]) == 1
    assert "stale" in capsys.readouterr().err


async def test_sibling_processes_share_the_http_port() -> None:
    """With api.processes > 1 every process binds api.http_port with SO_REUSEPORT, as gRPC's port."""
    first = bind("127.0.0.1", 0, reuse_port=True)
    try:
        port = first.getsockname()[1]
        second = bind("127.0.0.1", port, reuse_port=True)
        second.close()
        with pytest.raises(OSError):
            bind("127.0.0.1", port, reuse_port=False)
    finally:
        first.close()


def test_several_processes_need_a_fixed_http_port() -> None:
    with pytest.raises(ValueError, match="http_port"):
        ApiSettings(port=50051, processes=2, http_port=0)
    ApiSettings(port=50051, processes=2, http_port=0, http_enabled=False)
    assert ApiSettings(host="10.0.0.1", http_port=8081).http_url == "http://10.0.0.1:8081"


def test_schemathesis_over_the_in_memory_app() -> None:
    """The document fuzzed against the app in-process (the integration test does it over the wire): no
    5xx, and every status, content type and body as documented."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    running = Api()
    schema = schemathesis.openapi.from_asgi("/openapi.json", running.app)
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [GenerationMode.POSITIVE] + (
            [GenerationMode.NEGATIVE] if operation.path != "/healthz" else []
        )
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=10,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                case.call_and_validate(checks=checks)

            try:
                check()
            except Exception as exc:
                failures.append(f"{operation.method} {operation.path} {mode.value}: {exc}"[:2000])
    assert not failures, "\n\n".join(failures)
