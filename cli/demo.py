"""``make demo``: the whole system on real data, end to end, in a few minutes.

1. Bring the stack up (Kafka, PostgreSQL, Triton, item index, worker, API): whatever is not yet running.
   Before the API starts, train the llmrec ranker if none is saved (``llmrec train-ranker``: under a
   minute on 2 cores), so the API serves the trained model.
2. Replay real MyAnimeList events through Kafka and wait until the worker has applied them.
3. Show profiles and recommendations for a few real users, and items similar to a well-known title.
4. Publish new events for one user and show the recommendations change as the worker applies them.
5. Publish a brand-new title on the items topic and show it served by ``SimilarItems`` as soon as the
   worker has embedded and stored it (no index rebuild, no restart).
6. A second domain as a catalogue of one's own: a second worker and API on the same Kafka, PostgreSQL and
   Triton, starting from an empty index; import the shipped MovieLens movies through the items topic,
   stream their ratings, and show a movie fan's profile and recommendations and the movies like Toy Story.
7. Shut down what the demo started (unless ``--keep-running``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console

from cli.render import changed_recommendations_table, profile_table, recommendations_table, similar_table
from deploy import stack
from deploy.process import free_ports
from jobs.build_index import build_index_from_settings
from jobs.import_items import import_items, movielens_items
from jobs.publishing import replay
from jobs.train_ranker import train_ranker_from_settings
from llmrec.artifacts import current_version
from llmrec.catalogue import Catalogue, Item
from llmrec.data_source import SAMPLE_DIR, find_data_file, resolve_data_source
from llmrec.datasets.movielens import movielens_rating_events
from llmrec.events.lag import wait_until_consumed
from llmrec.events.producer import EventProducer
from llmrec.events.schema import RatingEvent, ReviewEvent, UpsertItemEvent
from llmrec.logs import get_logger
from llmrec.sample_data.movielens import FOLDER as MOVIELENS_FOLDER
from llmrec.settings import Settings
from llmrec.store.postgres import PostgresStore
from llmrec_client.client import RecommenderClient
from llmrec_client.errors import NotFound
from llmrec_client.models import Recommendations
from ranker.model.serving import is_outdated
from ranker.retrieval import load_artifacts

log = get_logger(__name__)
console = Console()

USERS_SHOWN = 3
# MAL anime id of Steins;Gate, when it is in the catalogue; otherwise the most popular item.
SIMILAR_TO = 9253
NEW_ITEM_TIMEOUT_S = 60.0
TOY_STORY = "ml:1"
NEW_EVENTS_GENRE_CANDIDATES = ("Horror", "Sports", "Romance", "Mystery", "Slice of Life", "Comedy")


async def _active_users(settings: Settings, count: int) -> list[str]:
    """The users with the most applied events, reviewers first (their profiles use sentiment too)."""
    async with PostgresStore(
        settings.postgres.conninfo(), min_size=1, max_size=1, name="llmrec-demo"
    ) as store:
        return await store.most_active_users(count)


def _pick_new_genre(profile_genres: list[str], catalogue: Catalogue) -> str:
    present = {genre for item in catalogue for genre in item.genres}
    for genre in NEW_EVENTS_GENRE_CANDIDATES:
        if genre in present and genre not in profile_genres[:5]:
            return genre
    return NEW_EVENTS_GENRE_CANDIDATES[0]


def _new_events(
    user_id: str, genre: str, catalogue: Catalogue, seen: set[str]
) -> list[RatingEvent | ReviewEvent]:
    """Five top ratings and one glowing review for popular titles of a genre the user has not shown."""
    candidates = sorted(
        (item for item in catalogue if genre in item.genres and item.external_id not in seen),
        key=lambda item: -(item.members or 0),
    )[:6]
    now = datetime.now(UTC)
    run = uuid.uuid4().hex[:8]
    events: list[RatingEvent | ReviewEvent] = [
        RatingEvent(
            event_id=f"demo-{run}-r{n}",
            user_id=user_id,
            item_id=item.external_id,
            event_time=now - timedelta(seconds=10 - n),
            rating=10.0,
            source="demo",
        )
        for n, item in enumerate(candidates[:5])
    ]
    if len(candidates) > 5:
        events.append(
            ReviewEvent(
                event_id=f"demo-{run}-v",
                user_id=user_id,
                item_id=candidates[5].external_id,
                event_time=now,
                source="demo",
                rating=10.0,
                text=f"An absolute masterpiece of {genre.lower()}. I loved every episode, the characters "
                "are wonderful and the ending moved me. One of the best shows I have ever seen.",
            )
        )
    return events


def _show_users(client: RecommenderClient, users: list[str]) -> None:
    for user_id in users:
        profile_table(client.user_profile(user_id))
        recommendations_table(client.recommend(user_id, k=10))


def _show_change(settings: Settings, client: RecommenderClient, user_id: str, catalogue: Catalogue) -> None:
    profile = client.user_profile(user_id)
    before: Recommendations = client.recommend(user_id, k=10)
    genre = _pick_new_genre([g.genre for g in profile.top_genres], catalogue)
    seen = {item.item_id for item in before.items}
    events = _new_events(user_id, genre, catalogue, seen)
    console.rule(f"[bold]{user_id} now rates {len(events)} {genre} titles highly")
    titles = {item.external_id: item.title for item in catalogue}
    for event in events:
        title = titles[event.item_id]
        console.print(f"  publish {event.event_type.value:6} {title} ({event.item_id})")
    published_at = time.monotonic()
    with EventProducer(settings.kafka) as producer:
        for event in events:
            producer.publish(event)
        producer.flush(30.0)
    wait_until_consumed(settings.kafka, timeout_s=120.0, poll_s=0.2)
    after = client.recommend(user_id, k=10)
    elapsed = time.monotonic() - published_at
    changed_recommendations_table(
        before, after, f"{user_id} after the new events (applied and served within {elapsed:.1f} s)"
    )
    profile_table(client.user_profile(user_id))


def _show_new_item(settings: Settings, client: RecommenderClient, anchor: Item) -> None:
    """Publish a title that is not in the index, written like ``anchor``, and wait until the API serves it."""
    new = UpsertItemEvent(
        event_id=f"demo-item-{uuid.uuid4().hex[:8]}",
        item_id=f"demo:sequel-{uuid.uuid4().hex[:6]}",
        event_time=datetime.now(UTC),
        title=f"{anchor.title}: The Next Chapter",
        text=f"A sequel to {anchor.title}. {anchor.synopsis}",
        categories=anchor.genres,
        attributes={"type": anchor.type or "TV", "themes": list(anchor.themes)},
    )
    console.print(f"  publish upsert {new.title!r} ({new.item_id})")
    published_at = time.monotonic()
    with EventProducer(settings.kafka) as producer:
        producer.publish_item(new)
        producer.flush(30.0)
    deadline = published_at + NEW_ITEM_TIMEOUT_S
    while True:
        listed = [i.item_id for i in client.similar_items(anchor.external_id, k=8).items]
        if new.item_id in listed or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    elapsed = time.monotonic() - published_at
    if new.item_id not in listed:
        console.print(f"[red]the new title was not served within {NEW_ITEM_TIMEOUT_S:.0f} s[/red]")
        return
    similar_table(anchor.external_id, client.similar_items(anchor.external_id, k=8))
    console.print(f"served {elapsed:.1f} s after publishing (embedded by the worker through Triton)")
    similar_table(new.item_id, client.similar_items(new.item_id, k=5))
    _show_new_item_recommended(settings, client, anchor, new.item_id)


def _show_new_item_recommended(
    settings: Settings, client: RecommenderClient, anchor: Item, new_item_id: str
) -> None:
    """A fan of ``anchor`` (top ratings for it and its two nearest titles) asks for recommendations: the
    trained ranker never saw the new title, yet its candidate stage reaches it by text and scores it."""
    fan = f"demo-fan-{uuid.uuid4().hex[:6]}"
    similar = client.similar_items(anchor.external_id, k=4).items
    near = [i.item_id for i in similar if i.item_id != new_item_id]
    liked = [anchor.external_id, *near[:2]]
    now = datetime.now(UTC)
    events = [
        RatingEvent(
            event_id=f"{fan}-r{n}",
            user_id=fan,
            item_id=item_id,
            event_time=now - timedelta(seconds=5 - n),
            rating=10.0,
            source="demo",
        )
        for n, item_id in enumerate(liked)
    ]
    console.print(f"  {fan} rates {', '.join(liked)} 10/10")
    with EventProducer(settings.kafka) as producer:
        for event in events:
            producer.publish(event)
        producer.flush(30.0)
    wait_until_consumed(settings.kafka, timeout_s=60.0, poll_s=0.2)
    answer = client.recommend(fan, k=10)
    recommendations_table(answer, title=f"{fan}'s recommendations ({answer.model_version})")
    ranks = [n for n, item in enumerate(answer.items, 1) if item.item_id == new_item_id]
    if ranks:
        console.print(f"the new title is recommended to {fan} at rank {ranks[0]}")
    else:
        console.print(f"[yellow]the new title is not in {fan}'s top 10[/yellow]")


def _movielens_settings(settings: Settings) -> Settings:
    """A second deployment on the same Kafka, PostgreSQL and Triton: its own topics, consumer group,
    ports and artefacts, and an index that starts empty (``catalogue_source = "items"``). The database is
    shared, and with it the catalogue table: each deployment also serves the other's catalogue items."""
    worker_web, worker_metrics, api_port, api_metrics, api_http = free_ports(5)
    return Settings.model_validate(
        {
            **settings.model_dump(),
            "state_dir": settings.state_dir / "movielens",
            "artifacts_dir": settings.artifacts_dir / "movielens",
            "catalogue_source": "items",
            "kafka": settings.kafka.model_copy(
                update={
                    "topic_prefix": f"{settings.kafka.topic_prefix}-movielens",
                    "consumer_group": f"{settings.kafka.consumer_group}-movielens",
                }
            ),
            "worker": settings.worker.model_copy(
                update={"web_port": worker_web, "metrics_port": worker_metrics}
            ),
            "api": settings.api.model_copy(
                update={"port": api_port, "metrics_port": api_metrics, "http_port": api_http}
            ),
        }
    )


