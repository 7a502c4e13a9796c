"""The trained llmrec ranker served by the real gRPC server: same answers offline and online, every
catalogue item reachable, a retrained version swapped in under load.

The ranker is trained (``train_ranker``, as ``llmrec train-ranker`` does) on the shipped sample's MAL
Completed lists (216 of its 2,538 titles) with an index over the whole sample catalogue (synthetic genre
vectors stand in for the encoder). The sample users' interactions are written to the real PostgreSQL as
ledger entries with the stream's strengths, so each profile vector is the stream's own; ``Recommend`` over
the wire must then return what the served function (``two_stage.rank_candidates``) gives for the offline
model's own inputs over the same index, with the same scores."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

from grpc_api.server import ApiServer
from jobs.build_index import build_index
from jobs.train_ranker import TrainSummary, train_ranker, train_ranker_from_ledger
from llmrec.catalogue import build_catalogue
from llmrec.data_source import SAMPLE_DIR
from llmrec.events.schema import EventType
from llmrec.item_ids import item_key
from llmrec.preference_state import PreferenceState
from llmrec.settings import ApiSettings, PostgresSettings, Settings
from llmrec.store import LedgerEntry, migrate
from llmrec.store.postgres import PostgresStore
from llmrec_client.client import RecommenderClient
from ranker.model.profiles import interaction_strengths
from ranker.model.serving import load_current
from ranker.preferences import Contribution, DecayPolicy, apply_contributions
from ranker.retrieval import ItemIndex
from tests.synthetic import genre_embeddings

pytestmark = pytest.mark.integration

DIM = 32
T0 = datetime(2024, 3, 1, tzinfo=UTC)
USERS = 8


@dataclass
class Served:
    server: ApiServer
    client: RecommenderClient
    trained: TrainSummary
    users: dict[str, int]  # stored user id -> dataset user index
    settings: Settings
    index: ItemIndex
    address: str


def updater_for(vectors: dict[int, np.ndarray]):  # type: ignore[no-untyped-def]
    def update(current: dict[str, PreferenceState], new: Sequence[LedgerEntry]) -> dict[str, PreferenceState]:
        by_user: dict[str, list[Contribution]] = {}
        for e in new:
            by_user.setdefault(e.user_id, []).append(
                Contribution(vectors[e.item_id], e.strength, e.event_time.timestamp())
            )
        return {
            user: apply_contributions(current.get(user, PreferenceState.empty(DIM)), c, DecayPolicy())
            for user, c in by_user.items()
        }

    return update


@pytest.fixture(scope="module")
async def served(postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    root: Path = tmp_path_factory.mktemp("ranker")
    settings = Settings(
        state_dir=root,
        artifacts_dir=root / "artifacts",
        postgres=PostgresSettings(dsn=SecretStr(postgres_dsn)),
        api=ApiSettings(port=0, metrics_port=0, grace_period_s=1.0, ranker_poll_s=0.2),
    )
    catalogue = build_catalogue(SAMPLE_DIR)
    embeddings = genre_embeddings([i.genres for i in catalogue], dim=DIM, noise=0.3, seed=5)
    by_text = dict(zip(catalogue.texts_for_embedding(), embeddings, strict=True))
    build_index(settings, catalogue, lambda texts: np.stack([by_text[t] for t in texts]), progress=False)
    trained = await asyncio.to_thread(
        train_ranker,
        SAMPLE_DIR,
        settings.index_dir,
        settings.ranker_dir,
        params={"training.epochs": 2, "n_collab": 40, "n_semantic": 10},
        progress=False,
    )
    data = trained.data
    index_ids = np.load(settings.index_dir / "item_ids.npy")
    index_vectors = np.load(settings.index_dir / "embeddings.npy")
    vectors = dict(zip(index_ids.tolist(), index_vectors, strict=True))

    # Each sample user's interactions as the stream would store them: one entry per title with its
    # strength (completed + rating), all at one time so that no decay separates the two sides.
    train = data.matrix()
    ratings = np.full(train.shape, np.nan, dtype=np.float32)
    ratings[data.users, data.items] = data.ratings
    strengths = interaction_strengths(train, ratings)
    run = uuid.uuid4().hex[:6]
    users = {f"ranker-{run}-{u}": u for u in range(0, data.n_users, max(1, data.n_users // USERS))[:USERS]}
    entries = [
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
    ]
    migrate(postgres_dsn)
    async with PostgresStore(postgres_dsn) as store:
        await store.apply_batch(entries, updater_for(vectors))

    server = ApiServer(settings)
    port = await server.start()
    await server.wait_ready(60)
    address = f"127.0.0.1:{port}"
    client = RecommenderClient(address, timeout_s=10.0)
    try:
        yield Served(server, client, trained, users, settings, ItemIndex.load(settings.index_dir), address)
    finally:
        client.close()
        await server.stop(1.0)


async def test_the_api_serves_the_trained_ranker_version(served: Served) -> None:
    answer = await asyncio.to_thread(served.client.recommend, next(iter(served.users)), k=5)
    assert answer.model_version.endswith(served.trained.folder.name)


def offline_top(served: Served, u: int, k: int) -> tuple[list[int], np.ndarray]:
    """The served function over the API's index, fed the offline model's inputs of dataset user ``u``."""
    data, model = served.trained.data, served.trained.model
    ranker = load_current(served.settings.ranker_dir)
    assert ranker is not None
    catalogue = ranker.catalogue_of(served.index)
    allowed = np.ones(len(served.index), dtype=np.bool_)
    allowed[catalogue.from_universe[data.matrix()[u] > 0]] = False  # seen items are excluded online
    ranked = ranker.rank(model._batch_inputs(np.array([u])), catalogue, allowed, k)
    rows = ranked.rows[0][:k]
    return [int(served.index.item_ids[r]) for r in rows], ranked.scores[0][:k]


async def test_online_answers_equal_the_offline_model(served: Served) -> None:
    for user, u in served.users.items():
        answer = await asyncio.to_thread(served.client.recommend, user, k=10)
        assert answer.strategy == "personalized"
        expected, scores = offline_top(served, u, 10)
        got = [item_key(item.item_id) for item in answer.items]  # the trained data holds keys
        assert got == expected, user
        np.testing.assert_allclose([i.score for i in answer.items], scores, rtol=1e-4, atol=1e-4)


async def test_a_title_outside_the_training_data_reaches_a_user_whose_history_matches_it(
    served: Served,
) -> None:
    """Before the two-stage ranker, 488 of the 500 newest MAL titles could never be recommended to a known
    user: the trained ranker scored only the items it was trained on."""
    universe = set(served.trained.data.item_ids)
    reached: dict[str, list[str]] = {}
    for user in served.users:
        answer = await asyncio.to_thread(served.client.recommend, user, k=20)
        assert answer.strategy == "personalized"
        outside = [i.item_id for i in answer.items if item_key(i.item_id) not in universe]
        if outside:
            reached[user] = outside
    assert reached, "no user was offered a title the ranker was not trained on"
    # And it is there because the user's history matches it: closer to their profile than the average
    # catalogue title is.
    user, titles = next(iter(reached.items()))
    profile = await asyncio.to_thread(served.client.user_profile, user)
    assert profile.ratings + profile.watch_events > 0
    vectors = served.index.embeddings
    title_rows = served.index.rows([item_key(t) for t in titles])
    seen_rows = served.index.rows(
        [
            served.trained.data.item_ids[i]
            for i in np.flatnonzero(served.trained.data.matrix()[served.users[user]])
        ]
    )
    taste = vectors[seen_rows].mean(axis=0)
    assert (vectors[title_rows] @ taste).mean() > (vectors @ taste).mean()


async def test_a_ranker_trained_from_the_ledger_is_swapped_in_under_load(served: Served) -> None:
    """``llmrec train-ranker --from-ledger`` while requests keep coming: the API picks the new version up
    without a restart, no request fails, and every answer names the version that ranked it."""
    user = next(iter(served.users))
    before = (await asyncio.to_thread(served.client.recommend, user, k=5)).model_version
    stop = threading.Event()
    versions: list[str] = []
    errors: list[BaseException] = []

    def keep_asking() -> None:
        with RecommenderClient(served.address, timeout_s=10.0) as client:
            while not stop.is_set():
                try:
                    versions.append(client.recommend(user, k=5).model_version)
                except Exception as exc:
                    errors.append(exc)

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        trained = await asyncio.to_thread(train_ranker_from_ledger, served.settings, seed=7, core=2)
        assert trained.folder.parent == served.settings.ranker_dir
        assert trained.interactions >= sum(1 for _ in served.users)  # the fixture's users are in the ledger
        deadline = time.monotonic() + 30
        while not (versions and versions[-1].endswith(trained.folder.name)):
            assert time.monotonic() < deadline, f"still serving {versions[-1:]} 30 s after training"
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.to_thread(asker.join)
    assert errors == []
    assert versions[0] == before and len(set(versions)) == 2
