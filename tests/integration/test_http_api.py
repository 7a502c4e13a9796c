"""The HTTP/JSON API against a running API (grpc_api.server.ApiServer with HTTP on, real PostgreSQL and
Kafka, a published index over the sample catalogue): its answers equal gRPC's for the same requests, POSTed
events reach their Kafka topics, and schemathesis fuzzes the served OpenAPI document with no 5xx."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import numpy as np
import pytest
from api_process import ApiProcess, publish_sample_index
from confluent_kafka import Consumer
from google.protobuf import json_format
from hypothesis import HealthCheck, Phase, given, settings
from pki import LOCALHOST_SERVER, make_ca, make_leaf

from deploy.process import free_port_run, free_ports
from grpc_api.processes import wait_until_all_serving
from grpc_api.server import ApiServer
from llmrec.catalogue import Catalogue
from llmrec.events.schema import EventType
from llmrec.events.topics import ensure_system_topics
from llmrec.events.validation import parse_event, parse_item_event
from llmrec.metrics_http import sample_value, scrape
from llmrec.preference_state import PreferenceState
from llmrec.settings import ApiSettings, KafkaSettings, Settings
from llmrec.store import LedgerEntry, migrate
from llmrec.store.fake import FakeStore
from llmrec.store.postgres import PostgresStore
from llmrec_client.v1 import recommender_pb2, recommender_pb2_grpc
from ranker.preferences import Contribution, DecayPolicy, SignalWeights, apply_contributions, rating_signal
from tests.synthetic import genre_embeddings
from tests.unit.test_http_endpoints import service as in_memory_service

pytestmark = pytest.mark.integration

DIM = 64  # publish_sample_index's
T0 = datetime(2024, 3, 1, tzinfo=UTC)
FUZZ_EXAMPLES = 30  # per operation and mode


@dataclass
class Running:
    server: ApiServer
    settings: Settings
    catalogue: Catalogue
    fan: str  # rated five titles of one genre
    fan_seen: list[str]
    http: httpx.AsyncClient
    grpc: recommender_pb2_grpc.RecommenderStub

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"


def _updater(vectors: dict[int, np.ndarray]):  # type: ignore[no-untyped-def]
    def update(current: dict[str, PreferenceState], new: Sequence[LedgerEntry]) -> dict[str, PreferenceState]:
        by_user: dict[str, list[Contribution]] = {}
        for e in new:
            by_user.setdefault(e.user_id, []).append(
                Contribution(vectors[e.item_id], e.strength, e.event_time.timestamp())
            )
        return {
            user: apply_contributions(current.get(user, PreferenceState.empty(DIM)), contribs, DecayPolicy())
            for user, contribs in by_user.items()
        }

    return update


@pytest.fixture(scope="module")
async def running(settings_factory: Any, postgres_dsn: str) -> AsyncIterator[Running]:
    settings: Settings = settings_factory(
        api=ApiSettings(port=0, metrics_port=0, http_port=0, grace_period_s=1.0),
    )
    ensure_system_topics(settings.kafka)
    catalogue = publish_sample_index(settings, dim=DIM)
    embeddings = genre_embeddings([i.genres or ("none",) for i in catalogue], dim=DIM, seed=11)
    vectors = dict(zip(catalogue.keys, embeddings, strict=True))

    migrate(postgres_dsn)
    fan = f"fan-{uuid.uuid4().hex[:8]}"
    liked = sorted((i for i in catalogue if "Sci-Fi" in i.genres), key=lambda i: (-i.members, i.item_id))[:5]
    entries = [
        LedgerEntry(
            event_id=f"{fan}-{n}",
            user_id=fan,
            item_id=item.key,
            event_type=EventType.RATING,
            event_time=T0 + timedelta(days=n),
            strength=rating_signal(9.0, SignalWeights()),
            rating=9.0,
        )
        for n, item in enumerate(liked)
    ]
    async with PostgresStore(postgres_dsn) as store:
        await store.apply_batch(entries, _updater(vectors))

    server = ApiServer(settings, http=True)
    await server.start()
    await server.wait_ready(120)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}", timeout=10.0)
    try:
        yield Running(
            server,
            settings,
            catalogue,
            fan,
            [i.external_id for i in liked],
            http,
            recommender_pb2_grpc.RecommenderStub(channel),
        )
    finally:
        await http.aclose()
        await channel.close()
        await server.stop(1.0)


def as_message(body: dict[str, Any], message: Any) -> Any:
    """An HTTP answer as the gRPC response message; a field name unknown to the proto fails."""
    return json_format.ParseDict(body, message)


async def test_recommend_answers_are_equal(running: Running) -> None:
    cases: list[tuple[str, dict[str, Any]]] = [
        (running.fan, {"k": 10}),
        (running.fan, {"k": 5, "include_genres": ["sci-fi"], "include_seen": True}),
        (running.fan, {"k": 7, "exclude_genres": ["Comedy", "Drama"]}),
        (f"nobody-{uuid.uuid4().hex[:6]}", {}),
        (f"nobody-{uuid.uuid4().hex[:6]}", {"k": 3, "include_genres": ["Romance"]}),
    ]
    for user, params in cases:
        reply = await running.http.get(f"/v1/users/{quote(user, safe='')}/recommendations", params=params)
        assert reply.status_code == 200, reply.text
        genres = recommender_pb2.GenreFilter(
            include=params.get("include_genres", []), exclude=params.get("exclude_genres", [])
        )
        expected = await running.grpc.Recommend(
            recommender_pb2.RecommendRequest(
                user_id=user,
                k=params.get("k", 0),
                genres=genres,
                include_seen=params.get("include_seen", False),
            ),
            timeout=10,
        )
        assert as_message(reply.json(), recommender_pb2.RecommendResponse()) == expected, (user, params)
        assert reply.json()["model_version"] == expected.model_version != ""
    personalised = await running.http.get(f"/v1/users/{running.fan}/recommendations")
    assert personalised.json()["strategy"] == "personalized"


async def test_similar_and_profile_answers_are_equal(running: Running) -> None:
    for item_id in [*running.fan_seen[:3], next(iter(running.catalogue)).external_id]:
        reply = await running.http.get(f"/v1/items/{quote(item_id, safe='')}/similar", params={"k": 6})
        assert reply.status_code == 200, reply.text
        expected = await running.grpc.SimilarItems(
            recommender_pb2.SimilarItemsRequest(item_id=item_id, k=6), timeout=10
        )
        assert as_message(reply.json(), recommender_pb2.SimilarItemsResponse()) == expected
    reply = await running.http.get(f"/v1/users/{running.fan}/profile")
    assert reply.status_code == 200 and reply.json()["ratings"] == 5
    expected_profile = await running.grpc.GetUserProfile(
        recommender_pb2.GetUserProfileRequest(user_id=running.fan), timeout=10
    )
    assert as_message(reply.json(), recommender_pb2.UserProfile()) == expected_profile


async def test_errors_carry_the_grpc_codes_and_messages(running: Running) -> None:
    calls = [
        (
            f"/v1/items/{quote('mal:99999999', safe='')}/similar",
            {},
            running.grpc.SimilarItems(
                recommender_pb2.SimilarItemsRequest(item_id="mal:99999999"), timeout=10
            ),
        ),
        (
            "/v1/users/stranger-0/profile",
            {},
            running.grpc.GetUserProfile(
                recommender_pb2.GetUserProfileRequest(user_id="stranger-0"), timeout=10
            ),
        ),
        (
            f"/v1/users/{running.fan}/recommendations",
            {"k": 1000},
            running.grpc.Recommend(recommender_pb2.RecommendRequest(user_id=running.fan, k=1000), timeout=10),
        ),
    ]
    for path, params, grpc_call in calls:
        reply = await running.http.get(path, params=params)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await grpc_call
        assert reply.json() == {"code": info.value.code().name, "message": info.value.details()}
        assert reply.status_code in (400, 404)


def consume(kafka: KafkaSettings, topics: list[str], expected: int, timeout_s: float = 60.0) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": f"check-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe(topics)
    found = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                found.append(message)
    finally:
        consumer.close()
    return found


async def test_posted_events_reach_kafka(running: Running) -> None:
    """Runs before the fuzzing below (which publishes into the same topics): exactly these come back."""
    user = f"poster-{uuid.uuid4().hex[:6]}"
    item = running.fan_seen[0]
    when = datetime.now(UTC).replace(microsecond=0).isoformat()
    events = [
        {
            "event_type": "rating",
            "event_id": f"{user}-r",
            "user_id": user,
            "item_id": item,
            "event_time": when,
            "rating": 7,
        },
        {
            "event_type": "review",
            "event_id": f"{user}-v",
            "user_id": user,
            "item_id": item,
            "event_time": when,
            "text": "Clever and warm.",
        },
    ]
    reply = await running.http.post("/v1/events", json=events)
    assert reply.status_code == 202, reply.text
    kafka = running.settings.kafka
    assert reply.json() == {
        "accepted": 2,
        "event_ids": [f"{user}-r", f"{user}-v"],
        "topics": sorted([kafka.ratings_topic, kafka.reviews_topic]),
    }
    upsert = {
        "op": "upsert",
        "event_id": f"{user}-i",
        "item_id": "sku-http-1",
        "event_time": when,
        "title": "Tea",
    }
    assert (await running.http.post("/v1/items", json=upsert)).status_code == 202
    bad = await running.http.post("/v1/events", json=[events[0], {**events[1], "text": " "}])
    assert bad.status_code == 400 and bad.json()["rejected"][0]["index"] == 1

    topics = [kafka.ratings_topic, kafka.reviews_topic, kafka.items_topic]
    messages = await asyncio.to_thread(consume, kafka, topics, 3)
    by_topic = {m.topic(): m for m in messages}
    assert set(by_topic) == set(topics)
    for topic, sent in [(kafka.ratings_topic, events[0]), (kafka.reviews_topic, events[1])]:
        message = by_topic[topic]
        assert message.key() == user.encode()
        assert parse_event(message.value()) == parse_event(json.dumps(sent).encode())
    item_message = by_topic[kafka.items_topic]
    assert item_message.key() == b"sku-http-1"
    assert parse_item_event(item_message.value()) == parse_item_event(json.dumps(upsert).encode())


def fuzz(base_url: str) -> tuple[list[str], dict[str, int]]:
    """schemathesis over the served document: positive and negative cases of every operation, with the
    checks that need no knowledge of the data (no 5xx; status, content type and body as documented)."""
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    failures: list[str] = []
    calls: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and operation.path == "/healthz":
                continue  # nothing to negate

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=FUZZ_EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                key = f"{operation.method.upper()} {operation.path}"  # noqa: B023
                calls[key] = calls.get(key, 0) + 1
                case.call_and_validate(base_url=base_url, checks=checks, timeout=30)

            try:
                check()
            except Exception as exc:
                failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}"[:3000])
    return failures, calls


async def test_schemathesis_finds_no_server_error(running: Running) -> None:
    started = time.monotonic()
    failures, calls = await asyncio.to_thread(fuzz, running.base_url)
    assert not failures, "\n\n".join(failures)
    print("schemathesis calls per operation:", calls)
    assert len(calls) == 6 and sum(calls.values()) >= 4 * FUZZ_EXAMPLES, calls
    assert time.monotonic() - started < 240


async def test_tls_mtls_and_tokens_guard_the_http_port(tmp_path: Path) -> None:
    """The gRPC port's TLS files and tokens file guard the HTTP port too (an in-memory service behind)."""
    ca = make_ca(tmp_path, "test-ca")
    cert, key = make_leaf(tmp_path, "server", ca, LOCALHOST_SERVER)
    good = make_leaf(tmp_path, "client-a", ca, "extendedKeyUsage=clientAuth")
    rogue = make_leaf(tmp_path, "rogue", make_ca(tmp_path, "other-ca"), "extendedKeyUsage=clientAuth")
    tokens = tmp_path / "tokens"
    tokens.write_text("shop:s3cret\n")
    api = ApiSettings(
        port=0,
        metrics_port=0,
        http_port=0,
        max_k=20,
        grace_period_s=0.5,
        tls_cert_file=cert,
        tls_key_file=key,
        tls_client_ca_file=ca[0],
        auth_tokens_file=tokens,
    )
    svc, store = in_memory_service()

    async def factory(_: Settings) -> FakeStore:
        return store

    server = ApiServer(
        Settings(api=api), store_factory=factory, snapshot_loader=lambda _: svc.snapshot, http=True
    )
    await server.start()
    await server.wait_ready(30)

    def context(client: tuple[Path, Path] | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(ca[0]))
        if client is not None:
            ctx.load_cert_chain(str(client[0]), str(client[1]))
        return ctx

    url = f"https://127.0.0.1:{server.http_port}/v1/users/u1/profile"
    token = {"Authorization": "Bearer s3cret"}
    try:
        async with httpx.AsyncClient(verify=context(good)) as client:
            assert (await client.get(url, headers=token)).status_code == 200
            refused = await client.get(url)
            assert refused.status_code == 401 and refused.json()["code"] == "UNAUTHENTICATED"
        for client_cert in (None, rogue):
            with pytest.raises(httpx.HTTPError):
                async with httpx.AsyncClient(verify=context(client_cert)) as client:
                    await client.get(url, headers=token)
        with pytest.raises(httpx.HTTPError):
            async with httpx.AsyncClient() as client:
                await client.get(url.replace("https:", "http:"), headers=token)
    finally:
        await server.stop(0.5)


