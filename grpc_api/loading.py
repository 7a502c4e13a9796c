"""What the API serves, loaded from disk and the database: the index snapshot (index + catalogue + the
trained ranker, when one fits) and the PostgreSQL profile store.

The loaders are the defaults of ``grpc_api.server.ApiServer``; tests pass their own (an in-memory store,
a snapshot built in memory).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from grpc_api.service import Snapshot
from llmrec.artifacts import current_version
from llmrec.logs import get_logger
from llmrec.settings import Settings
from llmrec.store.interface import CatalogueStore, ProfileReader
from llmrec.store.postgres import PostgresStore
from ranker.retrieval import load_artifacts

if TYPE_CHECKING:  # the trained ranker pulls in torch: imported when one is loaded (load_learned_ranker)
    from ranker.model.serving import LearnedRanker

log = get_logger(__name__)


class ClosableStore(ProfileReader, CatalogueStore, Protocol):
    """What the API reads: profiles, and the catalogue's change feed (``grpc_api.live_catalogue``)."""

    async def close(self) -> None: ...


StoreFactory = Callable[[Settings], Awaitable[ClosableStore]]
SnapshotLoader = Callable[[Settings], Snapshot]


def load_learned_ranker(settings: Settings, dim: int) -> LearnedRanker | None:
    """The trained ranker ``CURRENT`` under ``settings.ranker_dir``, or None (plain fusion) when none was
    trained or it does not fit this index; either way the choice is logged."""
    # Here, not at the top: torch is a heavy import that a server without a trained ranker never needs.
    from ranker.model.serving import OutdatedRanker, load_ranker, torch_threads

    version = current_version(settings.ranker_dir)
    if version is None:
        log.info("no trained ranker; serving plain fusion", ranker_dir=str(settings.ranker_dir))
        return None
    try:
        ranker = load_ranker(settings.ranker_dir / version)
    except OutdatedRanker as exc:
        log.warning("trained ranker outdated; serving plain fusion", error=str(exc))
        return None
    if ranker.dim != dim:
        log.warning(
            "trained ranker does not match the index; serving plain fusion", dim=ranker.dim, index_dim=dim
        )
        return None
    # One ranking is a small network pass per request, and requests already run concurrently.
    torch_threads(settings.api.scoring_threads)
    log.info("trained ranker loaded", version=ranker.version, items=len(ranker.universe_ids))
    return ranker


def load_snapshot(settings: Settings) -> Snapshot:
    """Index + catalogue from ``settings.index_dir`` (blocking: run it in a thread)."""
    index, catalogue = load_artifacts(settings.index_dir)
    snapshot = Snapshot(index, catalogue, learned=load_learned_ranker(settings, index.dim))
    log.info(
        "index loaded",
        version=snapshot.version,
        items=len(index),
        dim=index.dim,
        kind=index.kind,
        missing_metadata=snapshot.missing_metadata,
    )
    return snapshot


async def open_postgres_store(settings: Settings) -> ClosableStore:
    """The profile store over ``settings.postgres``, open and answering (``StoreUnavailable`` if not)."""
    store = PostgresStore.from_settings(settings.postgres, name="llmrec-api")
    try:
        await store.open()
        await store.ping()
    except BaseException:
        await store.close()
        raise
    return store
