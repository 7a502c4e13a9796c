"""Offline ranking evaluation on real data: metrics, interaction data, splits, baselines and the runner.

Everything here is pure except the dataset loaders (``datasets.load_*``) and the report writer
(``evaluate.write_reports``, called by ``run_eval``)."""

from ranker.evaluation.baselines import (
    BPRMF,
    EASE,
    BPRConfig,
    ItemKNN,
    Popularity,
    Recommender,
    exclude_known,
)
from ranker.evaluation.datasets import (
    LOADERS,
    MAL_COMPLETED,
    MAL_RATING23,
    MOVIELENS,
    DatasetStats,
    InteractionData,
    k_core,
    load_dataset,
)
from ranker.evaluation.evaluate import (
    DEFAULT_KS,
    DEFAULT_MODELS,
    EvalRecord,
    evaluate_model,
    run_eval,
    select_on_validation,
)
from ranker.evaluation.splits import (
    PROTOCOL_RANDOM,
    PROTOCOL_TEMPORAL,
    Part,
    Split,
    make_split,
    random_split,
    temporal_split,
)

__all__ = [
    "BPRMF",
    "DEFAULT_KS",
    "DEFAULT_MODELS",
    "EASE",
    "LOADERS",
    "MAL_COMPLETED",
    "MAL_RATING23",
    "MOVIELENS",
    "PROTOCOL_RANDOM",
    "PROTOCOL_TEMPORAL",
    "BPRConfig",
    "DatasetStats",
    "EvalRecord",
    "InteractionData",
    "ItemKNN",
    "Part",
    "Popularity",
    "Recommender",
    "Split",
    "evaluate_model",
    "exclude_known",
    "k_core",
    "load_dataset",
    "make_split",
    "random_split",
    "run_eval",
    "select_on_validation",
    "temporal_split",
]
