"""The served llmrec model: two stages, one function for the evaluation harness and the API.

1. **Candidates** (``select_candidates``), from generators that never score the whole catalogue:
   - collaborative: the ``n_collab`` best allowed items by the user's sparse EASE score over the model's
     universe (``features.collab_scores``: a sum of pruned columns, only items the history reaches score);
   - text neighbours: the ``n_text`` best allowed universe items by the content k-NN score (items whose
     nearest warm items by text the user consumed: the sequel of a watched title, cold or not);
   - semantic: the ``n_semantic`` best allowed items of an ANN search of the catalogue with the user's
     preference vector. The catalogue is wider than the universe: items the ranker was not trained on
     (new in the catalogue, or never interacted with) are reached here;
   - cold: a search kept to *cold* items (no collaborative column) with the user's behaviour query (the
     preference vector through the behaviour map, ``behaviour``: what users of this taste consume), so a
     few of them are always weighed against the warm ones: the only way text-only items reach a user.
2. **Re-scoring** (``score_candidates``): the fusion layer over the candidates' features
   (``features.candidate_features``, standardised against the whole universe so an item's features do
   not depend on the other candidates).

Items live in two row spaces: the model's *universe* (what it was trained on: EASE rows, popularity, ID
embeddings) and the *catalogue* the caller serves from (offline the universe itself, online the API's live
item index). A ``CatalogueView`` maps between the two and searches the catalogue, so the same function
ranks in both places; ``UniverseCatalogue`` is the offline view, searched through the same ``ItemIndex``
(and the same index kind for the catalogue's size) as the API's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch

from ranker.model.behaviour import behaviour_queries
from ranker.model.features import CollabScores, ItemSide, UserInputs, candidate_features, collab_scores
from ranker.model.network import FusionNet
from ranker.retrieval import ItemIndex, choose_kind

FloatMatrix = npt.NDArray[np.float32]
IntMatrix = npt.NDArray[np.int64]
BoolMatrix = npt.NDArray[np.bool_]
PAD = -1


class CatalogueView(Protocol):
    """The catalogue a model ranks in, as row arrays (read-only) and an ANN search."""

    @property
    def to_universe(self) -> IntMatrix:
        """[n_catalogue] the universe row of each catalogue row, -1 when the model does not know it."""

    @property
    def from_universe(self) -> IntMatrix:
        """[n_universe] the catalogue row of each universe row, -1 when the catalogue lacks it."""

    @property
    def vectors(self) -> FloatMatrix:
        """[n_catalogue, dim] unit rows."""

    def search(self, queries: FloatMatrix, n: int) -> IntMatrix:
        """[b, n] catalogue rows nearest to each query by inner product, best first, -1 padded."""

    def cold_rows(self, warm: BoolMatrix) -> BoolMatrix:
        """[n_catalogue] the rows whose item has no collaborative column (``warm`` [n_universe] is the
        model's ``ItemSide.warm``): outside the universe, or inside with no interactions."""


def _cold_rows(to_universe: IntMatrix, warm: BoolMatrix) -> BoolMatrix:
    inside = to_universe >= 0
    cold = ~inside
    cold[inside] = ~warm[to_universe[inside]]
    return cold


class UniverseCatalogue:
    """The universe as its own catalogue (evaluation): identity maps, an ``ItemIndex`` of the kind the
    API would build for that many items."""

    def __init__(self, vectors: FloatMatrix) -> None:
        n = vectors.shape[0]
        self.vectors = vectors
        self.to_universe = np.arange(n, dtype=np.int64)
        self.from_universe = self.to_universe
        self.index = ItemIndex.build(self.to_universe, vectors, choose_kind(n))

    def search(self, queries: FloatMatrix, n: int) -> IntMatrix:
        _, ids = self.index.search(queries, min(n, len(self.index)))
        return ids.astype(np.int64)

    def cold_rows(self, warm: BoolMatrix) -> BoolMatrix:
        return _cold_rows(self.to_universe, warm)


class IndexCatalogue:
    """The API's item index (``ItemIndex`` rows) as the catalogue of a model whose universe rows are the
    items ``universe_ids`` (item keys): every indexed item is reachable, known to the model or not."""

    def __init__(self, index: ItemIndex, universe_ids: IntMatrix) -> None:
        self.index = index
        self.vectors = index.embeddings
        self.from_universe = index.rows(universe_ids)
        self.to_universe = np.full(len(index), PAD, dtype=np.int64)
        known = self.from_universe >= 0
        self.to_universe[self.from_universe[known]] = np.flatnonzero(known)
        self._cold: tuple[BoolMatrix, BoolMatrix] | None = None

    def search(self, queries: FloatMatrix, n: int) -> IntMatrix:
        if len(self.index) == 0:
            return np.full((queries.shape[0], 0), PAD, dtype=np.int64)
        # One OpenMP thread: the API ranks each request in its own worker thread (ItemIndex says why).
        _, ids = self.index.search_single_threaded(queries, min(n, len(self.index)))
        rows = self.index.rows(ids.ravel()).reshape(ids.shape)
        return np.where(ids >= 0, rows, PAD).astype(np.int64)

    def cold_rows(self, warm: BoolMatrix) -> BoolMatrix:
        # Once per snapshot (this view lives as long as the snapshot; the ranker's ``warm`` is fixed).
        if self._cold is None or self._cold[0] is not warm:
            self._cold = (warm, _cold_rows(self.to_universe, warm))
        return self._cold[1]


@dataclass(frozen=True)
class Generators:
    """How many candidates each generator contributes (``LLMRecConfig.generators``)."""

    n_collab: int  # best allowed items by the sparse collaborative score (the history's reach)
    n_semantic: int  # best allowed items by ANN search with the preference vector
    n_cold: int  # ... with the behaviour query, among the cold items only (no collaborative column)
    n_text: int = 0  # best allowed universe items by the content k-NN score (``features.text_knn_matrix``)
    text: bool = True  # False (the no-lm ablation): no text-based generator, no text-borrowed scores

    def at_least(self, k: int) -> Generators:
        """Enough collaborative candidates to fill ``k`` answers."""
        return replace(self, n_collab=max(self.n_collab, k))


# Catalogue rows a cold-generator query may read before it gives up (cold items may be a small share).
COLD_SEARCH_DEPTH = 4096


@dataclass(frozen=True, eq=False)
class Ranked:
    """A batch of users' candidates (catalogue rows, -1 padded) with their fused scores, best first."""

    rows: IntMatrix  # [b, m]
    scores: FloatMatrix  # [b, m], -inf at padding
    collab: CollabScores


def _top_allowed(scores: FloatMatrix, allowed: BoolMatrix, n: int) -> IntMatrix:
    """Per row, the ``n`` best allowed columns by score, best first (ties by column), -1 padded."""
    masked = np.where(allowed, scores, -np.inf)
    width = masked.shape[1]
    k = min(n, width)
    out = np.full((masked.shape[0], n), PAD, dtype=np.int64)
    if k <= 0:
        return out
    part = (
        np.argpartition(-masked, k - 1, axis=1)[:, :k]
        if k < width
        else np.tile(np.arange(width), (len(masked), 1))
    )
    part_scores = np.take_along_axis(masked, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    ranked = np.take_along_axis(part, order, axis=1)
    ranked[np.take_along_axis(part_scores, order, axis=1) == -np.inf] = PAD
    out[:, :k] = ranked
    return out


def _semantic_candidates(
    catalogue: CatalogueView, queries: FloatMatrix, allowed: BoolMatrix, n: int, max_depth: int = 0
) -> IntMatrix:
    """The first ``n`` allowed catalogue rows of each query's ANN answer; a query whose answer is mostly
    disallowed (seen items, filtered genres) is searched again, deeper (up to ``max_depth`` rows when
    positive)."""
    out = np.full((queries.shape[0], n), PAD, dtype=np.int64)
    if n <= 0:
        return out
    total = len(catalogue.to_universe)
    if max_depth > 0:
        total = min(total, max_depth)
    pending = np.arange(queries.shape[0])
    # First depth: enough hits to hold n allowed ones if allowed rows are spread evenly (twice over),
    # not n + every disallowed row: a few seen items cost little either way, but a generator kept to a
    # large share of the catalogue (cold items) would otherwise ask the ANN index for thousands of hits.
    share = max(float(allowed.mean(axis=1).min(initial=1.0)), 1.0 / max(1, total))
    depth = min(total, max(2 * n, math.ceil(2 * n / share)))
    while pending.size and depth > 0:
        hits = catalogue.search(np.ascontiguousarray(queries[pending]), depth)
        still: list[int] = []
        for row, found in zip(pending.tolist(), hits, strict=True):
            found = found[found >= 0]
            picked = found[allowed[row, found]][:n]
            out[row, : picked.size] = picked
            if picked.size < n and depth < total:
                still.append(row)
        pending = np.asarray(still, dtype=np.int64)
        depth = min(total, depth * 4)
    return out


def select_candidates(
    users: UserInputs,
    collab: CollabScores,
    catalogue: CatalogueView,
    allowed: BoolMatrix,
    generators: Generators,
    side: ItemSide,
) -> IntMatrix:
    """[b, <= n_collab + n_semantic + n_cold] candidate catalogue rows per user (-1 padded): the
    collaborative generator's items first, then the semantic and cold generators' that are new to the
    list. ``allowed`` [b, n_catalogue] marks what may be recommended (unseen, not filtered out)."""
    n_collab = generators.n_collab
    popularity_order = side.popularity_order
    known = catalogue.from_universe >= 0
    allowed_universe = np.zeros(collab.binary.shape, dtype=np.bool_)
    allowed_universe[:, known] = allowed[:, catalogue.from_universe[known]]
    # Items the history reaches through the pruned matrix, best first; a short list is made up with the
    # most popular allowed items it did not reach (ties of a zero score resolved by popularity, not by row).
    reached = allowed_universe & (collab.binary != 0)
    by_collab = _top_allowed(collab.binary, reached, n_collab)
    short = np.flatnonzero(by_collab[:, -1] == PAD) if n_collab > 0 else np.zeros(0, dtype=np.int64)
    for row in short.tolist():
        found = by_collab[row][by_collab[row] >= 0]
        order = popularity_order[(allowed_universe[row] & ~reached[row])[popularity_order]]
        fill = order[: n_collab - found.size]
        by_collab[row, found.size : found.size + fill.size] = fill
    by_collab = np.where(by_collab >= 0, catalogue.from_universe[np.maximum(by_collab, 0)], PAD)
    lists = [by_collab]
    if generators.text and generators.n_text > 0:
        by_text = _top_allowed(collab.text, allowed_universe & (collab.text > 0), generators.n_text)
        lists.append(np.where(by_text >= 0, catalogue.from_universe[np.maximum(by_text, 0)], PAD))
    if generators.text:
        lists.append(_semantic_candidates(catalogue, users.preference, allowed, generators.n_semantic))
        if generators.n_cold > 0:
            cold = catalogue.cold_rows(side.warm)
            queries = behaviour_queries(users.preference, side.behaviour)
            lists.append(
                _semantic_candidates(catalogue, queries, allowed & cold, generators.n_cold, COLD_SEARCH_DEPTH)
            )
    out = np.full((users.size, sum(c.shape[1] for c in lists)), PAD, dtype=np.int64)
    for row in range(users.size):
        merged = np.zeros(0, dtype=np.int64)
        for part in lists:
            found = part[row][part[row] >= 0]
            merged = np.concatenate([merged, found[~np.isin(found, merged)]])
        out[row, : merged.size] = merged
    return out


@torch.no_grad()
def score_candidates(
    net: FusionNet,
    side: ItemSide,
    users: UserInputs,
    collab: CollabScores,
    catalogue: CatalogueView,
    candidates: IntMatrix,
    text: bool = True,
) -> FloatMatrix:
    """[b, m] the fusion layer's scores of the candidate catalogue rows (-inf at padding); without
    ``text`` a cold item borrows no collaborative score from its text neighbours."""
    present = candidates >= 0
    safe = np.where(present, candidates, 0)
    universe_rows = np.where(present, catalogue.to_universe[safe], PAD)
    vectors = np.where(present[..., None], catalogue.vectors[safe], 0.0).astype(np.float32)
    features = candidate_features(users, side, collab, universe_rows, vectors, impute_cold=text)
    user = net.user_side(torch.from_numpy(users.preference), torch.from_numpy(users.history_weights))
    # An item with no collaborative column has no ID vector either (``recommender.id_rows``).
    with_id = np.where(universe_rows >= 0, side.warm[np.maximum(universe_rows, 0)], False)
    item = net.item_side(torch.from_numpy(vectors), torch.from_numpy(np.where(with_id, universe_rows, PAD)))
    fused = net(torch.from_numpy(features), user[:, None, :], item).numpy()
    scores: FloatMatrix = np.where(present, fused, -np.inf).astype(np.float32)
    return scores


def rank_candidates(
    net: FusionNet,
    side: ItemSide,
    users: UserInputs,
    catalogue: CatalogueView,
    allowed: BoolMatrix,
    generators: Generators,
) -> Ranked:
    """The served function: candidates, re-scored, best first."""
    net.eval()
    collab = collab_scores(users, side)
    candidates = select_candidates(users, collab, catalogue, allowed, generators, side)
    scores = score_candidates(net, side, users, collab, catalogue, candidates, generators.text)
    order = np.argsort(-scores, axis=1, kind="stable")
    return Ranked(
        np.take_along_axis(candidates, order, axis=1), np.take_along_axis(scores, order, axis=1), collab
    )
