"""The per-(user, item) inputs of the fusion layer.

A user enters as ``UserInputs``: the preference vector (the stream's profile online, ``profiles``
offline) and the history over the model's item *universe* (the items it was trained on) with the
preference module's weight of each item. The same function serves offline evaluation and the API.

Raw branch features (``FEATURES``, listed here by branch), each standardised by the user's mean and
standard deviation over the universe (z-scores), except popularity and activity, standardised with global
constants from training:

- ``collab``: the collaborative branch, ``binary history @ B``, ``B`` the EASE item-item matrix
  (``ease.ease_matrix``: closed-form ridge regression with a zero diagonal, fitted on the training matrix),
  kept sparse (``collaborative_matrix``); 0 for an item outside the universe;
- ``collab_pref``: the same with the history weighted by the preference module (signed strengths x decay);
- ``semantic``: cosine between the preference vector and the item's language-model vector;
- ``text_knn``: content k-NN in the language model's space, ``binary history @ T``: ``T``'s column for an
  item holds its ``text_neighbours`` nearest warm items by cosine, weighted ``max(cos, 0) ** exponent``
  (``text_knn_matrix``), so an item scores where the user consumed its textual near-neighbours (the
  sequel of a watched title, another season of a show); it needs no interaction with the item itself;
- ``behaviour``: the same preference vector through the behaviour map (``behaviour``: the text vectors
  aligned with co-consumption), ``(p W) . x``: what users with this taste in text consumed, so it reaches
  an item nobody has interacted with yet;
- ``popularity``: ``log1p(training interactions of the item)`` (0 interactions outside the universe);
- ``activity``: ``log1p(history length)`` of the user (lets the fusion layer trust popularity or the
  collaborative branch differently for light and heavy users);
- ``cold``: 1 for an item with no collaborative column (never interacted with, or outside the universe),
  else 0, not standardised: the fusion layer scores such items with a head of their own (``network``).

Candidates (``two_stage``): the fusion layer re-ranks, for each user, the union of the generators' items
(the best unseen items by ``collab``, by ``text_knn``, by ANN search with the preference vector and with
the behaviour query); every other item is ranked after them by ``collab``. Retrieval reads the
binary history, not the preference weights: every interaction says the user engaged with the item, and
the fusion layer decides how much the ratings and their age add. On the validation part of protocol (a),
seed 42, retrieving by ``collab_pref`` instead gave NDCG@10 0.2248 against 0.2304 on MovieLens (where a
third of the ratings are 3 stars or less, i.e. negative strengths) and 0.3018 against 0.3019 on
mal-completed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from ranker.interactions import IntArray
from ranker.model.behaviour import behaviour_queries, fit_behaviour_map
from ranker.model.ease import ease_matrix, prune_rows
from ranker.retrieval import ItemIndex, choose_kind

FloatMatrix = npt.NDArray[np.float32]
BoolMatrix = npt.NDArray[np.bool_]
IntMatrix = npt.NDArray[np.int64]

FEATURES = ("collab", "collab_pref", "semantic", "popularity", "activity", "behaviour", "text_knn", "cold")
N_FEATURES = len(FEATURES)
COLLAB = FEATURES.index("collab")
COLLAB_PREF = FEATURES.index("collab_pref")
SEMANTIC = FEATURES.index("semantic")
BEHAVIOUR = FEATURES.index("behaviour")
TEXT_KNN = FEATURES.index("text_knn")
COLD = FEATURES.index("cold")
TEXT_FEATURES = (SEMANTIC, BEHAVIOUR, TEXT_KNN)  # the columns read from the language model's vectors
# Defaults of the content k-NN branch (``text_knn_matrix``): warm text neighbours per item, and the power
# that sharpens their cosines (sentence-embedding cosines sit in a narrow band, where a plain sum favours
# items mildly similar to everything). The model takes the ``content_knn`` baseline's tuned values per
# data set (``research.llmrec_specs``); 10 and about 3 are what that tuning chose on mal-completed.
TEXT_NEIGHBOURS = 10
TEXT_EXPONENT = 3.0
_EPS = 1e-6


@dataclass(frozen=True, eq=False)
class UserInputs:
    """A batch of users as the ranker consumes them. ``history_*`` are dense over the universe."""

    preference: FloatMatrix  # [b, dim] unit rows (zeros = no usable profile)
    history_binary: FloatMatrix  # [b, n_universe] 1 where the user interacted
    history_weights: FloatMatrix  # [b, n_universe] preference-module weight of each history item

    @property
    def size(self) -> int:
        return int(self.preference.shape[0])

    def take(self, users: IntArray) -> UserInputs:
        return UserInputs(self.preference[users], self.history_binary[users], self.history_weights[users])


@dataclass(frozen=True, eq=False)
class ItemSide:
    """What the feature builder knows about the universe: the pruned EASE matrix, semantic vectors and
    their moments, the behaviour map, popularity, and the global standardisation constants."""

    neighbours: sp.csr_matrix  # [n, n] EASE's B, each column keeping its strongest inputs (``fit``)
    vectors: FloatMatrix  # [n, dim] unit rows
    log_popularity: FloatMatrix  # [n]
    popularity_mean: float
    popularity_std: float
    activity_mean: float
    activity_std: float
    # Mean and (population) covariance of the universe's vectors: the mean and standard deviation of a
    # user's cosine over the universe are ``p . mean`` and ``sqrt(p' cov p)``, without scoring every item.
    vector_mean: npt.NDArray[np.float64]  # [dim]
    vector_cov: npt.NDArray[np.float64]  # [dim, dim]
    popularity_order: IntMatrix  # universe rows, most interacted-with first (ties by row)
    # Items with a collaborative column (fitted by EASE) and an index over their vectors: a *cold* item (no
    # column: never interacted with, beyond ``collab_items``, or outside the universe) takes its
    # collaborative scores from its nearest warm items by text (``impute_cold``).
    warm: npt.NDArray[np.bool_]  # [n]
    warm_index: ItemIndex  # ids = universe rows of the warm items
    behaviour: FloatMatrix  # [dim, dim] ``behaviour.fit_behaviour_map``
    text_matrix: sp.csr_matrix  # [n, n] ``text_knn_matrix``: rows the warm sources, columns the targets
    text_neighbours: int  # the matrix's neighbours per item and exponent, for items outside the universe
    text_exponent: float

    @classmethod
    def fit(
        cls,
        train: FloatMatrix,
        vectors: FloatMatrix,
        reg: float,
        neighbours: int = 0,
        max_items: int = 0,
        behaviour_reg: float = 3e-6,
        text_neighbours: int = TEXT_NEIGHBOURS,
        text_exponent: float = TEXT_EXPONENT,
    ) -> ItemSide:
        log_pop = np.log1p(train.sum(axis=0)).astype(np.float32)
        activity = np.log1p(train.sum(axis=1))
        side = cls.assemble(
            collaborative_matrix(train, reg, neighbours, max_items),
            vectors,
            log_pop,
            (float(log_pop.mean()), float(log_pop.std()), float(activity.mean()), float(activity.std())),
            fit_behaviour_map(train, vectors, behaviour_reg),
        )
        return side.with_text_matrix(text_neighbours, text_exponent)

    def with_text_matrix(self, neighbours: int, exponent: float) -> ItemSide:
        """This side with its content k-NN matrix built from its vectors and warm items (``fit``)."""
        matrix = text_knn_matrix(self.vectors, self.warm_index, neighbours, exponent)
        return replace(self, text_matrix=matrix, text_neighbours=neighbours, text_exponent=exponent)

    @classmethod
    def assemble(
        cls,
        neighbours: sp.csr_matrix,
        vectors: FloatMatrix,
        log_popularity: FloatMatrix,
        constants: tuple[float, float, float, float],
        behaviour: FloatMatrix,
        text_matrix: sp.csr_matrix | None = None,
        text_knn: tuple[int, float] = (TEXT_NEIGHBOURS, TEXT_EXPONENT),
    ) -> ItemSide:
        """The side from its fitted parts; without ``text_matrix`` an empty one (``with_text_matrix``
        builds it: ``fit`` does, a saved ranker stores it)."""
        wide = vectors.astype(np.float64)
        mean = wide.mean(axis=0)
        centred = wide - mean
        cov = centred.T @ centred / max(1, wide.shape[0])
        order = np.lexsort((np.arange(log_popularity.size), -log_popularity)).astype(np.int64)
        matrix = sp.csr_matrix(neighbours, dtype=np.float32)
        warm = np.diff(matrix.tocsc().indptr) > 0
        warm_rows = np.flatnonzero(warm).astype(np.int64)
        warm_index = (
            ItemIndex.build(warm_rows, vectors[warm_rows], choose_kind(warm_rows.size))
            if warm_rows.size
            else ItemIndex.empty(vectors.shape[1])
        )
        n = vectors.shape[0]
        text = sp.csr_matrix((n, n), dtype=np.float32) if text_matrix is None else text_matrix
        return cls(
            matrix,
            vectors,
            log_popularity,
            *constants,
            mean,
            cov,
            order,
            warm,
            warm_index,
            behaviour,
            text,
            *text_knn,
        )

    @property
    def n_items(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def constants(self) -> tuple[float, float, float, float]:
        return (self.popularity_mean, self.popularity_std, self.activity_mean, self.activity_std)


def collaborative_matrix(train: FloatMatrix, reg: float, neighbours: int, max_items: int) -> sp.csr_matrix:
    """EASE's item-item matrix as a sparse ``[n, n]`` matrix.

    - Fitted on the items with interactions only (an item without any has an all-zero row and column of B
      anyway) and, with ``max_items`` > 0, on the ``max_items`` most interacted-with of them: the inverse is
      cubic in that count, so the cap bounds the fit; the other items get no collaborative score.
    - With ``neighbours`` > 0 each column keeps its ``neighbours`` largest entries by magnitude: the inputs
      that explain the target item best, signed. Column pruning is what re-scoring a candidate reads; on
      mal-completed's validation part, 50 per column scored above the dense matrix (reports/candidates.md).
    """
    n = train.shape[1]
    counts = train.sum(axis=0)
    active = np.flatnonzero(counts > 0)
    if 0 < max_items < active.size:
        active = np.sort(active[np.argsort(-counts[active], kind="stable")[:max_items]])
    if active.size == 0:
        return sp.csr_matrix((n, n), dtype=np.float32)
    b = ease_matrix(train[:, active], reg)
    pruned = (
        sp.csr_matrix(prune_rows(b.T, neighbours, by_magnitude=True).T)
        if neighbours > 0
        else sp.csr_matrix(b)
    )
    coo = pruned.tocoo()
    out = sp.csr_matrix(
        (coo.data.astype(np.float32), (active[coo.row], active[coo.col])), shape=(n, n), dtype=np.float32
    )
    out.sort_indices()
    return out


def text_knn_matrix(
    vectors: FloatMatrix, warm_index: ItemIndex, neighbours: int, exponent: float
) -> sp.csr_matrix:
    """[n, n] content k-NN: column ``j`` holds item ``j``'s ``neighbours`` most similar warm items (rows;
    never itself), weighted ``max(cos, 0) ** exponent``. Built by batch searches of the warm items' index,
    so its cost is n searches, never an n x n product."""
    n = vectors.shape[0]
    k = min(neighbours + 1, len(warm_index))
    if k == 0:
        return sp.csr_matrix((n, n), dtype=np.float32)
    rows: list[IntMatrix] = []
    weights: list[FloatMatrix] = []
    for start in range(0, n, 4096):
        sims, found = warm_index.search(vectors[start : start + 4096], k)
        targets = np.arange(start, start + found.shape[0])[:, None]
        keep = (found >= 0) & (found != targets)
        # Keep the first ``neighbours`` hits that are not the item itself.
        keep &= np.cumsum(keep, axis=1) <= neighbours
        rows.append(np.where(keep, found, -1))
        weights.append(np.where(keep, np.maximum(sims, 0.0) ** exponent, 0.0).astype(np.float32))
    source, weight = np.vstack(rows), np.vstack(weights)
    target = np.broadcast_to(np.arange(n)[:, None], source.shape)
    kept = (source >= 0) & (weight > 0)
    out = sp.csr_matrix((weight[kept], (source[kept], target[kept])), shape=(n, n), dtype=np.float32)
    out.sort_indices()
    return out


@dataclass(frozen=True, eq=False)
class CollabScores:
    """A batch of users' sparse branches over the whole universe: what the features are standardised
    against, and what ranks the collaborative and text-neighbour candidates."""

    binary: FloatMatrix  # [b, n] binary history @ B
    weighted: FloatMatrix  # [b, n] preference-weighted history @ B
    text: FloatMatrix  # [b, n] binary history @ T (``text_knn_matrix``)


def collab_scores(users: UserInputs, side: ItemSide) -> CollabScores:
    return CollabScores(
        np.asarray(users.history_binary @ side.neighbours, dtype=np.float32),
        np.asarray(users.history_weights @ side.neighbours, dtype=np.float32),
        np.asarray(users.history_binary @ side.text_matrix, dtype=np.float32),
    )


def _text_knn_at(
    users: UserInputs, side: ItemSide, text: FloatMatrix, rows: IntMatrix, vectors: FloatMatrix
) -> FloatMatrix:
    """[b, m] the content k-NN score of each user's ``m`` items: a universe item's from ``text``; an item
    outside the universe (new in the catalogue) from its warm neighbours searched now."""
    inside = rows >= 0
    out = np.where(inside, np.take_along_axis(text, np.where(inside, rows, 0), axis=1), 0.0)
    if inside.all():
        return out.astype(np.float32)
    k = min(side.text_neighbours, len(side.warm_index))
    if k == 0:
        return out.astype(np.float32)
    users_at, cols = np.nonzero(~inside)
    item_vectors = vectors[cols] if vectors.ndim == 2 else vectors[users_at, cols]
    # One OpenMP thread: online this runs in a request's worker thread (``ItemIndex`` says why).
    sims, near = side.warm_index.search_single_threaded(np.ascontiguousarray(item_vectors, np.float32), k)
    weight = np.where(near >= 0, np.maximum(sims, 0.0) ** side.text_exponent, 0.0)
    consumed = users.history_binary[users_at[:, None], np.maximum(near, 0)]
    out[users_at, cols] = (weight * consumed).sum(axis=1)
    return out.astype(np.float32)


# Warm neighbours a cold item's collaborative score is borrowed from.
COLD_NEIGHBOURS = 10


def cold_neighbours(side: ItemSide, vectors: FloatMatrix) -> tuple[IntMatrix, FloatMatrix]:
    """[c, K] the warm universe rows nearest to each vector under the behaviour map (the warm items ``i``
    with the largest ``x_i' W x``: those whose audience would consume this item), and their weights (the
    positive similarities, normalised to sum 1; all 0 when none is positive)."""
    k = min(COLD_NEIGHBOURS, len(side.warm_index))
    if k == 0 or vectors.shape[0] == 0:
        return np.zeros((vectors.shape[0], 0), np.int64), np.zeros((vectors.shape[0], 0), np.float32)
    queries = np.ascontiguousarray(vectors @ side.behaviour.T, dtype=np.float32)
    # One OpenMP thread: online this runs in a request's worker thread (``ItemIndex`` says why).
    sims, rows = side.warm_index.search_single_threaded(queries, k)
    weights = np.where(rows >= 0, np.maximum(sims, 0.0), 0.0)
    total = weights.sum(axis=1, keepdims=True)
    weights = np.where(total > 0, weights / np.maximum(total, _EPS), 0.0).astype(np.float32)
    return np.maximum(rows, 0).astype(np.int64), weights


def _raw_at(
    side: ItemSide, collab: CollabScores, rows: IntMatrix, vectors: FloatMatrix, impute_cold: bool = True
) -> tuple[FloatMatrix, FloatMatrix]:
    """Both collaborative scores of each user's ``m`` items ([b, m] each): a warm item's own; a cold
    item's, the weighted mean of its warm text neighbours' scores for that user (the text stands in for
    the interactions it does not have yet: content k-NN in the space of the user's collaborative scores)."""
    inside = rows >= 0
    safe = np.where(inside, rows, 0)
    warm = inside & side.warm[safe]
    binary = np.where(warm, np.take_along_axis(collab.binary, safe, axis=1), 0.0)
    weighted = np.where(warm, np.take_along_axis(collab.weighted, safe, axis=1), 0.0)
    if warm.all() or not impute_cold:
        return binary.astype(np.float32), weighted.astype(np.float32)
    shared = vectors.ndim == 2  # one item list for the whole batch: borrow once per item, not per user
    if shared:
        cold_cols = np.flatnonzero(~warm[0])
        near, weights = cold_neighbours(side, vectors[cold_cols])
        binary[:, cold_cols] = np.einsum("ck,bck->bc", weights, collab.binary[:, near])
        weighted[:, cold_cols] = np.einsum("ck,bck->bc", weights, collab.weighted[:, near])
    else:
        users, cols = np.nonzero(~warm)
        near, weights = cold_neighbours(side, vectors[users, cols])
        binary[users, cols] = (weights * collab.binary[users[:, None], near]).sum(axis=1)
        weighted[users, cols] = (weights * collab.weighted[users[:, None], near]).sum(axis=1)
    return binary.astype(np.float32), weighted.astype(np.float32)


def _standardised(raw: FloatMatrix, values: FloatMatrix) -> FloatMatrix:
    """``values`` [b, m] z-scored by each user's mean and deviation of ``raw`` [b, n] over the universe."""
    mean = raw.mean(axis=1, keepdims=True)
    std = raw.std(axis=1, keepdims=True) + _EPS
    out: FloatMatrix = ((values - mean) / std).astype(np.float32)
    return out


def candidate_features(
    users: UserInputs,
    side: ItemSide,
    collab: CollabScores,
    rows: IntMatrix,
    vectors: FloatMatrix,
    impute_cold: bool = True,
) -> npt.NDArray[np.float32]:
    """Standardised features [b, m, N_FEATURES] of ``m`` items per user: ``rows`` [b, m] (or [1, m]
    shared) their universe rows, -1 for an item outside the universe (new in the catalogue, say: no
    popularity, collaborative scores borrowed from its text neighbours); ``vectors`` their unit vectors
    ([m, dim] shared by the batch, with ``rows`` [1, m], or [b, m, dim]).

    Every per-user statistic is taken over the whole universe, never over the ``m`` items, so an item's
    features do not depend on which other items are scored with it: the two-stage ranking and an
    exhaustive one read the same numbers."""
    rows = np.broadcast_to(rows, (users.size, rows.shape[-1]))
    inside = rows >= 0
    binary, weighted = _raw_at(side, collab, rows, vectors, impute_cold)
    collab_z = _standardised(collab.binary, binary)
    collab_pref_z = _standardised(collab.weighted, weighted)
    semantic = _text_z(users.preference, vectors, side)
    behaviour = _text_z(behaviour_queries(users.preference, side.behaviour), vectors, side)
    text_knn = _standardised(collab.text, _text_knn_at(users, side, collab.text, rows, vectors))
    cold = ~(inside & side.warm[np.where(inside, rows, 0)])
    log_pop = np.where(inside, side.log_popularity[np.where(inside, rows, 0)], 0.0)
    pop = (log_pop - side.popularity_mean) / (side.popularity_std + _EPS)
    activity = (np.log1p(users.history_binary.sum(axis=1)) - side.activity_mean) / (side.activity_std + _EPS)
    return np.stack(
        [
            collab_z,
            collab_pref_z,
            semantic,
            pop,
            np.broadcast_to(activity[:, None], rows.shape),
            behaviour,
            text_knn,
            cold.astype(np.float32),
        ],
        axis=-1,
    ).astype(np.float32)


def _text_z(queries: FloatMatrix, vectors: FloatMatrix, side: ItemSide) -> FloatMatrix:
    """[b, m] each query's inner product with the items' ``vectors`` ([m, dim] shared or [b, m, dim]),
    z-scored by its mean and deviation over the universe (from the vectors' moments: no pass over it)."""
    raw = queries @ vectors.T if vectors.ndim == 2 else np.einsum("bd,bmd->bm", queries, vectors)
    wide = queries.astype(np.float64)
    mean = wide @ side.vector_mean
    std = np.sqrt(np.maximum(np.einsum("bd,de,be->b", wide, side.vector_cov, wide), 0.0)) + _EPS
    out: FloatMatrix = ((raw - mean[:, None]) / std[:, None]).astype(np.float32)
    return out


def universe_features(
    users: UserInputs, side: ItemSide, collab: CollabScores | None = None, impute_cold: bool = True
) -> npt.NDArray[np.float32]:
    """Standardised features of every universe item: [b, n_universe, N_FEATURES] (``candidate_features``
    of all of them)."""
    collab = collab or collab_scores(users, side)
    rows = np.arange(side.n_items, dtype=np.int64)[None, :]
    return candidate_features(users, side, collab, rows, side.vectors, impute_cold)


def fallback_scores(
    users: UserInputs, side: ItemSide, collab: CollabScores, impute_cold: bool
) -> FloatMatrix:
    """[b, n_universe] the binary collaborative score of every universe item, borrowed from text
    neighbours for cold items: the order of the items past the candidates (evaluation's full ranking)."""
    rows = np.arange(side.n_items, dtype=np.int64)[None, :]
    rows = np.broadcast_to(rows, (users.size, side.n_items))
    binary, _ = _raw_at(side, collab, rows, side.vectors, impute_cold)
    return binary
