"""The whole path on real servers: Kafka -> Faust worker -> PostgreSQL -> gRPC API, with item embeddings and
review sentiment from Triton, the worker and the API started as processes by ``deploy.stack``."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from deploy import stack
from encoder_triton.client import encode_corpus
from jobs.build_index import build_index
from llmrec.catalogue import Catalogue, load_catalogue
from llmrec.data_source import sample_source
from llmrec.events.lag import consumer_lag, wait_until_consumed
from llmrec.events.producer import EventProducer
from llmrec.events.schema import RatingEvent, ReviewEvent
from llmrec.events.topics import ensure_system_topics
from llmrec.events.validation import AnyEvent
from llmrec.settings import Settings, TritonSettings
from llmrec.store import migrate
from llmrec_client.client import RecommenderClient

pytestmark = pytest.mark.integration

GENRE = "Sports"


def small_catalogue() -> Catalogue:
    """80 real items with synopses from the shipped sample: 40 of GENRE, 40 without it."""
    catalogue = load_catalogue(sample_source())
    with_text = [item for item in catalogue if item.has_synopsis]
    in_genre = [item.item_id for item in with_text if GENRE in item.genres][:40]
    others = [item.item_id for item in with_text if GENRE not in item.genres][:40]
    assert len(in_genre) >= 10, "the sample should hold enough sports titles for this test"
    return catalogue.subset(in_genre + others)


@pytest.fixture
def stack_settings(
    settings_factory: Callable[..., Settings], triton_settings: TritonSettings
) -> Iterator[tuple[Settings, Catalogue]]:
    settings = settings_factory(triton=triton_settings)
    migrate(settings.postgres.dsn.get_secret_value())
    ensure_system_topics(settings.kafka)
    catalogue = small_catalogue()

    def embed(texts: list[str]):  # type: ignore[no-untyped-def]
        return encode_corpus(
            texts, settings.triton.grpc_url, settings.triton.model_name, batch_size=len(texts), progress=False
        )

    build_index(settings, catalogue, embed, progress=False)
    stack.up(settings, only=("worker", "api"), quiet=True)
    try:
        yield settings, catalogue
    finally:
        stopped = stack.down(settings, quiet=True)
        assert set(stopped) == {"worker", "api"}


def sports_fan_events(user_id: str, catalogue: Catalogue) -> list[AnyEvent]:
    sports = [item for item in catalogue if GENRE in item.genres]
    start = datetime(2025, 6, 1, tzinfo=UTC)
    events: list[AnyEvent] = [
        RatingEvent(
            event_id=f"{user_id}-r{n}",
            user_id=user_id,
            item_id=item.external_id,
            event_time=start + timedelta(hours=n),
            rating=10.0,
        )
        for n, item in enumerate(sports[:4])
    ]
    events.append(
        ReviewEvent(
            event_id=f"{user_id}-v",
            user_id=user_id,
            item_id=sports[4].external_id,
            event_time=start + timedelta(days=1),
            rating=9.0,
            text="Wonderful. The matches are thrilling and the team's friendship moved me; I loved it.",
        )
    )
    return events


def publish(settings: Settings, events: list[AnyEvent], raw: list[bytes] = ()) -> None:  # type: ignore[assignment]
    with EventProducer(settings.kafka) as producer:
        for event in events:
            producer.publish(event)
        for value in raw:
            producer.publish_raw(settings.kafka.ratings_topic, "bad-user", value)
        producer.flush(30)


def test_published_events_reach_the_api_once_and_bad_ones_reach_the_dead_letter_topic(
    stack_settings: tuple[Settings, Catalogue],
) -> None:
    settings, catalogue = stack_settings
    user_id = f"e2e-{uuid.uuid4().hex[:8]}"
    events = sports_fan_events(user_id, catalogue)

    with RecommenderClient(settings.api.target, timeout_s=10) as client:
        assert client.recommend(user_id, k=5).strategy == "cold_start"

        publish(settings, events, raw=[b'{"event_type": "rating", "rating": NaN}', b"not json"])
        wait_until_consumed(settings.kafka, timeout_s=120)

        profile = client.user_profile(user_id)
        assert (profile.ratings, profile.reviews, profile.watch_events) == (4, 1, 0)
        assert profile.top_genres[0].genre == GENRE

        answer = client.recommend(user_id, k=10)
        assert answer.strategy == "personalized"
        seen = {event.item_id for event in events}
        assert not seen & {item.item_id for item in answer.items}, "seen items must be excluded"
        # The profile points at sports titles: most of what comes back is sports, though only half the
        # catalogue is.
        share = sum(GENRE in item.genres for item in answer.items) / len(answer.items)
        assert share >= 0.6, [(item.title, item.genres) for item in answer.items]
        titles = {item.external_id: item.title for item in catalogue}
        rated_titles = {titles[event.item_id] for event in events}
        assert any(any(title in item.reason for title in rated_titles) for item in answer.items)

        dead_letters = consumer_lag(settings.kafka, [settings.kafka.dead_letter_topic], group="e2e-reader")
        assert dead_letters[settings.kafka.dead_letter_topic] == 2

        # Publishing the same events again changes nothing: the ledger is keyed by event id.
        publish(settings, events)
        wait_until_consumed(settings.kafka, timeout_s=120)
        again = client.user_profile(user_id)
        assert (again.ratings, again.reviews, again.updated_at) == (4, 1, profile.updated_at)
        assert client.recommend(user_id, k=10).items == answer.items
