"""The admin page: a static page (``grpc_api/admin_static/``, no build step, nothing from a CDN) served by
the HTTP API at ``/admin``, and the JSON it reads under ``/v1/admin/``.

- ``GET /v1/admin/status``: the API (serving or not), the store (a ``ping``), Kafka, the served index and
  ranker versions, and the worker's consumer lag per partition (``llmrec.events.lag.partition_lag``);
- ``GET /v1/admin/dead-letters?limit=``: the newest dead letters with their reasons
  (``llmrec.events.dead_letters``);
- ``POST /v1/admin/dead-letters/{partition}/{offset}/replay``: republish that letter's original message to
  its topic (the worker handles it as a new message);
- ``GET /v1/admin/users/{user_id}?k=``: profile, seen items and recommendations with their reasons, from the
  same ``RecommendationService`` calls as ``/v1/users/...`` (the page keeps the previous answer and shows
  what changed);
- ``GET /v1/admin/items?q=&limit=``: items of the served catalogue snapshot by id or title.

The page's "try Recommend" form calls the public ``GET /v1/users/{user_id}/recommendations`` itself.

Access: the JSON routes take the API's own check (``grpc_api.http_api.check_access``: rate limit, then bearer
token); the page and its two assets hold no data and are open, so an operator can type a token into it.
``api.admin_enabled = false`` leaves all of it out.

The routes are kept out of the OpenAPI document (``proto/openapi/llmrec.v1.json``) on purpose: they are the
bundled page's back end, not a client API, and change with the page; the document (and the clients generated
from it) stays the recommendation API.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal, Protocol

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from grpc_api.http_api import (
    HttpState,
    RecommendResponse,
    UserProfile,
    answering,
    check_access,
    encode_profile,
    encode_recommendations,
)
from grpc_api.service import RecommendationService, Snapshot
from llmrec.events.dead_letters import (
    BadDeadLetter,
    DeadLetter,
    Replayed,
    StoredDeadLetter,
    read_dead_letter,
    read_dead_letters,
    replay,
)
from llmrec.events.lag import PartitionLag, partition_lag
from llmrec.events.producer import PublishError
from llmrec.logs import get_logger
from llmrec.settings import KafkaSettings, Settings
from llmrec.store.interface import ProfileReader, StoreUnavailable
from llmrec_client.errors import InvalidRequest, NotFound, Unavailable

log = get_logger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "admin_static"
ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}
# The page runs only its own script and style and talks only to this server.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
KAFKA_TIMEOUT_S = 3.0  # per broker call: a status poll should say "Kafka unavailable" quickly, not hang
STORE_TIMEOUT_S = 3.0
SEEN_SHOWN = 200
PAYLOAD_SHOWN_CHARS = 2000


# -- the ports ------------------------------------------------------------------------------------------


class Broker(Protocol):
    """What the admin page reads from and writes to Kafka (blocking calls; run in a thread)."""

    def lag(self) -> list[PartitionLag]: ...

    def dead_letters(self, limit: int) -> list[StoredDeadLetter]: ...

    def dead_letter(self, partition: int, offset: int) -> StoredDeadLetter | None: ...

    def replay(self, letter: DeadLetter) -> Replayed: ...


@dataclass(frozen=True)
class KafkaBroker:
    """``Broker`` over the real cluster, with the kernel's functions."""

    kafka: KafkaSettings
    timeout_s: float = KAFKA_TIMEOUT_S

    def lag(self) -> list[PartitionLag]:
        return partition_lag(self.kafka, self.kafka.consumed_topics, timeout_s=self.timeout_s)

    def dead_letters(self, limit: int) -> list[StoredDeadLetter]:
        return read_dead_letters(self.kafka, limit, timeout_s=self.timeout_s)

    def dead_letter(self, partition: int, offset: int) -> StoredDeadLetter | None:
        return read_dead_letter(self.kafka, partition, offset, timeout_s=self.timeout_s)

    def replay(self, letter: DeadLetter) -> Replayed:
        return replay(self.kafka, letter, timeout_s=max(self.timeout_s, 10.0))


