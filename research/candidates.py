"""Candidate generators for a two-stage served model (issue 14), and the study of what they lose.

A generator is fitted once on the binary user x item training matrix and then answers
``candidates(user_rows, n)``: for each row of ``user_rows`` (a user's binary history over the items, as the
API would hold it) its ``n`` best *unseen* item indices, best first, padded with ``-1`` where it finds fewer.
Nothing here needs a dense ``n x n`` matrix at serving time:

- ``LowRankCandidates``: the user's iALS factor (the exact weighted-ridge user step, folded in from the
  history row, ``baselines.ridge_fold_in``) searched against the item factors of ``factor_models.ImplicitMF``
  by FAISS inner product (``IndexFlatIP``: exact; ``hnsw=True``: ``IndexHNSWFlat``, approximate, as a
  large catalogue would be served).
- ``SemanticCandidates``: the user's preference vector (L2-normalised sum of the history items' language-model
  vectors, ``ranker.model.profiles.preference_vectors`` with uniform weights) searched against the item
  vectors by FAISS inner product.
- ``NeighbourCandidates``: a sparse item-item matrix, each item keeping its ``m`` strongest neighbours
  (``prune_rows``) of the EASE matrix (``ranker.model.ease.ease_matrix``; its fit still takes the dense
  inverse, only the served artifact is sparse) or of the co-occurrence cosine (sparse end to end); a user's
  score is the sum of its history items' rows, and only items reached by some history item are candidates.
- ``PopularityCandidates``: the most interacted-with unseen items.
- ``UnionCandidates``: several generators merged by weighted round robin (a generator with share ``s``
  contributes its rank-``r`` item at key ``(r + 1) / s``; duplicates keep their best key), then filled with
  popularity up to ``n``.

``candidate_study`` measures, per generator and ``n``, on one part of a split (validation, always: tuning and
reporting never look at test): the recall of a reference model's exhaustive top 10 inside the candidates
(what the candidate stage loses), the recall@n of the held-out items (how much of the truth survives), the
reference model's NDCG@10 when it may only rank the candidates (the two-stage quality with that model as
the re-ranker) next to its exhaustive NDCG@10, and the time and memory of each generator.
"""

from __future__ import annotations

import time
import tracemalloc
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import faiss
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from ranker.interactions import IntArray
from ranker.model.ease import ease_matrix, prune_rows
from ranker.model.profiles import preference_vectors
from research import metrics as m
from research.baselines import ridge_fold_in
from research.factor_models import ImplicitMF, MFConfig

Matrix = npt.NDArray[np.float32]
CandidateMatrix = npt.NDArray[np.int64]  # [b, n], best first, -1 = none
PAD = -1


def _take_unseen(ranked: npt.NDArray[np.int64], seen: npt.NDArray[np.bool_], n: int) -> CandidateMatrix:
    """Per row, the first ``n`` entries of ``ranked`` (item indices, best first, ``-1`` = none) that the
    user has not seen, padded with ``PAD``."""
    out = np.full((ranked.shape[0], n), PAD, dtype=np.int64)
    for row in range(ranked.shape[0]):
        items = ranked[row]
        items = items[items >= 0]
        items = items[~seen[row, items]][:n]
        out[row, : items.size] = items
    return out


