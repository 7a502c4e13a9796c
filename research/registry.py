"""Every model by its report name (a ``model_spec.ModelSpec``): how to build it from parameters, its
defaults, its search space, and what data it needs. ``llmrec tune`` and ``llmrec eval`` read this table;
nothing else names models.

Search spaces are sized for a 2-core CPU (epochs and widths capped) and are the same for every data set.

The two cold-start baselines (``content_knn``, ``mf_textmap``, ``research.cold_start``) exist to place items
with no interactions, so they are tuned on protocol (e)'s validation part (the validation cold items, every
item ranked), which never holds a test item; every other model on protocol (a)'s (or (c)'s).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ranker.interactions import InteractionData
from ranker.model.base import Recommender
from research.baselines import BPRMF, EASE, BPRConfig, ItemKNN, Popularity
from research.cold_start import ContentKNN, MFTextMap, TextMapConfig
from research.factor_models import (
    ImplicitMF,
    LightGCN,
    LightGCNConfig,
    MFConfig,
    NCFConfig,
    NeuMF,
    VBPRConfig,
    VBPRText,
)
from research.library_models import ImplicitALS, ImplicitALSConfig, ImplicitBPR, ImplicitBPRConfig
from research.llmrec_specs import model_specs
from research.model_spec import ModelSpec
from research.sequential import BERT4Rec, SASRec, SequentialConfig
from research.splits import PROTOCOL_COLD_ITEMS, PROTOCOL_TEMPORAL
from research.tuning import Params, ParamSpec, SearchSpace, tuned_params

P = ParamSpec


def _sequential(cls: type[SASRec] | type[BERT4Rec]) -> Callable[[Mapping[str, Any], int], Recommender]:
    return lambda p, seed: cls(SequentialConfig(**p, seed=seed))


_SEQ_SPACE: SearchSpace = {
    "dim": P.categorical(32, 64),
    "blocks": P.int_(1, 2),
    "dropout": P.float_(0.1, 0.5),
    "lr": P.float_(3e-4, 5e-3, log=True),
    # Up to 100: with the full-softmax loss one epoch over MovieLens costs a few seconds.
    "epochs": P.int_(5, 100, log=True),
}

MODEL_SPECS: dict[str, ModelSpec] = {
    "pop": ModelSpec(lambda p, seed: Popularity()),
    "itemknn": ModelSpec(
        lambda p, seed: ItemKNN(**p),
        {"neighbours": 50, "shrink": 0.0},
        {"neighbours": P.int_(10, 500, log=True), "shrink": P.float_(0.0, 100.0)},
    ),
    "ease": ModelSpec(lambda p, seed: EASE(**p), {"reg": 200.0}, {"reg": P.float_(10.0, 5000.0, log=True)}),
    "mf": ModelSpec(
        lambda p, seed: ImplicitMF(MFConfig(**p, seed=seed)),
        {"factors": 64, "reg": 1.0, "alpha": 10.0, "iterations": 8},
        {
            "factors": P.categorical(32, 64),
            "reg": P.float_(0.01, 100.0, log=True),
            "alpha": P.float_(1.0, 50.0, log=True),
        },
    ),
    "bpr": ModelSpec(
        lambda p, seed: BPRMF(BPRConfig(**p, seed=seed)),
        {"factors": 64, "epochs": 30, "lr": 5e-3, "weight_decay": 1e-2},
        {
            "factors": P.categorical(32, 64),
            # Up to 100: on mal-completed the best trials sat at the old cap of 30.
            "epochs": P.int_(5, 100, log=True),
            "lr": P.float_(1e-3, 2e-2, log=True),
            "weight_decay": P.float_(1e-4, 1e-1, log=True),
        },
    ),
    "ncf": ModelSpec(
        lambda p, seed: NeuMF(NCFConfig(**p, seed=seed)),
        {"factors": 32, "epochs": 4, "lr": 2e-3, "negatives": 4, "weight_decay": 1e-6},
        {
            "factors": P.categorical(16, 32),
            "epochs": P.int_(2, 6),
            "lr": P.float_(5e-4, 1e-2, log=True),
            "negatives": P.int_(2, 4),
            "weight_decay": P.float_(1e-8, 1e-4, log=True),
        },
    ),
    "lightgcn": ModelSpec(
        lambda p, seed: LightGCN(LightGCNConfig(**p, seed=seed)),
        {"layers": 3, "epochs": 20, "lr": 5e-3, "reg": 1e-4},
        {
            "layers": P.int_(1, 3),
            # Up to 100: the tuned epochs sat at the old cap of 30 (29 on mal-rating23 and mal-completed).
            "epochs": P.int_(5, 100, log=True),
            "lr": P.float_(1e-3, 2e-2, log=True),
            "reg": P.float_(1e-6, 1e-2, log=True),
        },
    ),
    "vbpr_text": ModelSpec(
        lambda p, seed: VBPRText(VBPRConfig(**p, seed=seed)),
        {"epochs": 15, "lr": 5e-3, "reg": 1e-2, "text_factors": 32},
        {
            "epochs": P.int_(5, 30),
            "lr": P.float_(1e-3, 2e-2, log=True),
            "reg": P.float_(1e-4, 1e-1, log=True),
            "text_factors": P.categorical(16, 32),
        },
        needs_text=True,
    ),
    "content_knn": ModelSpec(
        lambda p, seed: ContentKNN(**p),
        {"neighbours": 100, "exponent": 1.0},
        {"neighbours": P.int_(10, 1000, log=True), "exponent": P.float_(1.0, 8.0)},
        needs_text=True,
        tune_protocol=PROTOCOL_COLD_ITEMS,
    ),
    "mf_textmap": ModelSpec(
        lambda p, seed: MFTextMap(TextMapConfig(**p, seed=seed)),
        {"factors": 64, "reg": 1.0, "alpha": 10.0, "iterations": 8, "map_reg": 1.0},
        {
            "factors": P.categorical(32, 64),
            "reg": P.float_(0.01, 100.0, log=True),
            "alpha": P.float_(1.0, 50.0, log=True),
            "map_reg": P.float_(0.01, 1000.0, log=True),
        },
        needs_text=True,
        tune_protocol=PROTOCOL_COLD_ITEMS,
    ),
    "sasrec": ModelSpec(
        _sequential(SASRec),
        # CPU-sized defaults (one epoch of the 64-d, 2-block model took ~50 s on the loaded 2-core machine).
        {"dim": 32, "blocks": 1, "dropout": 0.2, "lr": 2e-3, "epochs": 10},
        _SEQ_SPACE,
        needs_timestamps=True,
        tune_protocol=PROTOCOL_TEMPORAL,
    ),
    "bert4rec": ModelSpec(
        _sequential(BERT4Rec),
        {"dim": 32, "blocks": 1, "dropout": 0.2, "lr": 2e-3, "epochs": 10, "mask_prob": 0.2},
        {**_SEQ_SPACE, "mask_prob": P.float_(0.1, 0.4)},
        needs_timestamps=True,
        tune_protocol=PROTOCOL_TEMPORAL,
    ),
}
BASELINES = tuple(MODEL_SPECS)

# An established library's implementations of two baselines (``library_models``): reference points for
# ``bpr`` and ``mf``, with the same budget; in the table by name, not in ``BASELINES``.
LIBRARY_MODELS: dict[str, ModelSpec] = {
    "implicit-bpr": ModelSpec(
        lambda p, seed: ImplicitBPR(ImplicitBPRConfig(**p, seed=seed)),
        {"factors": 64, "learning_rate": 0.01, "regularization": 0.01, "iterations": 100},
        {
            "factors": P.categorical(32, 64),
            "learning_rate": P.float_(1e-3, 5e-2, log=True),
            "regularization": P.float_(1e-4, 1e-1, log=True),
            "iterations": P.int_(20, 300, log=True),
        },
    ),
    "implicit-als": ModelSpec(
        lambda p, seed: ImplicitALS(ImplicitALSConfig(**p, seed=seed)),
        {"factors": 64, "regularization": 0.01, "alpha": 1.0, "iterations": 15},
        {
            "factors": P.categorical(32, 64),
            "regularization": P.float_(0.01, 100.0, log=True),
            "alpha": P.float_(1.0, 50.0, log=True),
        },
    ),
}
MODEL_SPECS.update(LIBRARY_MODELS)
# Our model and its ablations (``research.llmrec_specs``): in the table, but not in ``BASELINES``.
MODEL_SPECS.update(model_specs())


def borrowed_params(tuned: Mapping[str, Any], dataset: str, name: str) -> Params:
    """The parameters model ``name`` takes from other models' tuned entries on ``dataset``."""
    out: Params = {}
    for param, source in MODEL_SPECS[name].borrowed.items():
        other, _, their_name = source.partition(".")
        their_name = their_name or param
        theirs = tuned_params(tuned, dataset, other)
        if theirs is not None and their_name in theirs:
            out[param] = theirs[their_name]
    return out


def resolved_params(tuned: Mapping[str, Any], dataset: str, name: str) -> Params | None:
    """Model ``name``'s parameters on ``dataset`` from the tuned file ``tuned``: its own tuned entry (or its
    ``tuned_as`` model's, restricted to what it accepts), with its borrowed parameters; None when it has no
    tuned entry."""
    spec = MODEL_SPECS[name]
    own = tuned_params(tuned, dataset, spec.tuned_as or name)
    if own is None:
        return None
    if spec.tuned_as is not None:
        own = {k: v for k, v in own.items() if spec.accepts(k)}
    return {**own, **borrowed_params(tuned, dataset, name)}


def applicable(name: str, data: InteractionData, has_text: bool) -> bool:
    """Whether baseline ``name`` runs on ``data``: sequential models need timestamps, the text models
    (vbpr_text, content_knn, mf_textmap, llmrec) item text."""
    spec = MODEL_SPECS[name]
    return (data.has_timestamps or not spec.needs_timestamps) and (has_text or not spec.needs_text)
