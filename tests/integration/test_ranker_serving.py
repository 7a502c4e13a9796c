"""The trained llmrec ranker served by the real gRPC server: same scores offline and online.

The ranker is trained (``train_ranker``, as ``llmrec train-ranker`` does) on the shipped sample's MAL
Completed lists with an index over those items (synthetic genre vectors stand in for the encoder). The
sample users' interactions are written to the real PostgreSQL as ledger entries with the stream's
strengths, so each profile vector is the stream's own; ``Recommend`` over the wire must then return the
offline model's top 10 (``LLMRec.score``, the evaluation's function) with the same scores."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

from grpc_api.client import RecommenderClient
from grpc_api.server import ApiServer
from jobs.build_index import build_index
from jobs.train_ranker import TrainSummary, train_ranker
from llmrec.catalogue import build_catalogue
from llmrec.data_source import SAMPLE_DIR
from llmrec.events.schema import EventType
from llmrec.item_ids import item_key
from llmrec.preference_state import PreferenceState
from llmrec.settings import ApiSettings, PostgresSettings, Settings
from llmrec.store import LedgerEntry, migrate
from llmrec.store.postgres import PostgresStore
from ranker.model.profiles import interaction_strengths
from ranker.preferences import Contribution, DecayPolicy, apply_contributions
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
        api=ApiSettings(port=0, metrics_port=0, grace_period_s=1.0),
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
    client = RecommenderClient(f"127.0.0.1:{port}", timeout_s=10.0)
    try:
        yield Served(server, client, trained, users)
    finally:
        client.close()
        await server.stop(1.0)


async def test_the_api_serves_the_trained_ranker_version(served: Served) -> None:
    answer = await asyncio.to_thread(served.client.recommend, next(iter(served.users)), k=5)
    assert answer.model_version.endswith(served.trained.folder.name)


async def test_online_scores_equal_the_offline_model(served: Served) -> None:
    data, model = served.trained.data, served.trained.model
    for user, u in served.users.items():
        answer = await asyncio.to_thread(served.client.recommend, user, k=10)
        assert answer.strategy == "personalized"
        offline = model.score(np.array([u]))[0]
        offline[data.matrix()[u] > 0] = -np.inf  # seen items are excluded online
        order = np.argsort(-offline, kind="stable")[:10]
        expected = [data.item_ids[i] for i in order]
        got = [item_key(item.item_id) for item in answer.items]  # the trained data holds keys
        assert got == expected, user
        np.testing.assert_allclose([i.score for i in answer.items], offline[order], rtol=1e-4, atol=1e-4)
