"""``llmrec train-ranker``: fit the llmrec ranker on every interaction of a data set and save a version.

Data: the MAL Completed lists (``mal-completed``, 5-core) from the full data when present, else from the
shipped sample (``llmrec/sample_data``). Item vectors: the API's item index (``settings.index_dir``), so
the ranker's semantic space is the one the stream's profiles live in; interactions with items the index
lacks are dropped before the k-core filter. Parameters: the tuned ones from ``tuned_params.json`` in
``settings.reports_dir`` when ``llmrec tune --models llmrec`` has run, else the registry defaults.

``train_ranker_from_settings`` is those steps from the settings (``llmrec train-ranker`` and the demo);
``train_ranker`` the training itself from explicit folders (tests, benchmarks). ``train_ranker_from_ledger``
(``llmrec train-ranker --from-ledger``) trains instead on what the stream applied: the interaction ledger in
PostgreSQL, with the vectors the API serves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from llmrec.artifacts import align_rows, load_item_vectors
from llmrec.data_source import DataSource, resolve_data_source
from llmrec.item_ids import item_key
from llmrec.logs import get_logger
from llmrec.settings import Settings
from llmrec.store.interface import CatalogueStore, LedgerPair, LedgerReader
from llmrec.store.postgres import PostgresStore
from ranker.interactions import InteractionData, k_core
from ranker.model.recommender import LLMRec, variant
from ranker.model.serving import save_ranker
from ranker.model.side_info import side_information
from research.datasets import LOADERS, MAL_COMPLETED, with_serving_keys
from research.llmrec_specs import DEFAULTS
from research.registry import resolved_params
from research.tuning import load_tuned

log = get_logger(__name__)
FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class TrainSummary:
    folder: Path
    users: int
    items: int
    interactions: int
    seconds: float
    params: dict[str, Any]
    model: LLMRec = field(repr=False)
    data: InteractionData = field(repr=False)

    def __str__(self) -> str:
        return (
            f"trained llmrec on {self.users} users x {self.items} items ({self.interactions} interactions) "
            f"in {self.seconds:.1f} s -> {self.folder}"
        )


def indexed_only(data: InteractionData, index_ids: set[int], core: int) -> InteractionData:
    keep = np.fromiter((data.item_ids[i] in index_ids for i in data.items.tolist()), dtype=bool)
    return k_core(data.subset(np.flatnonzero(keep)), core)


def train_ranker(
    data_dir: Path,
    index_dir: Path,
    ranker_dir: Path,
    *,
    params: dict[str, Any] | None = None,
    dataset: str = MAL_COMPLETED,
    core: int = 5,
    seed: int = 42,
    progress: bool = True,
) -> TrainSummary:
    started = time.perf_counter()
    ids, vectors = load_item_vectors(index_dir)
    data = indexed_only(with_serving_keys(dataset, LOADERS[dataset](data_dir)), set(ids.tolist()), core)
    item_vectors = align_rows(data.item_ids, ids, vectors)
    merged = {**DEFAULTS, **(params or {})}
    model = LLMRec(
        side_information(data, item_vectors, str(index_dir)),
        variant("llmrec", seed, **merged),
        progress=progress,
    )
    model.fit(data.matrix())
    trained_on = {"dataset": dataset, "data_dir": str(data_dir), "params": merged, "seed": seed}
    return _saved(model, data, ranker_dir, trained_on, started)


def _saved(
    model: LLMRec, data: InteractionData, ranker_dir: Path, trained_on: dict[str, Any], started: float
) -> TrainSummary:
    """Save the fitted ``model`` as a new version (``CURRENT`` points at it) and sum the training up."""
    stats = data.stats()
    folder = save_ranker(model, data.item_ids, ranker_dir, {**trained_on, **stats.as_dict()})
    seconds = time.perf_counter() - started
    params = dict(trained_on["params"])
    log.info("ranker trained", folder=str(folder), users=stats.users, items=stats.items, seconds=seconds)
    return TrainSummary(folder, stats.users, stats.items, stats.interactions, seconds, params, model, data)


@dataclass(frozen=True)
class SettingsTraining:
    """A ``train_ranker_from_settings`` run: its summary, the data it read, where its parameters came from."""

    summary: TrainSummary
    source: DataSource
    tuned: bool

    @property
    def parameters(self) -> str:
        return f"{'tuned' if self.tuned else 'default'} parameters"

    def __str__(self) -> str:
        return f"{self.summary} ({self.source.describe()}, {self.parameters})"


def train_ranker_from_settings(
    settings: Settings, tuned_path: Path | None = None, *, seed: int = 42
) -> SettingsTraining:
    """Train on the data source the settings name (the full data, else the shipped sample) with the index's
    vectors and the tuned llmrec parameters in ``tuned_path`` (default: ``tuned_params.json`` in
    ``settings.reports_dir``; registry defaults when it has none); save under ``settings.ranker_dir`` and
    point ``CURRENT`` at the new version."""
    source = resolve_data_source(settings)
    tuned = load_tuned(tuned_path or settings.reports_dir / "tuned_params.json")
    params = resolved_params(tuned, MAL_COMPLETED, "llmrec")
    summary = train_ranker(source.path, settings.index_dir, settings.ranker_dir, params=params, seed=seed)
    return SettingsTraining(summary, source, tuned=bool(params))


# -- training from what the stream applied -----------------------------------------------------------------


def ledger_data(pairs: Sequence[LedgerPair], vector_keys: set[int], core: int = 1) -> InteractionData:
    """The ledger's pairs as the harness's ``InteractionData``: items by key, kept when they have a vector
    (the ranker's semantic side needs one), each pair an interaction with its latest rating (1..10, as the
    events carry it) and latest event time; then a ``core``-core filter."""
    kept = [p for p in pairs if p.item_id in vector_keys]
    user_ids = sorted({p.user_id for p in kept})
    item_ids = sorted({p.item_id for p in kept})
    user_row = {u: r for r, u in enumerate(user_ids)}
    item_row = {i: r for r, i in enumerate(item_ids)}
    data = InteractionData(
        name="ledger",
        user_ids=tuple(user_ids),
        item_ids=tuple(item_ids),
        users=np.fromiter((user_row[p.user_id] for p in kept), dtype=np.int64, count=len(kept)),
        items=np.fromiter((item_row[p.item_id] for p in kept), dtype=np.int64, count=len(kept)),
        ratings=np.array([np.nan if p.rating is None else p.rating for p in kept], dtype=np.float32),
        timestamps=np.array([p.event_time.timestamp() for p in kept], dtype=np.float64),
    )
    return k_core(data, core) if core > 1 else data


async def _read_ledger(store: LedgerReader) -> list[LedgerPair]:
    pairs: list[LedgerPair] = []
    with tqdm(desc="reading the ledger", unit="pair") as bar:
        async for page in store.ledger_pairs():
            pairs.extend(page)
            bar.update(len(page))
    return pairs


async def _live_item_vectors(
    store: CatalogueStore, ids: IdArray, vectors: FloatArray
) -> dict[int, FloatArray]:
    """The published index's vectors overlaid with the catalogue's (new, re-embedded and deleted items):
    the vectors the API serves from."""
    out = {int(k): v for k, v in zip(ids.tolist(), vectors, strict=True)}
    cursor = 0
    while True:
        rows, cursor_next = await store.items_changed_since(cursor, limit=5000)
        for row in rows:
            key = item_key(row.item_id)
            if row.deleted:
                out.pop(key, None)
            elif row.vector is not None:
                out[key] = np.asarray(row.vector, dtype=np.float32)
        if not rows or cursor_next == cursor:
            return out
        cursor = cursor_next


def train_ranker_from_ledger(
    settings: Settings, tuned_path: Path | None = None, *, seed: int = 42, core: int = 2
) -> TrainSummary:
    """Train on every interaction the worker applied (the PostgreSQL ledger) with the vectors the API
    serves (index + live catalogue) and the tuned llmrec parameters; save a new version under
    ``settings.ranker_dir`` and point ``CURRENT`` at it. Running APIs pick it up without a restart
    (``api.ranker_poll_s``)."""
    started = time.perf_counter()

    async def read() -> tuple[list[LedgerPair], dict[int, FloatArray]]:
        store = PostgresStore.from_settings(settings.postgres, name="llmrec-train-ranker")
        async with store:
            ids, vectors = load_item_vectors(settings.index_dir)
            return await _read_ledger(store), await _live_item_vectors(store, ids, vectors)

    pairs, vectors_by_key = asyncio.run(read())
    data = ledger_data(pairs, set(vectors_by_key), core)
    if data.n_interactions == 0:
        raise ValueError("the ledger holds no interactions with indexed items: nothing to train on")
    item_vectors = np.stack([vectors_by_key[k] for k in data.item_ids]).astype(np.float32)
    tuned = load_tuned(tuned_path or settings.reports_dir / "tuned_params.json")
    merged = {**DEFAULTS, **(resolved_params(tuned, MAL_COMPLETED, "llmrec") or {})}
    model = LLMRec(
        side_information(data, item_vectors, "ledger + live catalogue vectors"),
        variant("llmrec", seed, **merged),
        progress=True,
    )
    model.fit(data.matrix())
    trained_on = {"source": "ledger", "params": merged, "seed": seed, "core": core}
    return _saved(model, data, settings.ranker_dir, trained_on, started)
