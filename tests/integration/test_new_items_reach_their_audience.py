"""Titles that arrive through the items topic are placed by the trained llmrec ranker online, and reach the
users who consumed them better than a pure content baseline would (issue 15).

The ranker is trained (``train_ranker``) on the shipped sample's MAL Completed lists (5-core: 216 titles)
less a seeded 20 % of those titles, held out: the item index holds only the other titles, embedded by the
real Triton encoder, and the sample users' interactions with them are written to PostgreSQL as the
stream's ledger entries and profile states. With a worker and an API running, the held-out titles are then
published as item events, each with its catalogue title, synopsis and genres plus the marker category
``new-arrival``; the worker embeds and stores them and the API serves them without a restart or a retrain.

Each user who consumed a held-out title (in the data, never in the ledger) then asks for five
recommendations among the ``new-arrival`` titles. A hit is an answer that names one of the user's held-out
titles. The same users ranked over the same titles by ``content_knn`` (``research.cold_start.ContentKNN``:
a user's score for a title is the sum over their known titles of ``max(cos, 0) ** 3``, each title keeping
its 10 nearest known titles; the text branch's defaults), with the vectors the worker stored for the new
titles, give the baseline. The served ranker must do far better than chance; that it reach at least as
many users as the baseline (a new title placed by what the model learnt, not only by its text's nearest
neighbours) is issue 15's bar, not met on this sample yet: that test is a strict expected failure.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

import numpy as np
import numpy.typing as npt
import pytest

from deploy import stack
from encoder_triton.client import encode_corpus
from jobs.build_index import build_index
from jobs.import_items import mal_item
from jobs.train_ranker import TrainSummary, indexed_only, train_ranker
from llmrec.artifacts import load_item_vectors
from llmrec.catalogue import Item, build_catalogue
from llmrec.data_source import SAMPLE_DIR
from llmrec.events.lag import wait_until_consumed
from llmrec.events.producer import EventProducer
from llmrec.events.schema import EventType, UpsertItemEvent
from llmrec.events.topics import ensure_system_topics
from llmrec.preference_state import PreferenceState
from llmrec.settings import Settings, TritonSettings
from llmrec.store import LedgerEntry, migrate
from llmrec.store.postgres import PostgresStore
from llmrec_client.client import RecommenderClient
from llmrec_client.errors import NotFound
from ranker.interactions import InteractionData
from ranker.model.base import FitContext
from ranker.model.profiles import interaction_strengths
from ranker.preferences import Contribution, DecayPolicy, apply_contributions
from research.cold_start import ContentKNN
from research.datasets import LOADERS, MAL_COMPLETED, with_serving_keys

pytestmark = pytest.mark.integration

HELD_OUT_SHARE = 0.2
SEED = 7
K = 5
MARKER = "new-arrival"
# The content baseline's parameters: those of llmrec's own text branch by default.
NEIGHBOURS, EXPONENT = 10, 3.0
T0 = datetime(2024, 3, 1, tzinfo=UTC)
SERVED_WITHIN_S = 120.0  # every held-out title served after publishing; generous for a loaded machine


@dataclass(frozen=True)
class Setup:
    settings: Settings
    data: InteractionData  # the 5-core MAL Completed lists over every training title, held-out ones too
    held_out: frozenset[int]  # item keys of the held-out titles
    titles: dict[int, Item]  # catalogue entry of each of the 5-core's titles, by key
    users: dict[str, int]  # stored user id -> row in ``data``: the users who consumed a held-out title
    trained: TrainSummary


def updater_for(vectors: dict[int, npt.NDArray[np.float32]], dim: int):  # type: ignore[no-untyped-def]
    """``apply_batch``'s state update: each user's contributions applied as the stream applies them."""

    def update(current: dict[str, PreferenceState], new: Sequence[LedgerEntry]) -> dict[str, PreferenceState]:
        by_user: dict[str, list[Contribution]] = {}
        for e in new:
            by_user.setdefault(e.user_id, []).append(
                Contribution(vectors[e.item_id], e.strength, e.event_time.timestamp())
            )
        return {
            user: apply_contributions(current.get(user, PreferenceState.empty(dim)), c, DecayPolicy())
            for user, c in by_user.items()
        }

    return update


def ledger_entries(
    data: InteractionData, users: dict[str, int], held_out: frozenset[int]
) -> list[LedgerEntry]:
    """Each user's interactions with the titles that are not held out, one entry per title with the
    stream's strength (completed + rating), all at one time so that no decay separates them."""
    train = data.matrix()
    ratings = np.full(train.shape, np.nan, dtype=np.float32)
    ratings[data.users, data.items] = data.ratings
    strengths = interaction_strengths(train, ratings)
    return [
        LedgerEntry(
            event_id=f"{user}-{data.item_ids[i]}",
            user_id=user,
            item_id=data.item_ids[i],
            event_type=EventType.RATING if np.isfinite(ratings[u, i]) else EventType.WATCH,
            event_time=T0,
            strength=float(strengths[u, i]),
            rating=float(ratings[u, i]) if np.isfinite(ratings[u, i]) else None,
        )
        for user, u in users.items()
        for i in np.flatnonzero(train[u])
        if data.item_ids[i] not in held_out
    ]