@dataclass
class AdminBackend:
    """What the admin routes need beyond the HTTP API's own state, on ``app.state.llmrec_admin``."""

    broker: Broker
    store: Callable[[], ProfileReader | None]  # None while the API warms up
    consumer_group: str
    dead_letter_topic: str
    bootstrap: str
    replayable_topics: tuple[str, ...]  # the topics the worker consumes (``dead_letters.replay`` checks too)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def from_settings(cls, settings: Settings, store: Callable[[], ProfileReader | None]) -> AdminBackend:
        kafka = settings.kafka
        return cls(
            broker=KafkaBroker(kafka),
            store=store,
            consumer_group=kafka.consumer_group,
            dead_letter_topic=kafka.dead_letter_topic,
            bootstrap=kafka.bootstrap,
            replayable_topics=kafka.consumed_topics,
        )


# -- the JSON messages ----------------------------------------------------------------------------------


class Component(BaseModel):
    name: str
    ok: bool | None  # None: not known yet (the API is warming up)
    detail: str
    latency_ms: float | None = None


class LagRow(BaseModel):
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int


class Versions(BaseModel):
    model_version: str
    index_version: str
    index_kind: str
    index_rows: int
    dim: int
    servable_items: int
    catalogue_items: int
    hidden_items: int
    ranker_version: str
    ranker: Literal["learned", "fusion"]


class AdminStatus(BaseModel):
    checked_at: datetime
    started_at: datetime
    pid: int
    components: list[Component]
    versions: Versions | None
    consumer_group: str
    lag_total: int | None
    lag: list[LagRow]


class DeadLetterView(BaseModel):
    partition: int
    offset: int
    reason: str
    detail: str
    topic: str
    source_partition: int | None
    source_offset: int | None
    key: str | None
    payload: str | None
    payload_truncated: bool
    failed_at: datetime | None
    replayable: bool


class DeadLetters(BaseModel):
    topic: str
    letters: list[DeadLetterView]


class ReplayAnswer(BaseModel):
    partition: int
    offset: int
    topic: str
    key: str | None
    bytes: int


class SeenView(BaseModel):
    item_id: str
    title: str
    genres: list[str]
    strength: float
    rating: float | None
    event_types: list[str]
    status: str | None
    event_time: datetime


class UserView(BaseModel):
    user_id: str
    profile: UserProfile | None
    seen: list[SeenView]
    seen_limit: int  # at most this many seen items, strongest first
    recommendations: RecommendResponse


class ItemView(BaseModel):
    item_id: str
    title: str
    genres: list[str]
    members: int
    hidden: bool
    served: bool


class ItemSearch(BaseModel):
    query: str
    total_matches: int
    items: list[ItemView]


# -- what the routes compute ----------------------------------------------------------------------------


def versions_of(snap: Snapshot) -> Versions:
    learned = snap.learned
    return Versions(
        model_version=snap.version,
        index_version=snap.index.version,
        index_kind=snap.index.kind,
        index_rows=len(snap.index),
        dim=snap.index.dim,
        servable_items=int(snap.servable.sum()),
        catalogue_items=len(snap.items),
        hidden_items=len(snap.hidden),
        ranker_version=learned.version if learned is not None else snap.ranker.version,
        ranker="learned" if learned is not None else "fusion",
    )


async def _store_component(service: RecommendationService | None) -> Component:
    if service is None:
        return Component(name="store", ok=None, detail="the API is warming up")
    started = time.perf_counter()
    try:
        await asyncio.wait_for(service.ping(), STORE_TIMEOUT_S)
    except (Unavailable, TimeoutError) as exc:
        return Component(name="store", ok=False, detail=str(exc) or "no answer in time")
    latency = round((time.perf_counter() - started) * 1000.0, 2)
    return Component(name="store", ok=True, detail="PostgreSQL answers", latency_ms=latency)


async def _kafka_lag(admin: AdminBackend) -> tuple[Component, list[PartitionLag] | None]:
    started = time.perf_counter()
    try:
        lags = await asyncio.to_thread(admin.broker.lag)
    except Exception as exc:  # KafkaException, a missing topic, a timeout: all mean "not readable now"
        log.warning("admin: kafka not readable", error=str(exc))
        return Component(name="kafka", ok=False, detail=f"{type(exc).__name__}: {exc}"), None
    latency = round((time.perf_counter() - started) * 1000.0, 2)
    return Component(name="kafka", ok=True, detail=admin.bootstrap, latency_ms=latency), lags