def _sample_file(folder: Path, name: str) -> Path:
    path = find_data_file(folder, name)
    if path is None:
        raise FileNotFoundError(f"no {name} in {folder}")
    return path


def _show_second_domain(settings: Settings) -> None:
    """MovieLens as a catalogue of one's own: an empty index, the shipped sample's movies imported through
    the items topic (embedded by the worker), then their ratings streamed; no MAL data, no trained ranker."""
    movies = _movielens_settings(settings)
    folder = SAMPLE_DIR / MOVIELENS_FOLDER
    build_index_from_settings(movies, progress=False)
    stack.up(movies, only=("worker", "api"), quiet=True)
    try:
        started = time.monotonic()
        summary = import_items(
            movies, movielens_items(_sample_file(folder, "movies.csv")), label="MovieLens sample movies"
        )
        console.print(str(summary))
        wait_until_consumed(movies.kafka, timeout_s=900.0)
        console.print(f"the worker embedded and stored them within {time.monotonic() - started:.1f} s")
        events = movielens_rating_events(_sample_file(folder, "ratings.csv"))
        with EventProducer(movies.kafka) as producer:
            for event in events:
                producer.publish(event)
            producer.flush(60.0)
        wait_until_consumed(movies.kafka, timeout_s=300.0)
        counts = Counter(event.user_id for event in events)
        fan = max(counts, key=lambda user: (counts[user], user))
        console.print(f"published {len(events)} MovieLens ratings of {len(counts)} users")
        with RecommenderClient(movies.api.target) as client:
            deadline = time.monotonic() + NEW_ITEM_TIMEOUT_S
            while True:  # the API serves the movies from its next catalogue poll
                try:
                    similar = client.similar_items(TOY_STORY, k=8)
                    break
                except NotFound:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            profile_table(client.user_profile(fan))
            recommendations_table(client.recommend(fan, k=10))
            console.print("Movies similar to Toy Story (1995):")
            similar_table(TOY_STORY, similar)
    finally:
        stack.down(movies, quiet=True)


