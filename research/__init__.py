"""Offline ranking evaluation on real data: metrics, interaction data, splits, baselines, tuning and the
runner.

Everything here is pure except the dataset loaders (``datasets.load_*``), the item text features
(``item_text``), the report writers (``evaluate.write_reports``, ``tuning.save_tuned``) and ``runner``.
The model modules (``factor_models``, ``sequential``, ``registry``, ``tuning``, ``runner``) import torch or
optuna and are imported by name, not from here.

To tune and evaluate another model (e.g. llmrec) with the same budget and protocols::

    from research.tuning import tune_model, ParamSpec
    result = tune_model(build, space, random_split(data, 42), n_trials, defaults=defaults)
    run_eval(datasets, {"llmrec": lambda seed: build(result.params, seed)}, seeds, Path("reports/eval.json"))
"""

from ranker.interactions import DatasetStats, InteractionData, k_core
from ranker.model.base import FitContext, Recommender
from research.baselines import BPRMF, EASE, BPRConfig, ItemKNN, Popularity, exclude_known
from research.datasets import LOADERS, MAL_COMPLETED, MAL_RATING23, MOVIELENS, load_dataset
from research.evaluate import (
    DEFAULT_KS,
    DEFAULT_MODELS,
    EvalRecord,
    evaluate_model,
    fit_on_split,
    merge_records,
    run_eval,
    select_on_validation,
)
from research.splits import (
    PROTOCOL_COLD,
    PROTOCOL_COLD_ITEMS,
    PROTOCOL_COLD_ITEMS_ONLY,
    PROTOCOL_ITEM_STRATIFIED,
    PROTOCOL_RANDOM,
    PROTOCOL_SPARSE,
    PROTOCOL_TEMPORAL,
    PROTOCOLS,
    Part,
    Split,
    cold_item_split,
    cold_user_split,
    item_stratified_split,
    make_split,
    random_split,
    sparse_user_split,
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
    "PROTOCOLS",
    "PROTOCOL_COLD",
    "PROTOCOL_COLD_ITEMS",
    "PROTOCOL_COLD_ITEMS_ONLY",
    "PROTOCOL_ITEM_STRATIFIED",
    "PROTOCOL_RANDOM",
    "PROTOCOL_SPARSE",
    "PROTOCOL_TEMPORAL",
    "BPRConfig",
    "DatasetStats",
    "EvalRecord",
    "FitContext",
    "InteractionData",
    "ItemKNN",
    "Part",
    "Popularity",
    "Recommender",
    "Split",
    "cold_item_split",
    "cold_user_split",
    "evaluate_model",
    "exclude_known",
    "fit_on_split",
    "item_stratified_split",
    "k_core",
    "load_dataset",
    "make_split",
    "merge_records",
    "random_split",
    "run_eval",
    "select_on_validation",
    "sparse_user_split",
    "temporal_split",
]