def letter_view(stored: StoredDeadLetter, replayable_topics: Sequence[str]) -> DeadLetterView:
    letter = stored.letter
    if letter is None:
        return DeadLetterView(
            partition=stored.partition,
            offset=stored.offset,
            reason="unreadable_record",
            detail=stored.problem or "",
            topic="",
            source_partition=None,
            source_offset=None,
            key=None,
            payload=None,
            payload_truncated=False,
            failed_at=None,
            replayable=False,
        )
    text = letter.payload.decode("utf-8", errors="replace") if letter.payload is not None else None
    return DeadLetterView(
        partition=stored.partition,
        offset=stored.offset,
        reason=letter.reason,
        detail=letter.detail,
        topic=letter.topic,
        source_partition=letter.partition,
        source_offset=letter.offset,
        key=letter.key.decode("utf-8", errors="replace") if letter.key is not None else None,
        payload=text[:PAYLOAD_SHOWN_CHARS] if text is not None else None,
        payload_truncated=text is not None and len(text) > PAYLOAD_SHOWN_CHARS,
        failed_at=letter.failed_at,
        replayable=letter.payload is not None and letter.topic in replayable_topics,
    )


def search(snap: Snapshot, query: str, limit: int) -> ItemSearch:
    """Items whose id or title holds ``query`` (case-insensitive): exact matches first, then ids and titles
    that start with it, then the rest; most members first within each."""
    needle = query.strip().casefold()
    matches: list[tuple[int, int, str, int]] = []
    for key, item in snap.items.items():
        item_id = item.external_id.casefold()
        title = item.title.casefold()
        if needle in (item_id, title):
            rank = 0
        elif title.startswith(needle) or item_id.startswith(needle):
            rank = 1
        elif needle in title or needle in item_id:
            rank = 2
        else:
            continue
        matches.append((rank, -item.members, item.external_id, key))
    matches.sort()
    rows = snap.index.rows([key for *_, key in matches[:limit]]).tolist()
    items = []
    for (*_, key), row in zip(matches[:limit], rows, strict=True):
        item = snap.items[key]
        items.append(
            ItemView(
                item_id=item.external_id,
                title=item.title,
                genres=list(item.genres),
                members=item.members,
                hidden=key in snap.hidden,
                served=row >= 0 and bool(snap.servable[row]),
            )
        )
    return ItemSearch(query=query, total_matches=len(matches), items=items)


async def seen_items(admin: AdminBackend, snap: Snapshot, user_id: str) -> list[SeenView]:
    store = admin.store()
    if store is None:
        raise Unavailable("the API is warming up; retry")
    try:
        seen = await store.seen_items(user_id, SEEN_SHOWN)
    except StoreUnavailable:
        raise Unavailable("the profile database is unavailable; retry") from None
    out = []
    for s in seen:
        item = snap.items.get(s.item_id)
        out.append(
            SeenView(
                item_id=item.external_id if item is not None else f"#{s.item_id}",
                title=item.title if item is not None else "(not in the served catalogue)",
                genres=list(item.genres) if item is not None else [],
                strength=s.strength,
                rating=s.rating,
                event_types=sorted(t.value for t in s.event_types),
                status=s.status.value if s.status is not None else None,
                event_time=s.event_time.astimezone(UTC),
            )
        )
    return out


# -- routes -----------------------------------------------------------------------------------------------


def _http(request: Request) -> HttpState:
    state: HttpState = request.app.state.llmrec
    return state


def _admin(request: Request) -> AdminBackend:
    admin: AdminBackend = request.app.state.llmrec_admin
    return admin


page = APIRouter(include_in_schema=False)
router = APIRouter(prefix="/v1/admin", dependencies=[Depends(check_access)], include_in_schema=False)


@page.get("/admin")
async def admin_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)


@page.get("/admin/static/{name}")
async def admin_asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:  # only the shipped files: never a path from the request
        raise StarletteHTTPException(404, "no such asset")
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers=PAGE_HEADERS)


