"""``ModelSpec``: one entry of the harness's model table (``registry.MODEL_SPECS``), how to build a model
from parameters, its defaults, its search space, what data it needs and how it is tuned. Its own module so
that the baselines' table (``registry``) and the llmrec entries (``llmrec_specs``) both build on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ranker.model.base import Recommender
from research.evaluate import ModelFactory
from research.splits import PROTOCOL_RANDOM
from research.tuning import SearchSpace


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[[Mapping[str, Any], int], Recommender]  # (params, seed) -> unfitted model
    defaults: Mapping[str, Any] = field(default_factory=dict)
    space: SearchSpace = field(default_factory=dict)
    needs_timestamps: bool = False  # sequential models: only where the data has a real time order
    needs_text: bool = False  # needs item text features
    # Whose validation part tunes it: protocol (a) for every model but the sequential ones, which predict
    # the next item and are tuned on protocol (c)'s (each user's second-to-last item, in time order).
    tune_protocol: str = PROTOCOL_RANDOM
    # Not tuned on its own: it takes ``tuned_as``'s tuned parameters (those it accepts), as an ablation takes
    # the full model's, so that the two differ only by what the ablation removes.
    tuned_as: str | None = None
    # Parameters taken from another model's tuned entry on the same data set, {parameter: model}: the llmrec
    # model's collaborative branch is EASE, with the EASE baseline's tuned regularisation.
    # A source ``"model.name"`` takes that model's parameter ``name`` (the llmrec model's text-neighbour
    # branch is the content_knn baseline's, whose ``neighbours`` are llmrec's ``text_neighbours``).
    borrowed: Mapping[str, str] = field(default_factory=dict)

    def accepts(self, param: str) -> bool:
        return param in self.defaults or param in self.space

    def factory(self, params: Mapping[str, Any] | None = None) -> ModelFactory:
        merged = {**self.defaults, **(params or {})}
        return lambda seed: self.build(merged, seed)
