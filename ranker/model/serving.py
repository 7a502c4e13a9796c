"""Versioned artifacts of a trained llmrec ranker, and the ranker the gRPC service serves from them.

Layout (``settings.ranker_dir``)::

    <version>/meta.json            config, features, decay, what it was trained on, embedding source
    <version>/weights.pt           the fusion layer (torch state_dict, loaded with weights_only=True)
    <version>/item_side.npz        pruned EASE matrix (CSR parts), item vectors, log popularity, constants,
                                   behaviour map, content k-NN matrix (CSR parts)
    <version>/universe_ids.npy     the raw item id of each universe row (the items it was trained on)
    CURRENT                        the version the API loads at start-up (replaced atomically)

What the ranker consumes online, so that online and offline are one function (``two_stage.rank_candidates``,
over the API's live item index as the catalogue, so items the ranker was not trained on are reachable):

- the **preference vector**: the stream's profile from PostgreSQL, ``user_vector(state)``: offline it is
  ``profiles.preference_vectors`` of the same strengths and decay, i.e. the same vector;
- the **history**: the user's seen items (``SeenItem``: item, summed strength, latest event time) mapped
  to universe rows; binary membership, and weight ``strength * decay(ref_time - event_time)`` with
  ``ref_time`` the profile's reference time (the offline ``history_weights`` of the dynamic profile).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import torch

from llmrec.artifacts import (
    RANKER_CURRENT_FILE,
    RANKER_ITEM_SIDE_FILE,
    RANKER_META_FILE,
    RANKER_UNIVERSE_FILE,
    RANKER_WEIGHTS_FILE,
    current_version,
)
from ranker.model.features import FEATURES, ItemSide, UserInputs
from ranker.model.network import FusionNet
from ranker.model.profiles import ProfileKind
from ranker.model.recommender import LLMRec, LLMRecConfig, new_net
from ranker.model.two_stage import CatalogueView, IndexCatalogue, Ranked, rank_candidates
from ranker.preferences import DecayPolicy
from ranker.retrieval import ItemIndex

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


# One seen item as the ranker needs it online: (item id, summed strength, latest event time in Unix s),
# built from ``llmrec.store.SeenItem``.
SeenSignal = tuple[int, float, float]


class LearnedRanker:
    """A trained llmrec ranker: scores every universe item for one user. Thread-safe (no mutation)."""

    def __init__(
        self,
        version: str,
        config: LLMRecConfig,
        net: FusionNet,
        side: ItemSide,
        universe_ids: IdArray,
        meta: dict[str, Any],
    ) -> None:
        self.version = version
        self.config = config
        self.net = net.eval()
        self.side = side
        self.universe_ids = universe_ids
        self.meta = meta
        self.decay = DecayPolicy(**meta["decay"])
        self._row = {int(i): r for r, i in enumerate(universe_ids.tolist())}

    @property
    def dim(self) -> int:
        return int(self.side.vectors.shape[1])

    def online_inputs(
        self, preference: FloatArray, seen: Sequence[SeenSignal], ref_time_s: float
    ) -> UserInputs:
        n = len(self.universe_ids)
        binary = np.zeros((1, n), dtype=np.float32)
        weights = np.zeros((1, n), dtype=np.float32)
        for item_id, strength, event_time_s in seen:
            row = self._row.get(item_id)
            if row is None:
                continue
            binary[0, row] = 1.0
            if self.config.profile is ProfileKind.UNIFORM:
                weights[0, row] = 1.0
            elif self.config.profile is ProfileKind.STATIC or not math.isfinite(ref_time_s):
                weights[0, row] = strength
            else:
                weights[0, row] = strength * self.decay.factor(ref_time_s - event_time_s)
        pref = np.asarray(preference, dtype=np.float32).reshape(1, -1)
        return UserInputs(pref, binary, weights)

    def catalogue_of(self, index: ItemIndex) -> IndexCatalogue:
        """The API's item index as this ranker's catalogue (every indexed item reachable)."""
        return IndexCatalogue(index, self.universe_ids)

    def rank(self, inputs: UserInputs, catalogue: CatalogueView, allowed: BoolArray, k: int) -> Ranked:
        """One user's candidates (catalogue rows) and scores, best first (``two_stage.rank_candidates``).
        At least ``k`` candidates when the catalogue allows that many: the collaborative generator takes
        ``max(n_collab, k)``, and the semantic one makes up for allowed items the universe lacks."""
        known = catalogue.from_universe[catalogue.from_universe >= 0]
        in_universe = int(allowed[known].sum())
        generators = self.config.generators().at_least(k)
        short = max(0, k - in_universe)
        generators = replace(generators, n_semantic=generators.n_semantic + short)
        return rank_candidates(self.net, self.side, inputs, catalogue, allowed[None, :], generators)


def torch_threads(n: int) -> None:
    """Torch's intra-op threads for this process (what ``api.scoring_threads`` sets)."""
    torch.set_num_threads(n)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_ranker(model: LLMRec, universe_ids: Sequence[int], root: Path, trained_on: dict[str, Any]) -> Path:
    """Write a new version folder under ``root`` and point ``CURRENT`` at it; returns the folder."""
    state = {k: v.detach().clone() for k, v in model.net.state_dict().items()}
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].numpy().tobytes())
    version = f"llmrec-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{digest.hexdigest()[:8]}"
    folder = root / version
    folder.mkdir(parents=True, exist_ok=False)
    torch.save(state, folder / RANKER_WEIGHTS_FILE)
    side = model.item_side
    neighbours = side.neighbours
    np.savez(
        folder / RANKER_ITEM_SIDE_FILE,
        neighbours_data=neighbours.data,
        neighbours_indices=neighbours.indices,
        neighbours_indptr=neighbours.indptr,
        vectors=side.vectors,
        log_popularity=side.log_popularity,
        constants=np.array(side.constants, np.float64),
        behaviour=side.behaviour,
        text_data=side.text_matrix.data,
        text_indices=side.text_matrix.indices,
        text_indptr=side.text_matrix.indptr,
        text_knn=np.array([side.text_neighbours, side.text_exponent], np.float64),
    )
    np.save(folder / RANKER_UNIVERSE_FILE, np.asarray(universe_ids, dtype=np.int64), allow_pickle=False)
    meta = {
        "version": version,
        "model": model.name,
        "config": model.config.as_dict(),
        "features": list(FEATURES),
        "universe_ids": UNIVERSE_IDS,
        "format": RANKER_FORMAT,
        "decay": {"alpha": model.decay.alpha, "unit_s": model.decay.unit_s},
        "dim": model.side_info.dim,
        "embeddings": model.side_info.source,
        "trained_on": trained_on,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (folder / RANKER_META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    _write_atomic(root / RANKER_CURRENT_FILE, version + "\n")
    return folder


# What the saved universe ids are: item keys (``llmrec.item_ids``). Rankers saved before catalogue ids held
# MAL anime ids there and have no such entry.
UNIVERSE_IDS = "item-keys"


# The saved model's format: the two-stage ranker with a sparse collaborative matrix and the behaviour map.
# Rankers saved before it lack the map and its feature (two-stage-1), or hold a dense EASE matrix and were
# trained on features standardised differently.
RANKER_FORMAT = "two-stage-2"


class OutdatedRanker(ValueError):
    """A saved ranker whose format this code no longer serves; it must be trained again."""


def is_outdated(folder: Path) -> bool:
    """Whether the saved ranker at ``folder`` is of a format ``load_ranker`` refuses (``OutdatedRanker``)."""
    meta: dict[str, Any] = json.loads((folder / RANKER_META_FILE).read_text(encoding="utf-8"))
    return meta.get("universe_ids") != UNIVERSE_IDS or meta.get("format") != RANKER_FORMAT


def load_ranker(folder: Path) -> LearnedRanker:
    meta: dict[str, Any] = json.loads((folder / RANKER_META_FILE).read_text(encoding="utf-8"))
    if meta.get("universe_ids") != UNIVERSE_IDS:
        raise OutdatedRanker(
            f"ranker {folder.name} names its items by MAL anime id, from before catalogue ids; "
            "train it again (`llmrec train-ranker`)"
        )
    if meta.get("format") != RANKER_FORMAT:
        raise OutdatedRanker(
            f"ranker {folder.name} is of format {meta.get('format', 'dense-ease')}, not {RANKER_FORMAT} "
            "(the two-stage ranker); train it again (`llmrec train-ranker`)"
        )
    if tuple(meta["features"]) != FEATURES:
        raise ValueError(f"ranker {folder.name} was trained on features {meta['features']}, not {FEATURES}")
    config = LLMRecConfig.from_dict(meta["config"])
    with np.load(folder / RANKER_ITEM_SIDE_FILE) as stored:
        pop_mean, pop_std, act_mean, act_std = (float(x) for x in stored["constants"])
        vectors = stored["vectors"]
        n = vectors.shape[0]
        neighbours = sp.csr_matrix(
            (stored["neighbours_data"], stored["neighbours_indices"], stored["neighbours_indptr"]),
            shape=(n, n),
        )
        side = ItemSide.assemble(
            neighbours,
            vectors,
            stored["log_popularity"],
            (pop_mean, pop_std, act_mean, act_std),
            stored["behaviour"],
            sp.csr_matrix((stored["text_data"], stored["text_indices"], stored["text_indptr"]), shape=(n, n)),
            (int(stored["text_knn"][0]), float(stored["text_knn"][1])),
        )
    universe = np.load(folder / RANKER_UNIVERSE_FILE, allow_pickle=False).astype(np.int64)
    net = new_net(config, side.vectors.shape[1], len(universe))
    net.load_state_dict(torch.load(folder / RANKER_WEIGHTS_FILE, weights_only=True))
    return LearnedRanker(meta["version"], config, net, side, universe, meta)


def load_current(root: Path) -> LearnedRanker | None:
    """The ``CURRENT`` version under ``root``, or None when no ranker was trained."""
    version = current_version(root)
    return None if version is None else load_ranker(root / version)