def test_llmrec_serve_answers_http_from_every_process(settings_factory: Any, postgres_dsn: str) -> None:
    """``llmrec serve`` with api.processes=2: both processes bind api.http_port (SO_REUSEPORT) and answer
    HTTP; SIGTERM stops the group cleanly."""
    port, http_port = free_ports(2)
    metrics_port = free_port_run(2)  # child i serves metrics on metrics_port + i
    settings: Settings = settings_factory(
        api=ApiSettings(
            host="127.0.0.1",
            port=port,
            http_port=http_port,
            metrics_port=metrics_port,
            grace_period_s=2.0,
            processes=2,
        )
    )
    publish_sample_index(settings, dim=DIM)
    migrate(postgres_dsn)
    api = ApiProcess(settings, name="api-http-group")
    api.start()
    try:
        wait_until_all_serving("127.0.0.1", metrics_port, 2)
        for n in range(40):  # a connection each: the kernel spreads connections, not requests
            with httpx.Client(base_url=settings.api.http_url, timeout=10.0) as client:
                reply = client.get(f"/v1/users/http-group-{n}/recommendations", params={"k": 3})
                assert reply.status_code == 200 and reply.json()["strategy"] == "cold_start", reply.text
        series = (
            'llmrec_api_http_requests_total{code="200",method="GET",'
            'route="/v1/users/{user_id}/recommendations"}'
        )
        answered = [sample_value(scrape(metrics_port + i, "127.0.0.1"), series) or 0.0 for i in range(2)]
        assert sum(answered) == 40 and min(answered) > 0, answered
    finally:
        assert api.stop() == 0, api.log()[-4000:]