def _top_unseen_dense(scores: Matrix, seen: npt.NDArray[np.bool_], n: int) -> CandidateMatrix:
    """Per row, the ``n`` best-scored unseen items of a dense score matrix, best first (ties by index)."""
    masked = np.where(seen, -np.inf, scores)
    n_items = scores.shape[1]
    k = min(n, n_items)
    part = (
        np.argpartition(-masked, k - 1, axis=1)[:, :k]
        if k < n_items
        else np.tile(np.arange(n_items), (scores.shape[0], 1))
    )
    part_scores = np.take_along_axis(masked, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    ranked = np.take_along_axis(part, order, axis=1).astype(np.int64)
    ranked[np.take_along_axis(part_scores, order, axis=1) == -np.inf] = PAD
    out = np.full((scores.shape[0], n), PAD, dtype=np.int64)
    out[:, :k] = ranked
    return out


class CandidateGenerator(ABC):
    """Fit on the binary training matrix, then ``candidates(user_rows, n)``."""

    name: str = "base"
    n_items: int | None = None  # the width of the matrix it was fitted on; None before ``fit``

    def fit(self, train: Matrix) -> Self:
        self.n_items = int(train.shape[1])
        self._fit(np.asarray(train, dtype=np.float32))
        return self

    @abstractmethod
    def _fit(self, train: Matrix) -> None: ...

    def candidates(self, user_rows: Matrix, n: int) -> CandidateMatrix:
        """[b, n] unseen item indices, best first; ``-1`` where the generator finds fewer than ``n``."""
        rows = np.asarray(user_rows, dtype=np.float32)
        if self.n_items is None:
            raise RuntimeError(f"{self.name}: fit() first")
        if rows.ndim != 2 or rows.shape[1] != self.n_items:
            raise ValueError(f"user_rows must be b x {self.n_items}")
        return self._candidates(rows, rows > 0, n)

    @abstractmethod
    def _candidates(self, rows: Matrix, seen: npt.NDArray[np.bool_], n: int) -> CandidateMatrix: ...

    @abstractmethod
    def artifact_bytes(self) -> int:
        """Bytes of what ``candidates`` reads at serving time (index, factors, sparse matrix)."""


class PopularityCandidates(CandidateGenerator):
    name = "popularity"

    def _fit(self, train: Matrix) -> None:
        counts = train.sum(axis=0)
        # Most popular first, ties by item index.
        self._order = np.lexsort((np.arange(counts.size), -counts)).astype(np.int64)

    def _candidates(self, rows: Matrix, seen: npt.NDArray[np.bool_], n: int) -> CandidateMatrix:
        limit = min(self._order.size, n + int(seen.sum(axis=1).max(initial=0)))
        ranked = np.broadcast_to(self._order[:limit], (rows.shape[0], limit))
        return _take_unseen(np.ascontiguousarray(ranked), seen, n)

    def artifact_bytes(self) -> int:
        return int(self._order.nbytes)


class _FaissCandidates(CandidateGenerator):
    """Inner-product search of user vectors against item vectors in a FAISS index."""

    def __init__(self, hnsw: bool = False, hnsw_m: int = 32, ef_search: int = 256) -> None:
        self.hnsw = hnsw
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search

    def _build_index(self, item_vectors: Matrix) -> None:
        vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        dim = vectors.shape[1]
        index: Any
        if self.hnsw:
            index = faiss.IndexHNSWFlat(dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 200
        else:
            index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        self._index = index

    @abstractmethod
    def _user_vectors(self, rows: Matrix) -> Matrix: ...

    def _candidates(self, rows: Matrix, seen: npt.NDArray[np.bool_], n: int) -> CandidateMatrix:
        queries = np.ascontiguousarray(self._user_vectors(rows), dtype=np.float32)
        k = min(rows.shape[1], n + int(seen.sum(axis=1).max(initial=0)))
        if self.hnsw:
            self._index.hnsw.efSearch = max(self.ef_search, k)
        _, ranked = self._index.search(queries, k)
        return _take_unseen(ranked.astype(np.int64), seen, n)

    def artifact_bytes(self) -> int:
        return int(faiss.serialize_index(self._index).nbytes)


class LowRankCandidates(_FaissCandidates):
    """Top items by iALS ``user factor . item factors`` (``factor_models.ImplicitMF``)."""

    def __init__(self, config: MFConfig | None = None, *, hnsw: bool = False) -> None:
        super().__init__(hnsw=hnsw)
        self.config = config or MFConfig()
        self.name = "lowrank_ials" + ("_hnsw" if hnsw else "")

    def _fit(self, train: Matrix) -> None:
        model = ImplicitMF(self.config).fit(train)
        self._items = model.item_factors.astype(np.float32)
        self._build_index(self._items)

    def _user_vectors(self, rows: Matrix) -> Matrix:
        # The exact iALS user step: a trained user's row gives back their trained factor.
        users = ridge_fold_in(rows, self._items, self.config.reg, self.config.alpha)
        return users.astype(np.float32)


class SemanticCandidates(_FaissCandidates):
    """Top items by cosine between the user's preference vector and the language-model item vectors."""

    name = "semantic"

    def __init__(self, item_vectors: Matrix, *, hnsw: bool = False) -> None:
        super().__init__(hnsw=hnsw)
        norms = np.linalg.norm(item_vectors, axis=1, keepdims=True)
        self._vectors = np.where(norms > 0, item_vectors / np.maximum(norms, 1e-12), 0.0).astype(np.float32)
        if hnsw:
            self.name = "semantic_hnsw"

    def _fit(self, train: Matrix) -> None:
        if self._vectors.shape[0] != train.shape[1]:
            raise ValueError(f"{self._vectors.shape[0]} item vectors for {train.shape[1]} items")
        self._build_index(self._vectors)

    def _user_vectors(self, rows: Matrix) -> Matrix:
        return preference_vectors(rows, self._vectors)


def cosine_cooccurrence(train: Matrix) -> sp.csr_matrix:
    """Item x item cosine of the binary user columns, computed sparsely, diagonal zero."""
    x = sp.csr_matrix(train > 0, dtype=np.float32)
    co = sp.csr_matrix(x.T @ x)
    norms = np.sqrt(np.asarray(co.diagonal(), dtype=np.float64))
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    scaled = sp.csr_matrix(sp.diags(inv) @ co @ sp.diags(inv), dtype=np.float32)
    scaled.setdiag(0.0)
    scaled.eliminate_zeros()
    return scaled


def sparse_scores(history: Matrix, neighbours: sp.csr_matrix) -> sp.csr_matrix:
    """``history @ neighbours`` as a sparse matrix: only reached items are stored."""
    return sp.csr_matrix(sp.csr_matrix(history, dtype=np.float32) @ neighbours)


class NeighbourCandidates(CandidateGenerator):
    """Sum of the history items' pruned neighbour rows (``source``: ``"ease"`` or ``"cosine"``)."""

    def __init__(
        self, source: str = "ease", m: int = 100, reg: float = 200.0, *, full: Matrix | None = None
    ) -> None:
        """``full``: the unpruned matrix when the caller already has it (the study passes its reference
        EASE matrix so the cubic inverse is taken once; the fit then times the pruning alone)."""
        if source not in ("ease", "cosine"):
            raise ValueError(f"unknown neighbour source {source!r}")
        self.source = source
        self.m = m
        self.reg = reg
        self._full = full
        self.name = f"neighbours_{source}_m{m}"

    def _fit(self, train: Matrix) -> None:
        full: Matrix | sp.csr_matrix
        if self._full is not None:
            full = self._full
        else:
            full = ease_matrix(train, self.reg) if self.source == "ease" else cosine_cooccurrence(train)
        self.matrix = prune_rows(full, self.m)
        self._full = None  # not kept: only the pruned rows are served

    def _candidates(self, rows: Matrix, seen: npt.NDArray[np.bool_], n: int) -> CandidateMatrix:
        scores = sparse_scores(rows, self.matrix)
        out = np.full((rows.shape[0], n), PAD, dtype=np.int64)
        for row in range(rows.shape[0]):
            lo, hi = scores.indptr[row], scores.indptr[row + 1]
            items, values = scores.indices[lo:hi].astype(np.int64), scores.data[lo:hi]
            unseen = ~seen[row, items]
            items, values = items[unseen], values[unseen]
            order = np.lexsort((items, -values))[:n]
            out[row, : order.size] = items[order]
        return out

    def artifact_bytes(self) -> int:
        mat = self.matrix
        return int(mat.data.nbytes + mat.indices.nbytes + mat.indptr.nbytes)


class UnionCandidates(CandidateGenerator):
    """Weighted round robin over ``parts`` (name -> (generator, share)), then popularity fill."""

    def __init__(self, name: str, parts: Mapping[str, tuple[CandidateGenerator, float]]) -> None:
        self.name = name
        self.parts = dict(parts)
        self._popularity = PopularityCandidates()

    def _fit(self, train: Matrix) -> None:
        # Parts already fitted on the same matrix are reused (the study fits each generator once).
        for generator, _ in self.parts.values():
            if generator.n_items != train.shape[1]:
                generator.fit(train)
        self._popularity.fit(train)

    def _candidates(self, rows: Matrix, seen: npt.NDArray[np.bool_], n: int) -> CandidateMatrix:
        lists = [(generator.candidates(rows, n), share) for generator, share in self.parts.values()]
        lists.append((self._popularity.candidates(rows, n), 1e-6))  # the fill: after every part's items
        return merge_ranked(lists, n)

    def artifact_bytes(self) -> int:
        return sum(g.artifact_bytes() for g, _ in self.parts.values()) + self._popularity.artifact_bytes()


def merge_ranked(lists: Sequence[tuple[CandidateMatrix, float]], n: int) -> CandidateMatrix:
    """Per row, the first ``n`` distinct items when each list's rank-``r`` item has key ``(r + 1) / share``
    (lower first; ties: the earlier list); ``-1`` entries are skipped."""
    b = lists[0][0].shape[0]
    out = np.full((b, n), PAD, dtype=np.int64)
    keys = np.concatenate(
        [np.broadcast_to((np.arange(c.shape[1]) + 1.0) / share, c.shape) for c, share in lists], axis=1
    )
    tie = np.concatenate([np.full(c.shape, i, dtype=np.int64) for i, (c, _) in enumerate(lists)], axis=1)
    items = np.concatenate([c for c, _ in lists], axis=1)
    for row in range(b):
        valid = items[row] >= 0
        order = np.lexsort((tie[row][valid], keys[row][valid]))
        ranked = items[row][valid][order]
        _, first = np.unique(ranked, return_index=True)
        picked = ranked[np.sort(first)][:n]
        out[row, : picked.size] = picked
    return out


# -- the study ------------------------------------------------------------------------------------------


def recall_of(candidates: CandidateMatrix, targets: Sequence[Sequence[int] | set[int]]) -> float:
    """Mean over rows of the share of the row's targets found among its candidates (rows with no targets
    are skipped)."""
    shares = []
    for row, wanted in enumerate(targets):
        wanted_set = {int(t) for t in wanted}
        if not wanted_set:
            continue
        found = np.isin(np.fromiter(wanted_set, dtype=np.int64), candidates[row]).sum()
        shares.append(float(found) / len(wanted_set))
    return float(np.mean(shares)) if shares else float("nan")


def top_k(scores: Matrix, seen: npt.NDArray[np.bool_], k: int = 10) -> CandidateMatrix:
    """The exhaustive top ``k`` unseen items of dense scores, best first (ties by item index)."""
    return _top_unseen_dense(scores, seen, k)


def restricted_top_k(scores: Matrix, candidates: CandidateMatrix, k: int = 10) -> CandidateMatrix:
    """The top ``k`` of ``scores`` among each row's candidates only (a re-ranker fed the candidate set)."""
    allowed = np.zeros(scores.shape, dtype=bool)
    rows = np.repeat(np.arange(scores.shape[0]), candidates.shape[1])
    flat = candidates.ravel()
    allowed[rows[flat >= 0], flat[flat >= 0]] = True
    return _top_unseen_dense(scores, ~allowed, k)


def mean_ndcg(lists: CandidateMatrix, relevant: Sequence[set[int]], k: int = 10) -> float:
    return float(
        np.mean([m.ndcg_at_k(row[row >= 0], rel, k) for row, rel in zip(lists, relevant, strict=True)])
    )


@dataclass(frozen=True)
class Reference:
    """A model's dense scores for the evaluated users (rows aligned with them), used as the exhaustive
    ranking the candidates are judged against and as the re-ranker of the two-stage figure."""

    name: str
    scores: Matrix


@dataclass
class GeneratorRecord:
    generator: str
    n: int
    metrics: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"generator": self.generator, "n": self.n, "metrics": self.metrics}


def measure_fit(generator: CandidateGenerator, train: Matrix) -> dict[str, float]:
    """Fit ``generator``; its wall time and the peak of Python/NumPy allocations during the fit
    (tracemalloc: BLAS and FAISS internals are not counted)."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        generator.fit(train)
        fit_s = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = generator.artifact_bytes()
    return {
        "fit_s": fit_s,
        "fit_peak_mb": peak / 2**20,
        "artifact_mb": size / 2**20,
        "artifact_bytes_per_item": size / train.shape[1],
    }


def candidate_study(
    generators: Sequence[CandidateGenerator],
    train: Matrix,
    users: IntArray,
    relevant: Sequence[set[int]],
    references: Sequence[Reference],
    ns: Sequence[int] = (100, 200, 500),
    *,
    fit_stats: Mapping[str, Mapping[str, float]] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[GeneratorRecord]:
    """Fitted ``generators`` judged on ``users`` (their histories: ``train``'s rows; their held-out items:
    ``relevant``, aligned with ``users``) for every ``n`` in ``ns``. ``fit_stats`` (by generator name, from
    ``measure_fit``) is copied into the records. Per record: ``recall_ref_<ref>@10`` (share of the reference's
    exhaustive unseen top 10 inside the candidates), ``recall@n`` (held-out items inside the candidates),
    ``ndcg@10_<ref>_within`` (the reference ranking only the candidates), ``filled`` (mean real candidates),
    ``ms_per_user`` (candidate generation time)."""
    rows = train[users]
    seen = rows > 0
    ref_tops = {ref.name: top_k(ref.scores, seen, 10) for ref in references}
    out: list[GeneratorRecord] = []
    for generator in generators:
        for n in ns:
            started = time.perf_counter()
            cands = generator.candidates(rows, n)
            elapsed = time.perf_counter() - started
            metrics: dict[str, float] = dict((fit_stats or {}).get(generator.name, {}))
            metrics["ms_per_user"] = 1000.0 * elapsed / max(1, users.size)
            metrics["filled"] = float((cands >= 0).sum(axis=1).mean())
            metrics[f"recall@{n}"] = recall_of(cands, relevant)
            metrics["recall@n"] = metrics[f"recall@{n}"]
            for ref in references:
                metrics[f"recall_ref_{ref.name}@10"] = recall_of(
                    cands, [set(t[t >= 0].tolist()) for t in ref_tops[ref.name]]
                )
                metrics[f"ndcg@10_{ref.name}_within"] = mean_ndcg(
                    restricted_top_k(ref.scores, cands), relevant
                )
            out.append(GeneratorRecord(generator.name, n, dict(sorted(metrics.items()))))
            if log is not None:
                log(
                    f"{generator.name} n={n}: "
                    + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
                )
    return out


def exhaustive_ndcg(
    references: Sequence[Reference], train: Matrix, users: IntArray, relevant: Sequence[set[int]]
) -> dict[str, float]:
    """Each reference's NDCG@10 ranking every unseen item (the figure the two-stage one is compared with)."""
    seen = train[users] > 0
    return {ref.name: mean_ndcg(top_k(ref.scores, seen, 10), relevant) for ref in references}