@router.get("/status", response_model=AdminStatus)
async def status(request: Request) -> AdminStatus:
    state, admin = _http(request), _admin(request)
    service = state.current()
    serving = state.serving()
    api = Component(
        name="api", ok=serving, detail="SERVING" if serving else "NOT_SERVING (warming up or stopping)"
    )
    store, (kafka, lags) = await asyncio.gather(_store_component(service), _kafka_lag(admin))
    return AdminStatus(
        checked_at=datetime.now(UTC),
        started_at=admin.started_at,
        pid=os.getpid(),
        components=[api, store, kafka],
        versions=versions_of(service.snapshot) if service is not None else None,
        consumer_group=admin.consumer_group,
        lag_total=sum(p.lag for p in lags) if lags is not None else None,
        lag=[LagRow(**vars(p)) for p in lags or ()],
    )


@router.get("/dead-letters", response_model=DeadLetters)
async def dead_letters(request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> DeadLetters:
    admin = _admin(request)
    async with answering("admin_dead_letters"):
        try:
            stored = await asyncio.to_thread(admin.broker.dead_letters, limit)
        except Exception as exc:  # as in the status: any broker failure is "Kafka unavailable"
            log.warning("admin: dead letters not readable", error=str(exc))
            raise Unavailable(f"the dead-letter topic cannot be read: {type(exc).__name__}") from None
    letters = [letter_view(s, admin.replayable_topics) for s in stored]
    return DeadLetters(topic=admin.dead_letter_topic, letters=letters)


@router.post("/dead-letters/{partition}/{offset}/replay", response_model=ReplayAnswer)
async def replay_dead_letter(request: Request, partition: int, offset: int) -> ReplayAnswer:
    admin = _admin(request)
    async with answering("admin_replay"):
        try:
            stored = await asyncio.to_thread(admin.broker.dead_letter, partition, offset)
        except Exception as exc:
            log.warning("admin: dead letter not readable", error=str(exc))
            raise Unavailable(f"the dead-letter topic cannot be read: {type(exc).__name__}") from None
        if stored is None:
            raise NotFound(f"no dead letter at partition {partition}, offset {offset}")
        if stored.letter is None:
            raise InvalidRequest(f"the record is not a dead letter: {stored.problem}")
        try:
            done = await asyncio.to_thread(admin.broker.replay, stored.letter)
        except BadDeadLetter as exc:
            raise InvalidRequest(str(exc)) from None
        except PublishError:
            raise Unavailable("Kafka did not acknowledge the replay; retry") from None
    log.info(
        "dead letter replayed",
        partition=partition,
        offset=offset,
        topic=done.topic,
        reason=stored.letter.reason,
        source_offset=stored.letter.offset,
    )
    return ReplayAnswer(partition=partition, offset=offset, topic=done.topic, key=done.key, bytes=done.size)


@router.get("/users/{user_id:llmrec_id}", response_model=UserView)
async def inspect_user(
    request: Request, user_id: str, k: Annotated[int, Query(ge=0, le=100)] = 10
) -> UserView:
    state, admin = _http(request), _admin(request)
    async with answering("admin_user"):
        service = state.service()
        try:
            profile: UserProfile | None = encode_profile(await service.user_profile(user_id))
        except NotFound:
            profile = None
        answer = await service.recommend(user_id, k)
        seen = await seen_items(admin, service.snapshot, user_id)
    return UserView(
        user_id=user_id,
        profile=profile,
        seen=seen,
        seen_limit=SEEN_SHOWN,
        recommendations=encode_recommendations(answer),
    )


@router.get("/items", response_model=ItemSearch)
async def search_items(
    request: Request,
    q: Annotated[str, Query(min_length=1, max_length=256)],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ItemSearch:
    async with answering("admin_items"):
        snap = _http(request).service().snapshot
        # A scan of the catalogue: off the event loop, so a 100k-item search does not stall other requests.
        return await asyncio.to_thread(search, snap, q, limit)


def install(app: FastAPI, admin: AdminBackend) -> None:
    """Serve the admin page and its JSON on ``app`` (made by ``grpc_api.http_api.create_app``)."""
    app.state.llmrec_admin = admin
    app.include_router(page)
    app.include_router(router)
