"""A catalogue that is not anime, brought through the items topic to a running stack (Kafka, PostgreSQL,
Triton, a worker and an API process): its items are embedded by the real encoder, stored, and served by
``SimilarItems`` within seconds, without a rebuild or a restart; a rating of a new item is applied; hidden
and deleted items leave every answer; a fresh API process comes back with the same catalogue, and then
follows a live change together with the stack's API."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial

import numpy as np
import pytest

from deploy import stack
from encoder_triton.client import encode_corpus
from grpc_api.server import ApiServer
from jobs.build_index import build_index
from llmrec.catalogue import Catalogue, load_catalogue
from llmrec.data_source import sample_source
from llmrec.events.lag import wait_until_consumed
from llmrec.events.producer import EventProducer
from llmrec.events.schema import (
    AnyItemEvent,
    DeleteItemEvent,
    HideItemEvent,
    RatingEvent,
    UnhideItemEvent,
    UpsertItemEvent,
)
from llmrec.events.topics import ensure_system_topics
from llmrec.settings import Settings, TritonSettings
from llmrec.store import migrate
from llmrec.store.postgres import PostgresStore
from llmrec_client.client import RecommenderClient
from llmrec_client.errors import NotFound

pytestmark = pytest.mark.integration

# A bookshop: three shelves whose texts differ in what they are about, so the encoder's neighbours of a
# book are books of its shelf.
SHELVES = {
    "gardening": "A practical guide to growing vegetables, pruning fruit trees and keeping soil healthy",
    "baking": "Recipes for sourdough bread, cakes and pastries, with notes on flour, yeast and ovens",
    "astronomy": "An introduction to stars, planets and galaxies, telescopes and the night sky",
}
PER_SHELF = 40
VISIBLE_WITHIN_S = 15.0  # generous for a loaded CI machine; bench/ measures the real figure
T0 = datetime(2025, 5, 1, tzinfo=UTC)


def book(shelf: str, n: int, run: str, event: str = "v1") -> UpsertItemEvent:
    return UpsertItemEvent(
        event_id=f"{run}-{shelf}-{n}-{event}",
        item_id=f"{run}:book:{shelf}-{n}",
        event_time=T0 + timedelta(minutes=n),
        title=f"{shelf.title()} volume {n}",
        text=f"{SHELVES[shelf]}. Volume {n} of the {shelf} series.",
        categories=(shelf,),
        attributes={"pages": 100 + n},
    )


def small_catalogue() -> Catalogue:
    catalogue = load_catalogue(sample_source())
    return catalogue.subset([item.item_id for item in catalogue if item.has_synopsis][:60])


@pytest.fixture(scope="module")
def running(settings_factory: Callable[..., Settings], triton_settings: TritonSettings) -> Iterator[Settings]:
    settings = settings_factory(triton=triton_settings)
    migrate(settings.postgres.dsn.get_secret_value())
    ensure_system_topics(settings.kafka)

    def embed(texts: Sequence[str]) -> np.ndarray:
        return encode_corpus(
            texts, settings.triton.grpc_url, settings.triton.model_name, batch_size=len(texts), progress=False
        )

    build_index(settings, small_catalogue(), embed, progress=False)
    stack.up(settings, only=("worker", "api"), quiet=True)
    try:
        yield settings
    finally:
        stack.down(settings, quiet=True)


def publish_items(settings: Settings, events: Sequence[AnyItemEvent]) -> None:
    with EventProducer(settings.kafka) as producer:
        for event in events:
            producer.publish_item(event)
        producer.flush(30)


def similar_or_none(client: RecommenderClient, item_id: str, k: int = 10) -> list[str] | None:
    try:
        return [i.item_id for i in client.similar_items(item_id, k=k).items]
    except NotFound:
        return None


def serves(client: RecommenderClient, item_id: str) -> bool:
    return similar_or_none(client, item_id) is not None


def wait_for(condition: Callable[[], bool], timeout_s: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"not true after {timeout_s} s")
        time.sleep(0.1)
    return time.monotonic() - started


def test_a_bookshop_catalogue_is_served_live(running: Settings) -> None:
    settings = running
    run = f"shop{uuid.uuid4().hex[:6]}"
    books = [book(shelf, n, run) for shelf in SHELVES for n in range(PER_SHELF)]
    with RecommenderClient(settings.api.target, timeout_s=10) as client:
        publish_items(settings, books)
        probe = books[0].item_id
        waited = wait_for(lambda: similar_or_none(client, probe) is not None, 120)
        wait_until_consumed(settings.kafka, timeout_s=120)

        # A book's neighbours are books of its shelf (the encoder read the texts), never anime.
        for shelf in SHELVES:
            answer = similar_or_none(client, f"{run}:book:{shelf}-3", k=10)
            assert answer is not None
            assert sum(f":book:{shelf}-" in i for i in answer) >= 8, (shelf, answer)

        # One more book, published now: served within the bound.
        late = book("astronomy", 999, run)
        publish_items(settings, [late])
        visible_s = wait_for(lambda: similar_or_none(client, late.item_id) is not None, VISIBLE_WITHIN_S)
        twin = similar_or_none(client, f"{run}:book:astronomy-1", k=PER_SHELF + 1)
        assert twin is not None and late.item_id in twin

        # A rating of a new item is applied (it is not in the published index).
        user = f"{run}-reader"
        with EventProducer(settings.kafka) as producer:
            producer.publish(
                RatingEvent(
                    event_id=f"{user}-r", user_id=user, item_id=books[5].item_id, event_time=T0, rating=9
                )
            )
            producer.flush(30)
        wait_until_consumed(settings.kafka, timeout_s=60)
        assert client.user_profile(user).ratings == 1

        # Hidden and deleted books leave every answer.
        hidden, deleted = books[1].item_id, books[2].item_id
        publish_items(
            settings,
            [
                HideItemEvent(event_id=f"{run}-hide", item_id=hidden, event_time=T0 + timedelta(days=1)),
                DeleteItemEvent(event_id=f"{run}-del", item_id=deleted, event_time=T0 + timedelta(days=1)),
            ],
        )
        wait_for(lambda: similar_or_none(client, hidden) is None, VISIBLE_WITHIN_S)
        wait_for(lambda: similar_or_none(client, deleted) is None, VISIBLE_WITHIN_S)
        for _ in range(3):
            for n in range(3, 8):
                answer = similar_or_none(client, f"{run}:book:gardening-{n}", k=PER_SHELF + 5)
                assert answer is not None and hidden not in answer and deleted not in answer
            assert not {hidden, deleted} & {i.item_id for i in client.recommend(user, k=50).items}

    # A fresh API process catches up from the catalogue before it serves: same catalogue.
    asyncio.run(fresh_api_agrees(settings, late.item_id, hidden, deleted))
    print(f"first book served after {waited:.1f} s; a late book after {visible_s:.2f} s")


async def fresh_api_agrees(settings: Settings, new: str, hidden: str, deleted: str) -> None:
    """A second API process (this one, in-process) catches up from the feed, then follows a live change
    together with the stack's API: both serve the unhidden book within the bound."""
    server = ApiServer(settings, port=0)
    port = await server.start()
    await server.wait_ready(60)
    client = RecommenderClient(f"127.0.0.1:{port}", timeout_s=10)
    stack_client = RecommenderClient(settings.api.target, timeout_s=10)
    try:
        assert await asyncio.to_thread(similar_or_none, client, new) is not None
        assert await asyncio.to_thread(similar_or_none, client, hidden) is None
        assert await asyncio.to_thread(similar_or_none, client, deleted) is None
        unhide = UnhideItemEvent(
            event_id=f"{hidden}-unhide", item_id=hidden, event_time=T0 + timedelta(days=2)
        )
        await asyncio.to_thread(publish_items, settings, [unhide])
        for api in (client, stack_client):
            await asyncio.to_thread(wait_for, partial(serves, api, hidden), VISIBLE_WITHIN_S)
        assert await asyncio.to_thread(similar_or_none, client, deleted) is None
    finally:
        client.close()
        stack_client.close()
        await server.stop(1.0)
    async with PostgresStore(settings.postgres.dsn.get_secret_value()) as store:
        assert await store.count_items(include_hidden=True) >= 3 * PER_SHELF
