"""``llmrec train-ranker``: fit the llmrec ranker on every interaction of a data set and save a version.

Data: the MAL Completed lists (``mal-completed``, 5-core) from the full data when present, else from the
shipped sample (``llmrec/sample_data``). Item vectors: the API's item index (``settings.index_dir``), so
the ranker's semantic space is the one the stream's profiles live in; interactions with items the index
lacks are dropped before the k-core filter. Parameters: the tuned ones from ``tuned_params.json`` in
``settings.reports_dir`` when ``llmrec tune --models llmrec`` has run, else the registry defaults.

``train_ranker_from_settings`` is those steps from the settings (``llmrec train-ranker`` and the demo);
``train_ranker`` the training itself from explicit folders (tests, benchmarks).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmrec.artifacts import align_rows, load_item_vectors
from llmrec.data_source import DataSource, resolve_data_source
from llmrec.logs import get_logger
from llmrec.settings import Settings
from ranker.interactions import InteractionData, k_core
from ranker.model.recommender import LLMRec, variant
from ranker.model.serving import save_ranker
from ranker.model.side_info import side_information
from research.datasets import LOADERS, MAL_COMPLETED, with_serving_keys
from research.llmrec_specs import DEFAULTS
from research.registry import resolved_params
from research.tuning import load_tuned

log = get_logger(__name__)


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
    stats = data.stats()
    folder = save_ranker(
        model,
        data.item_ids,
        ranker_dir,
        {"dataset": dataset, "data_dir": str(data_dir), **stats.as_dict(), "params": merged, "seed": seed},
    )
    summary = TrainSummary(
        folder,
        stats.users,
        stats.items,
        stats.interactions,
        time.perf_counter() - started,
        merged,
        model,
        data,
    )
    log.info("ranker trained", folder=str(folder), users=stats.users, items=stats.items)
    return summary


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
