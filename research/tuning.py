"""Equal-budget hyper-parameter tuning on the validation part, for the baselines and for our own model.

``tune_model`` is the one entry point: ``n_trials`` optuna TPE trials (sampler seeded), each fitting a model
built from the trial's parameters on the split's training part and scoring NDCG@10 (by default) on its
validation part; the test part is never read. The model's default parameters, when given, are the first
trial, so tuning can only match or improve on them. Every model in the report gets the same ``n_trials``.

Tuned parameters are stored in one JSON file (``reports/tuned_params.json``)::

    {"budget": {"n_trials": 10, "metric": "ndcg@10", "protocol": "user_random_80_10_10", "seed": 42,
                "part": "validation"},
     "datasets": {"mal-completed": {"ease": {"params": {"reg": 312.5}, "validation": 0.36, "trials": 10,
                                             "seconds": 81.2}, ...}, ...}}

``save_tuned`` merges into the file (a re-tuned model replaces its own entry only).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ranker.model.base import Recommender
from research.evaluate import evaluate_model, fit_on_split
from research.splits import Part, Split

Params = dict[str, Any]
FactoryFromParams = Callable[[Mapping[str, Any], int], Recommender]  # (params, seed) -> unfitted model


@dataclass(frozen=True)
class ParamSpec:
    """One dimension of a search space: ``kind`` is "int", "float" (``log`` for a log scale) or
    "categorical" (``choices``)."""

    kind: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()

    @classmethod
    def int_(cls, low: int, high: int, log: bool = False) -> ParamSpec:
        return cls("int", low, high, log)

    @classmethod
    def float_(cls, low: float, high: float, log: bool = False) -> ParamSpec:
        return cls("float", low, high, log)

    @classmethod
    def categorical(cls, *choices: Any) -> ParamSpec:
        return cls("categorical", choices=tuple(choices))


SearchSpace = Mapping[str, ParamSpec]


@dataclass(frozen=True)
class TuneResult:
    params: Params
    value: float
    trials: list[tuple[Params, float]] = field(default_factory=list)
    seconds: float = 0.0
    protocol: str | None = None  # whose validation part, when not the budget's

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "params": self.params,
            "validation": self.value,
            "trials": len(self.trials),
            "seconds": self.seconds,
        }
        if self.protocol is not None:
            out["protocol"] = self.protocol
        return out


def _suggest(trial: Any, space: SearchSpace) -> Params:
    params: Params = {}
    for name, spec in space.items():
        if spec.kind == "int":
            params[name] = trial.suggest_int(name, int(spec.low), int(spec.high), log=spec.log)
        elif spec.kind == "float":
            params[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log)
        elif spec.kind == "categorical":
            params[name] = trial.suggest_categorical(name, list(spec.choices))
        else:
            raise ValueError(f"unknown parameter kind {spec.kind!r} for {name}")
    return params


def validation_score(
    model: Recommender,
    split: Split,
    metric: str = "ndcg@10",
    item_features: npt.NDArray[np.float32] | None = None,
) -> float:
    fit_on_split(model, split, item_features)
    record = evaluate_model(model, split, part=Part.VALIDATION, ks=(10,), diversity=False)
    return float(record.metrics[metric])


def tune_model(
    factory_from_params: FactoryFromParams,
    search_space: SearchSpace,
    split: Split,
    n_trials: int,
    *,
    seed: int = 42,
    metric: str = "ndcg@10",
    defaults: Mapping[str, Any] | None = None,
    item_features: npt.NDArray[np.float32] | None = None,
) -> TuneResult:
    """Best parameters of ``n_trials`` TPE trials by validation ``metric`` (higher is better). A model
    with an empty search space is fitted once with ``defaults``."""
    import optuna  # heavy (sqlalchemy, alembic): only tuning pays for it

    started = time.perf_counter()
    if not search_space:
        params = dict(defaults or {})
        value = validation_score(factory_from_params(params, split.seed), split, metric, item_features)
        return TuneResult(params, value, [(params, value)], time.perf_counter() - started)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Half the budget (at most 5 trials) explores at random before TPE models the results.
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, max(1, n_trials // 2)))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    if defaults:
        study.enqueue_trial({k: v for k, v in defaults.items() if k in search_space})
    trials: list[tuple[Params, float]] = []

    def objective(trial: Any) -> float:
        params = {**(defaults or {}), **_suggest(trial, search_space)}
        value = validation_score(factory_from_params(params, split.seed), split, metric, item_features)
        trials.append((params, value))
        return value

    study.optimize(objective, n_trials=n_trials)
    best = {**(defaults or {}), **study.best_params}
    return TuneResult(best, float(study.best_value), trials, time.perf_counter() - started)


def load_tuned(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"budget": {}, "datasets": {}}
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def tuned_params(tuned: Mapping[str, Any], dataset: str, model: str) -> Params | None:
    entry = tuned.get("datasets", {}).get(dataset, {}).get(model)
    return None if entry is None else dict(entry["params"])


def save_tuned(
    path: Path, budget: Mapping[str, Any], results: Mapping[str, Mapping[str, TuneResult]]
) -> dict[str, Any]:
    """Merge ``results`` (dataset -> model -> result) into ``path``; the budget is this run's."""
    stored = load_tuned(path)
    stored["budget"] = dict(budget)
    for dataset, by_model in results.items():
        slot = stored.setdefault("datasets", {}).setdefault(dataset, {})
        for model, result in by_model.items():
            slot[model] = result.as_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return stored