@pytest.fixture(scope="module")
def running(settings_factory: Callable[..., Settings], triton_settings: TritonSettings) -> Iterator[Setup]:
    settings = settings_factory(triton=triton_settings)
    migrate(settings.postgres.dsn.get_secret_value())
    ensure_system_topics(settings.kafka)

    # The ranker's training data as train_ranker sees it when every title is indexed; a seeded fifth of
    # its titles is held out of the index (and so of the training).
    catalogue = build_catalogue(SAMPLE_DIR)
    data = indexed_only(
        with_serving_keys(MAL_COMPLETED, LOADERS[MAL_COMPLETED](SAMPLE_DIR)), set(catalogue.keys), 5
    )
    keys = np.array(data.item_ids, dtype=np.int64)
    held = np.random.default_rng(SEED).choice(keys, size=round(HELD_OUT_SHARE * len(keys)), replace=False)
    held_out = frozenset(int(k) for k in held)
    titles = {item.key: item for item in catalogue if item.key in set(data.item_ids)}
    known = catalogue.subset(item.item_id for key, item in titles.items() if key not in held_out)

    def embed(texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return encode_corpus(
            texts, settings.triton.grpc_url, settings.triton.model_name, batch_size=len(texts), progress=False
        )

    build_index(settings, known, embed, progress=False)
    trained = train_ranker(
        SAMPLE_DIR, settings.index_dir, settings.ranker_dir, params={"training.epochs": 3}, progress=False
    )
    assert held_out.isdisjoint(trained.data.item_ids)

    # The users the ranker was trained on who consumed a held-out title; their other titles go to the
    # ledger, with the profile vectors the stream would have built from the index's vectors.
    run = uuid.uuid4().hex[:6]
    trained_users = set(trained.data.user_ids)
    has_held = data.matrix()[:, np.isin(keys, held)].sum(axis=1) > 0
    users = {
        f"arrivals-{run}-{u}": u
        for u in range(data.n_users)
        if has_held[u] and data.user_ids[u] in trained_users
    }
    ids, vectors = load_item_vectors(settings.index_dir)
    by_key = dict(zip(ids.tolist(), vectors, strict=True))
    entries = ledger_entries(data, users, held_out)

    async def write() -> None:
        async with PostgresStore(settings.postgres.dsn.get_secret_value()) as store:
            await store.apply_batch(entries, updater_for(by_key, int(vectors.shape[1])))

    asyncio.run(write())
    stack.up(settings, only=("worker", "api"), quiet=True)
    try:
        yield Setup(settings, data, held_out, titles, users, trained)
    finally:
        stack.down(settings, quiet=True)


def new_id(item: Item, run: str) -> str:
    """The held-out title's catalogue id in this run. Not its MAL id: the catalogue table is shared with the
    other integration tests, whose indexes hold the sample's MAL ids with vectors of their own."""
    return f"{run}:{item.external_id}"


def arrival(item: Item, run: str, when: datetime) -> UpsertItemEvent:
    """A held-out title as the MAL importer publishes it, under this run's id, with the marker category."""
    fields = mal_item(item)
    return UpsertItemEvent(
        event_id=f"{run}-{fields['id']}",
        item_id=new_id(item, run),
        event_time=when,
        title=fields["title"],
        text=fields.get("text"),
        categories=(*fields["categories"], MARKER),
        attributes=fields["attributes"],
    )


def serves(client: RecommenderClient, item_id: str) -> bool:
    try:
        client.similar_items(item_id, k=1)
    except NotFound:
        return False
    return True


def wait_for(condition: Callable[[], bool], timeout_s: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"not true after {timeout_s} s")
        time.sleep(0.1)
    return time.monotonic() - started


async def stored_vectors(settings: Settings, item_ids: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
    """The vectors the worker stored for ``item_ids`` (those the API serves them by)."""
    async with PostgresStore(settings.postgres.dsn.get_secret_value()) as store:
        rows = await store.get_items(item_ids)
    out = {item_id: row.vector for item_id, row in rows.items() if row.vector is not None}
    assert set(out) == set(item_ids), "a held-out title has no stored vector"
    return out


def content_baseline_hits(setup: Setup, held_vectors: dict[int, npt.NDArray[np.float32]]) -> dict[str, bool]:
    """Per user: whether ``content_knn``'s top ``K`` among the held-out titles holds one of theirs."""
    data = setup.data
    ids, vectors = load_item_vectors(setup.settings.index_dir)
    by_key = {**dict(zip(ids.tolist(), vectors, strict=True)), **held_vectors}
    features = np.stack([by_key[key] for key in data.item_ids]).astype(np.float32)
    held_cols = np.flatnonzero([key in setup.held_out for key in data.item_ids])
    full = data.matrix()
    train = full.copy()
    train[:, held_cols] = 0.0  # nobody has consumed a new title yet
    model = ContentKNN(NEIGHBOURS, EXPONENT).fit(train, FitContext(item_features=features))
    rows = np.array(list(setup.users.values()), dtype=np.int64)
    scores = model.score(rows)[:, held_cols]
    top = held_cols[np.argsort(-scores, axis=1, kind="stable")[:, :K]]
    return {user: bool(full[u, top[n]].sum() > 0) for n, (user, u) in enumerate(setup.users.items())}


@dataclass(frozen=True)
class HitRates:
    asked: int
    new_titles: int
    llmrec: float
    content_knn: float
    chance: float  # the expected hit rate of K titles drawn at random from the new ones
    served_after_s: float

    def __str__(self) -> str:
        return (
            f"hit rate@{K} over {self.asked} users and {self.new_titles} new titles: "
            f"llmrec {self.llmrec:.3f}, content_knn {self.content_knn:.3f}, chance {self.chance:.3f} "
            f"(all served {self.served_after_s:.1f} s after publishing)"
        )


def chance_of_a_hit(n_titles: int, theirs: int) -> float:
    """P(K titles drawn at random from ``n_titles`` include one of the user's ``theirs``)."""
    return 1.0 - math.comb(n_titles - theirs, K) / math.comb(n_titles, K)


@pytest.fixture(scope="module")
def hit_rates(running: Setup) -> HitRates:
    """Publish the held-out titles, ask every user who consumed one for K new titles, and score both the
    served answers and the content baseline's."""
    setup, settings = running, running.settings
    run = uuid.uuid4().hex[:6]
    arrivals = [arrival(setup.titles[key], run, datetime.now(UTC)) for key in sorted(setup.held_out)]
    with EventProducer(settings.kafka) as producer:
        for event in arrivals:
            producer.publish_item(event)
        producer.flush(30)

    data, full = setup.data, setup.data.matrix()
    chances: list[float] = []
    with RecommenderClient(settings.api.target, timeout_s=10) as client:
        started = time.monotonic()
        for event in arrivals:
            wait_for(partial(serves, client, event.item_id), SERVED_WITHIN_S)
        waited = time.monotonic() - started
        wait_until_consumed(settings.kafka, timeout_s=120)

        llmrec_hits: dict[str, bool] = {}
        for user, u in setup.users.items():
            answer = client.recommend(user, k=K, include_genres=[MARKER])
            # Placed by the trained ranker (the same model as offline), not by a fallback.
            assert answer.strategy == "personalized", user
            assert answer.model_version.endswith(setup.trained.folder.name), answer.model_version
            got = [item.item_id for item in answer.items]
            assert len(got) == K and all(MARKER in item.genres for item in answer.items), got
            consumed = {
                new_id(setup.titles[data.item_ids[i]], run)
                for i in np.flatnonzero(full[u])
                if data.item_ids[i] in setup.held_out
            }
            llmrec_hits[user] = bool(consumed & set(got))
            chances.append(chance_of_a_hit(len(arrivals), len(consumed)))

    vectors = asyncio.run(stored_vectors(settings, [event.item_id for event in arrivals]))
    baseline_hits = content_baseline_hits(
        setup, {setup.titles[key].key: vectors[new_id(setup.titles[key], run)] for key in setup.held_out}
    )
    asked = len(setup.users)
    rates = HitRates(
        asked,
        len(arrivals),
        sum(llmrec_hits.values()) / asked,
        sum(baseline_hits.values()) / asked,
        float(np.mean(chances)),
        waited,
    )
    print(rates)
    return rates


def test_held_out_titles_are_placed_by_the_trained_ranker_for_the_users_who_consumed_them(
    hit_rates: HitRates,
) -> None:
    assert hit_rates.asked >= 30, hit_rates
    assert hit_rates.llmrec > hit_rates.chance + 0.1, hit_rates


@pytest.mark.xfail(
    strict=True,
    reason=(
        "issue 15, not met on the shipped sample: llmrec 0.703 against content_knn 0.781 (hit rate@5, 64 "
        "users, 43 new titles, 4 runs alike). On the full data llmrec leads content_knn on protocol (e)'s "
        "cold-only ranking for mal-completed and trails it on mal-rating23 (reports/eval.md). Strict: once "
        "the ranker reaches the baseline here, this fails and the marker must go."
    ),
)
def test_held_out_titles_reach_at_least_as_many_users_as_the_content_baseline(hit_rates: HitRates) -> None:
    assert hit_rates.llmrec >= hit_rates.content_knn, hit_rates