def _ensure_ranker(settings: Settings) -> None:
    """Train and save the llmrec ranker unless a version is already current (the item index must exist)."""
    version = current_version(settings.ranker_dir)
    if version is not None and not is_outdated(settings.ranker_dir / version):
        console.print(f"trained ranker: version {version} (already saved)")
        return
    source = resolve_data_source(settings)
    console.print(f"training the llmrec ranker on the MAL Completed lists ({source.describe()})")
    trained = train_ranker_from_settings(settings)  # the tuned parameters in settings.reports_dir
    console.print(f"{trained.summary} ({trained.parameters})")


def run_demo(settings: Settings, keep_running: bool = False) -> int:
    console.rule("[bold]1. Starting the stack")
    # The API loads the trained ranker when it starts: bring up what the training needs (the item index is
    # built once Triton is up), train if needed, then the rest.
    stack.up(settings, only=("kafka", "postgres", "triton"))
    _ensure_ranker(settings)
    stack.up(settings)
    try:
        index, catalogue = load_artifacts(settings.index_dir)
        console.rule("[bold]2. Replaying real MyAnimeList events through Kafka")
        # The item index covers the full catalogue when ../shared/data is present. The events streamed are
        # always the shipped sample's (all events of 277 real users, about 10k): the full data's 492k events
        # take minutes more on 2 cores; `llmrec replay` streams them all.
        summary = replay(settings, source="sample", catalogue=catalogue, progress=True)
        console.print(
            f"published {summary.delivered} events from {summary.source} "
            f"({dict(summary.by_type)}) in {summary.elapsed_s:.1f} s"
        )
        waited = wait_until_consumed(settings.kafka, timeout_s=900.0)
        console.print(f"worker caught up {waited:.1f} s after the last publish")

        console.rule("[bold]3. Recommendations for real users")
        users = asyncio.run(_active_users(settings, USERS_SHOWN))
        with RecommenderClient(settings.api.target) as client:
            _show_users(client, users)
            anchor = catalogue.get(SIMILAR_TO) or max(catalogue, key=lambda i: i.members or 0)
            console.print(f"Items similar to {anchor.title}:")
            similar_table(anchor.external_id, client.similar_items(anchor.external_id, k=8))
            recommendations_table(
                client.recommend("someone-new", k=5), title="A user the system has never seen (cold start)"
            )

            console.rule("[bold]4. New events change one user's recommendations")
            if users:
                _show_change(settings, client, users[0], catalogue)

            console.rule("[bold]5. A brand-new title arrives on the items topic")
            _show_new_item(settings, client, anchor)

            console.rule("[bold]6. A second domain: MovieLens movies and ratings")
            _show_second_domain(settings)
        console.print(f"index: {len(catalogue)} items, version {index.version}")
        return 0
    finally:
        if keep_running:
            console.print("stack left running; stop it with `make down`")
        else:
            console.rule("[bold]7. Shutting down")
            stack.down(settings)
