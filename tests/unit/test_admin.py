"""The admin page's JSON (grpc_api/admin.py) over an in-memory service and a fake broker: status with
versions and consumer lag, dead letters and their replay, the user inspector, item search, access control
and the page itself; and the kernel's dead-letter record (llmrec/events/dead_letters.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from grpc_api import admin
from grpc_api.http_api import create_app, encode_profile, encode_recommendations, openapi_document
from grpc_api.server import ApiServer
from grpc_api.service import RecommendationService, Snapshot
from llmrec.events.dead_letters import (
    BadDeadLetter,
    DeadLetter,
    Replayed,
    StoredDeadLetter,
    replay,
)
from llmrec.events.lag import PartitionLag
from llmrec.events.producer import PublishError
from llmrec.settings import ApiSettings, KafkaSettings, Settings
from llmrec.store.fake import FakeStore
from ranker.retrieval import ItemIndex
from tests.unit.test_http_endpoints import ITEMS, VECTORS, FakeKafka, service

KAFKA = KafkaSettings(bootstrap="127.0.0.1:1", topic_prefix="t")
FAILED_AT = datetime(2024, 5, 2, 8, 30, tzinfo=UTC)


def letter(offset: int, reason: str = "unknown_item", payload: bytes | None = b'{"x":1}') -> DeadLetter:
    return DeadLetter(
        reason=reason,
        detail=f"detail {offset}",
        topic=KAFKA.ratings_topic,
        partition=1,
        offset=offset,
        key=b"alice",
        payload=payload,
        failed_at=FAILED_AT,
    )


@dataclass
class FakeBroker:
    """``admin.Broker`` in memory; ``down`` makes every call raise as an unreachable cluster does."""

    lags: list[PartitionLag] = field(default_factory=list)
    letters: list[StoredDeadLetter] = field(default_factory=list)
    replayed: list[DeadLetter] = field(default_factory=list)
    down: bool = False
    replay_error: Exception | None = None

    def _check(self) -> None:
        if self.down:
            raise RuntimeError("KafkaError{code=_TRANSPORT}")

    def lag(self) -> list[PartitionLag]:
        self._check()
        return list(self.lags)

    def dead_letters(self, limit: int) -> list[StoredDeadLetter]:
        self._check()
        return self.letters[:limit]

    def dead_letter(self, partition: int, offset: int) -> StoredDeadLetter | None:
        self._check()
        return next((s for s in self.letters if (s.partition, s.offset) == (partition, offset)), None)

    def replay(self, letter: DeadLetter) -> Replayed:
        self._check()
        if self.replay_error is not None:
            raise self.replay_error
        self.replayed.append(letter)
        key = letter.key.decode() if letter.key is not None else None
        return Replayed(letter.topic, key, len(letter.payload or b""))


class Admin:
    def __init__(self, api: ApiSettings | None = None) -> None:
        self.service, self.store = service()
        self.current: RecommendationService | None = self.service
        self.broker = FakeBroker(
            lags=[
                PartitionLag(KAFKA.ratings_topic, 0, 10, 12, 2),
                PartitionLag(KAFKA.ratings_topic, 1, None, 3, 3),
            ],
            letters=[
                StoredDeadLetter(0, 7, letter(41)),
                StoredDeadLetter(2, 3, letter(40, "schema_violation", None)),
                StoredDeadLetter(1, 0, None, "not a dead-letter record: JSONDecodeError"),
            ],
        )
        self.app = create_app(api or ApiSettings(max_k=20), service=lambda: self.current)
        admin.install(
            self.app,
            admin.AdminBackend(
                broker=self.broker,
                store=lambda: self.store if self.current is not None else None,
                consumer_group="llmrec-worker",
                dead_letter_topic=KAFKA.dead_letter_topic,
                bootstrap=KAFKA.bootstrap,
                replayable_topics=KAFKA.consumed_topics,
            ),
        )
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://api")


@pytest.fixture
async def running() -> AsyncIterator[Admin]:
    app = Admin()
    yield app
    await app.client.aclose()


async def test_status_shows_components_versions_and_lag(running: Admin) -> None:
    body = (await running.client.get("/v1/admin/status")).json()
    components = {c["name"]: c for c in body["components"]}
    assert [components[n]["ok"] for n in ("api", "store", "kafka")] == [True, True, True]
    snap = running.service.snapshot
    assert body["versions"]["model_version"] == snap.version
    assert body["versions"]["index_version"] == snap.index.version
    assert (
        body["versions"]["ranker"] == "fusion" and body["versions"]["ranker_version"] == snap.ranker.version
    )
    assert body["versions"]["servable_items"] == len(ITEMS) == body["versions"]["catalogue_items"]
    assert body["consumer_group"] == "llmrec-worker" and body["lag_total"] == 5
    assert body["lag"][1] == {
        "topic": KAFKA.ratings_topic,
        "partition": 1,
        "committed": None,
        "end": 3,
        "lag": 3,
    }


async def test_status_says_what_is_down_and_still_answers(running: Admin) -> None:
    running.broker.down = True
    running.store.unavailable = True
    body = (await running.client.get("/v1/admin/status")).json()
    components = {c["name"]: c for c in body["components"]}
    assert components["kafka"]["ok"] is False and "_TRANSPORT" in components["kafka"]["detail"]
    assert components["store"]["ok"] is False
    assert body["lag_total"] is None and body["lag"] == []

    running.current = None  # warming up
    body = (await running.client.get("/v1/admin/status")).json()
    components = {c["name"]: c for c in body["components"]}
    assert components["api"]["ok"] is False and components["store"]["ok"] is None
    assert body["versions"] is None


async def test_dead_letters_are_listed_with_their_reasons(running: Admin) -> None:
    body = (await running.client.get("/v1/admin/dead-letters", params={"limit": 10})).json()
    assert body["topic"] == KAFKA.dead_letter_topic
    first, no_payload, unreadable = body["letters"]
    assert first["reason"] == "unknown_item" and first["detail"] == "detail 41"
    assert (first["partition"], first["offset"], first["source_offset"]) == (0, 7, 41)
    assert first["key"] == "alice" and first["payload"] == '{"x":1}' and first["replayable"] is True
    assert no_payload["reason"] == "schema_violation" and no_payload["replayable"] is False
    assert unreadable["reason"] == "unreadable_record" and unreadable["replayable"] is False


async def test_replay_republishes_the_letter(running: Admin) -> None:
    reply = await running.client.post("/v1/admin/dead-letters/0/7/replay")
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "partition": 0,
        "offset": 7,
        "topic": KAFKA.ratings_topic,
        "key": "alice",
        "bytes": 7,
    }
    assert running.broker.replayed == [letter(41)]


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v1/admin/dead-letters/9/9/replay", 404, "NOT_FOUND"),
        ("/v1/admin/dead-letters/1/0/replay", 400, "INVALID_ARGUMENT"),  # unreadable record
        ("/v1/admin/dead-letters/x/0/replay", 400, "INVALID_ARGUMENT"),
    ],
)
async def test_replay_refusals(running: Admin, path: str, status: int, code: str) -> None:
    reply = await running.client.post(path)
    assert reply.status_code == status and reply.json()["code"] == code
    assert running.broker.replayed == []


async def test_replay_failures_map_to_statuses(running: Admin) -> None:
    running.broker.replay_error = BadDeadLetter("no payload")
    assert (await running.client.post("/v1/admin/dead-letters/0/7/replay")).status_code == 400
    running.broker.replay_error = PublishError("x", delivered=0, failed=1, pending=0, errors=[])
    assert (await running.client.post("/v1/admin/dead-letters/0/7/replay")).json()["code"] == "UNAVAILABLE"
    running.broker.down = True
    assert (await running.client.get("/v1/admin/dead-letters")).status_code == 503


async def test_user_inspector_shows_the_service_answers_and_seen_items(running: Admin) -> None:
    body = (await running.client.get("/v1/admin/users/u1", params={"k": 5})).json()
    profile = encode_profile(await running.service.user_profile("u1")).model_dump(mode="json")
    recs = encode_recommendations(await running.service.recommend("u1", 5)).model_dump(mode="json")
    assert body["profile"] == profile and body["recommendations"] == recs
    assert recs["strategy"] == "personalized"
    by_id = {s["item_id"]: s for s in body["seen"]}
    assert set(by_id) == {ITEMS[i - 1].external_id for i in (3, 6, 9)}
    assert by_id[ITEMS[2].external_id]["title"] == ITEMS[2].title
    assert by_id[ITEMS[2].external_id]["rating"] == 9.0

    unknown = (await running.client.get("/v1/admin/users/nobody")).json()
    assert unknown["profile"] is None and unknown["seen"] == []
    assert unknown["recommendations"]["strategy"] == "cold_start"
    bad = await running.client.get("/v1/admin/users/%20bad")
    assert bad.status_code == 400 and bad.json()["code"] == "INVALID_ARGUMENT"
    running.current = None
    assert (await running.client.get("/v1/admin/users/u1")).status_code == 503


async def test_item_search_by_id_and_title(running: Admin) -> None:
    wanted = ITEMS[11]
    body = (await running.client.get("/v1/admin/items", params={"q": wanted.external_id})).json()
    assert body["items"][0]["item_id"] == wanted.external_id and body["items"][0]["served"] is True
    body = (await running.client.get("/v1/admin/items", params={"q": "show 2", "limit": 3})).json()
    # "Show 2" and "Show 20".."Show 29": the exact title first, then the most members first.
    assert body["total_matches"] == 11 and len(body["items"]) == 3
    assert [i["title"] for i in body["items"]] == ["Show 2", "Show 29", "Show 28"]
    assert (await running.client.get("/v1/admin/items")).status_code == 400  # q is required


def test_item_search_flags_hidden_items() -> None:
    hidden = ITEMS[0]
    snap = Snapshot(ItemIndex.build([i.key for i in ITEMS], VECTORS), ITEMS, hidden=frozenset({hidden.key}))
    found = admin.search(snap, hidden.title, 5).items
    assert found[0].item_id == hidden.external_id and found[0].hidden and not found[0].served


async def test_the_page_is_open_and_the_json_needs_a_token(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("ops:s3cret\n")
    app = Admin(ApiSettings(auth_tokens_file=tokens))
    try:
        page = await app.client.get("/admin")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for name in ("app.js", "style.css"):
            asset = await app.client.get(f"/admin/static/{name}")
            assert asset.status_code == 200 and asset.content
        assert (await app.client.get("/admin/static/..%2Fadmin.py")).status_code == 404
        assert (await app.client.get("/admin/static/index.html")).status_code == 404
        for path in ("/v1/admin/status", "/v1/admin/dead-letters", "/v1/admin/users/u1"):
            assert (await app.client.get(path)).status_code == 401
        assert (await app.client.post("/v1/admin/dead-letters/0/7/replay")).status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert (await app.client.get("/v1/admin/status", headers=good)).status_code == 200
    finally:
        await app.client.aclose()


def test_the_page_references_only_its_own_assets() -> None:
    html = (admin.STATIC_DIR / "index.html").read_text()
    assert "http://" not in html and "https://" not in html
    for name in admin.ASSETS:
        assert f"/admin/static/{name}" in html
        assert (admin.STATIC_DIR / name).is_file()


def test_admin_routes_stay_out_of_the_openapi_document(running: Admin) -> None:
    paths = openapi_document(running.app)["paths"]
    assert not [p for p in paths if "admin" in p]
    assert "/v1/users/{user_id}/recommendations" in paths


# -- the kernel's dead-letter record and replay ----------------------------------------------------------


def test_a_dead_letter_reads_back_from_its_json() -> None:
    original = DeadLetter(
        "invalid_utf8", "bad bytes", KAFKA.ratings_topic, 2, 9, b"k", b"\xff\xfe", FAILED_AT
    )
    assert DeadLetter.from_json(original.to_json(), b"k") == original
    record = json.loads(original.to_json())
    assert base64.b64decode(record["payload_base64"]) == b"\xff\xfe"
    with pytest.raises(BadDeadLetter):
        DeadLetter.from_json(b'{"reason": "x"}')
    with pytest.raises(BadDeadLetter):
        DeadLetter.from_json(b"[1]")


def test_replay_publishes_the_exact_bytes_to_the_original_topic() -> None:
    kafka = FakeKafka()
    done = replay(KAFKA, letter(5, payload=b"\x00raw"), client=kafka)
    assert kafka.messages == [(KAFKA.ratings_topic, b"alice", b"\x00raw")]
    assert done == Replayed(KAFKA.ratings_topic, "alice", 4)


def test_replay_refuses_other_topics_and_empty_letters() -> None:
    kafka = FakeKafka()
    elsewhere = DeadLetter("x", "", "other.topic", 0, 0, None, b"{}", FAILED_AT)
    with pytest.raises(BadDeadLetter, match="not a topic the worker consumes"):
        replay(KAFKA, elsewhere, client=kafka)
    with pytest.raises(BadDeadLetter, match="no payload"):
        replay(KAFKA, letter(1, payload=None), client=kafka)
    assert kafka.messages == []


def test_replay_raises_when_kafka_does_not_acknowledge() -> None:
    with pytest.raises(PublishError):
        replay(KAFKA, letter(1), client=FakeKafka(fail={KAFKA.ratings_topic}), timeout_s=0.1)


@pytest.mark.parametrize("enabled", [True, False])
async def test_the_api_process_serves_the_admin_page_unless_turned_off(enabled: bool) -> None:
    svc, store = service()

    async def factory(_: Settings) -> FakeStore:
        return store

    api = ApiSettings(port=0, metrics_port=0, http_port=0, grace_period_s=1.0, admin_enabled=enabled)
    server = ApiServer(
        Settings(api=api), store_factory=factory, snapshot_loader=lambda _: svc.snapshot, http=True
    )
    await server.start()
    try:
        await server.wait_ready(10)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as client:
            assert (await client.get("/admin")).status_code == (200 if enabled else 404)
            reply = await client.get("/v1/admin/users/u1", params={"k": 3})
            assert reply.status_code == (200 if enabled else 404)
            if enabled:  # seen items come from the server's own store
                assert len(reply.json()["seen"]) == 3
    finally:
        await server.stop(0.5)
