"""Nearest-item retrieval: a FAISS index over L2-normalised item embeddings, searched by inner product.

On unit vectors the inner product is the cosine similarity, so scores are in [-1, 1] and the same
number the fusion ranker and the explanations use.

Index kinds:
- ``flat``: exact search. The default: a 12k x 384 catalogue is about 18 MB and a single query scans it
  in well under a millisecond, so approximation buys nothing at that size.
- ``hnsw``: graph search, for catalogues of hundreds of thousands of items; no training.
- ``ivf``: inverted lists over k-means cells; trains on the catalogue itself.

Concurrency: CPU FAISS indexes are safe for concurrent searches and release the GIL, so the API runs
``search`` in worker threads (``search_async``). Per-call search parameters (HNSW ``efSearch``, IVF
``nprobe``) are passed as ``SearchParameters`` objects, never by mutating the shared index.

On disk a saved index is one folder in the layout of ``llmrec.artifacts``; ``load_artifacts`` reads it
with its catalogue.

Example:
    >>> import numpy as np
    >>> vectors = np.eye(3, dtype=np.float32)
    >>> index = ItemIndex.build(np.array([10, 20, 30]), vectors)
    >>> scores, ids = index.search(vectors[1], k=2)
    >>> ids.tolist()
    [[20, 10]]
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast, get_args

import faiss as _faiss_module
import numpy as np
import numpy.typing as npt

from llmrec.artifacts import (
    EMBEDDINGS_FILE,
    IDS_FILE,
    INDEX_FILE,
    INDEX_FORMAT,
    META_FILE,
    IndexFormatError,
    catalogue_path,
)
from llmrec.catalogue import Catalogue
from ranker.columns import Column

# faiss-cpu's bundled stubs lack the SearchParameters keyword constructors (SearchParametersHNSW is
# missing entirely), so the module is used untyped here; every array crossing it is checked or cast.
faiss: Any = _faiss_module

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]
IndexKind = Literal["flat", "hnsw", "ivf"]
INDEX_KINDS: tuple[str, ...] = get_args(IndexKind)

FORMAT_VERSION = INDEX_FORMAT

# Exact search stays under a few milliseconds per query up to about this many 384-d items.
FLAT_MAX_ITEMS = 50_000
# HNSW answers fastest but builds slowly: 61 s for 100k x 384 on 2 CPU cores (reports/bench.md), growing
# faster than n, so well over ten minutes at 1M. Beyond this size IVF, which builds 1M items in under a
# minute, is the practical choice (at the cost of slower queries: see the serving benchmark).
HNSW_MAX_ITEMS = 300_000


def choose_kind(count: int) -> IndexKind:
    if count <= FLAT_MAX_ITEMS:
        return "flat"
    return "hnsw" if count <= HNSW_MAX_ITEMS else "ivf"


# HNSW: M=32 links per node and efConstruction=200 are FAISS's usual high-recall settings for 384-d text
# embeddings; efSearch is raised to k per query when k is larger, since HNSW cannot return more than ef.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 128
# IVF: about 4 * sqrt(n) cells keeps each cell a few hundred vectors; probing 1/8 of them (at least 8)
# keeps recall high on embeddings that cluster by genre. At most 1024 cells, trained by k-means on at most
# 64 sampled vectors per cell: on 2 CPU cores, 1M x 384 trained in 15 s and filled in 24 s (1000 cells),
# where 4,000 cells trained on every vector would take many minutes.
IVF_NPROBE_FRACTION = 8
IVF_MAX_NLIST = 1024
IVF_TRAIN_PER_LIST = 64
IVF_TRAIN_SEED = 1234
# ``search_async`` searches inline (on the caller's event loop) up to this many vectors scanned per query,
# about 1 ms of 384-d inner products on one core here, and in a worker thread beyond.
INLINE_SEARCH_VECTORS = 32_768
# Per-thread: whether this thread has set FAISS's OpenMP team to one thread (``search_single_threaded``).
_omp_state = threading.local()
# Rows must be unit vectors to within this, after which they are renormalised exactly.
NORM_TOLERANCE = 1e-2


@dataclass(frozen=True)
class IndexMeta:
    version: str
    dim: int
    count: int
    kind: str
    encoder_model: str
    created_at: str
    format: int = FORMAT_VERSION
    params: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> IndexMeta:
        raw: dict[str, Any] = json.loads(text)
        if raw.get("format") != FORMAT_VERSION:
            found = raw.get("format")
            raise IndexFormatError(f"unsupported index format {found!r}, expected {FORMAT_VERSION}")
        try:
            return cls(**raw)
        except TypeError as exc:
            raise IndexFormatError(f"bad {META_FILE}: {exc}") from exc


def index_kind(name: str) -> IndexKind:
    """``name`` as an ``IndexKind``; ``ValueError`` for another name."""
    for kind in get_args(IndexKind):
        if kind == name:
            return cast("IndexKind", kind)
    raise ValueError(f"unknown index kind {name!r}; expected one of {INDEX_KINDS}")


def normalise_rows(embeddings: npt.ArrayLike) -> FloatArray:
    """Float32 copy with unit rows. Zero or non-finite rows are rejected: they have no direction."""
    matrix = np.asarray(embeddings, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError(f"embeddings must be a non-empty [n, dim] matrix, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("embeddings contain NaN or infinity")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if (norms == 0.0).any():
        raise ValueError("embeddings contain a zero vector")
    return np.ascontiguousarray(matrix / norms, dtype=np.float32)


def _content_hash(item_ids: IdArray, embeddings: FloatArray) -> str:
    digest = hashlib.sha256()
    digest.update(item_ids.tobytes())
    digest.update(embeddings.tobytes())
    return digest.hexdigest()[:10]


def _ivf_nlist(count: int) -> int:
    # FAISS wants about 39 training points per cell; small catalogues get few cells.
    return max(1, min(int(4 * math.sqrt(count)), count // 39, IVF_MAX_NLIST))


def _make_faiss_index(embeddings: FloatArray, kind: IndexKind) -> tuple[Any, dict[str, int]]:
    count, dim = embeddings.shape
    if kind == "flat":
        index: Any = faiss.IndexFlatIP(dim)
        params: dict[str, int] = {}
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
        params = {"m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "ef_search": HNSW_EF_SEARCH}
    elif kind == "ivf":
        nlist = _ivf_nlist(count)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        # FAISS's Python wrapper keeps a reference from the IVF index to its quantizer.
        sample = embeddings
        if count > nlist * IVF_TRAIN_PER_LIST:
            rows = np.random.default_rng(IVF_TRAIN_SEED).choice(
                count, nlist * IVF_TRAIN_PER_LIST, replace=False
            )
            sample = embeddings[np.sort(rows)]
        index.train(sample)
        nprobe = min(nlist, max(8, nlist // IVF_NPROBE_FRACTION))
        index.nprobe = nprobe
        params = {"nlist": nlist, "nprobe": nprobe}
    else:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {INDEX_KINDS}")
    index.add(embeddings)
    return index, params


class ItemIndex:
    """Immutable after construction: the API swaps whole ``ItemIndex`` objects, never mutates one.

    Rows ``[0, base_rows)`` are in the FAISS index (the "base"); rows appended by ``with_changes`` after it
    was built (the "delta") are searched exactly, alongside it, until ``merged`` adds them to a copy of the
    base in the background. So a live change costs its own rows, not a copy of the index: the embeddings
    and ids are ``Column``s that a derived index extends past this one's rows (see ``ranker.columns``).
    """

    def __init__(
        self,
        index: Any,
        item_ids: IdArray,
        embeddings: FloatArray,
        meta: IndexMeta,
    ) -> None:
        if index.ntotal != len(item_ids) or embeddings.shape != (len(item_ids), meta.dim):
            raise IndexFormatError(
                f"index has {index.ntotal} rows, ids {len(item_ids)}, embeddings {embeddings.shape}, "
                f"meta dim {meta.dim}"
            )
        ids = np.ascontiguousarray(item_ids, dtype=np.int64)
        # Sorted live ids and their rows: vectorised id -> row lookups without a Python dict per item.
        order = np.argsort(ids, kind="stable")
        order = order[ids[order] >= 0]
        self._init(index, len(ids), Column.of(ids), Column.of(embeddings), meta, order, ids[order])

    def _init(
        self,
        index: Any,
        base_rows: int,
        ids: Column,
        embeddings: Column,
        meta: IndexMeta,
        order: IdArray,
        sorted_ids: IdArray,
    ) -> None:
        self._index = index
        self._base_rows = base_rows
        self._ids = ids
        self._vectors = embeddings
        self._item_ids: IdArray = ids.values
        self._embeddings: FloatArray = embeddings.values
        self._meta = meta
        self._order = order
        self._sorted_ids = sorted_ids

    @classmethod
    def _derived(
        cls,
        index: Any,
        base_rows: int,
        ids: Column,
        embeddings: Column,
        meta: IndexMeta,
        order: IdArray,
        sorted_ids: IdArray,
    ) -> ItemIndex:
        out = cls.__new__(cls)
        out._init(index, base_rows, ids, embeddings, meta, order, sorted_ids)
        return out

    @classmethod
    def build(
        cls,
        item_ids: npt.ArrayLike,
        embeddings: npt.ArrayLike,
        kind: IndexKind = "flat",
        *,
        encoder_model: str = "",
        created_at: datetime | None = None,
    ) -> ItemIndex:
        """Index ``embeddings[i]`` under ``item_ids[i]``. Rows are renormalised to unit length."""
        ids = np.ascontiguousarray(np.asarray(item_ids), dtype=np.int64)
        if ids.ndim != 1:
            raise ValueError("item_ids must be one-dimensional")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("item_ids contain duplicates")
        vectors = normalise_rows(embeddings)
        if vectors.shape[0] != len(ids):
            raise ValueError(f"{len(ids)} item ids but {vectors.shape[0]} embeddings")
        index, params = _make_faiss_index(vectors, kind)
        created = (created_at or datetime.now(UTC)).astimezone(UTC)
        meta = IndexMeta(
            version=f"{kind}-{created:%Y%m%dT%H%M%SZ}-{_content_hash(ids, vectors)}",
            dim=int(vectors.shape[1]),
            count=len(ids),
            kind=kind,
            encoder_model=encoder_model,
            created_at=created.isoformat(),
            params=params,
        )
        return cls(index, ids, vectors, meta)

    @classmethod
    def empty(cls, dim: int, kind: IndexKind = "flat", *, encoder_model: str = "") -> ItemIndex:
        """An index of no items, for a catalogue that arrives through the items topic only. Flat: the
        first items are few, and ``with_changes`` then ``compacted`` move it to the kind that fits."""
        if kind != "flat":
            raise ValueError("an empty index is flat (HNSW and IVF are built from items)")
        created = datetime.now(UTC)
        meta = IndexMeta(
            version=f"flat-{created:%Y%m%dT%H%M%SZ}-empty",
            dim=dim,
            count=0,
            kind=kind,
            encoder_model=encoder_model,
            created_at=created.isoformat(),
            params={},
        )
        return cls(
            faiss.IndexFlatIP(dim), np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32), meta
        )

    # -- properties ---------------------------------------------------------------------------------------

    @property
    def meta(self) -> IndexMeta:
        return self._meta

    @property
    def version(self) -> str:
        return self._meta.version

    @property
    def dim(self) -> int:
        return self._meta.dim

    @property
    def kind(self) -> str:
        return self._meta.kind

    @property
    def item_ids(self) -> IdArray:
        """Row order; read-only."""
        return self._item_ids

    @property
    def embeddings(self) -> FloatArray:
        """Row order, unit rows; read-only."""
        return self._embeddings

    def __len__(self) -> int:
        return len(self._item_ids)

    def __contains__(self, item_id: object) -> bool:
        if not isinstance(item_id, int | np.integer):
            return False
        pos = int(np.searchsorted(self._sorted_ids, item_id))
        return pos < len(self._sorted_ids) and int(self._sorted_ids[pos]) == int(item_id)

    # -- live changes -------------------------------------------------------------------------------------

    def with_changes(
        self, item_ids: npt.ArrayLike, embeddings: npt.ArrayLike, retired: Iterable[int], version: str
    ) -> ItemIndex:
        """A new index (this one is left as it is): the rows of ``retired`` ids are no longer found (their
        id becomes -1, which searches report as "no hit"), and ``embeddings`` are appended under
        ``item_ids``. An id may be retired and appended in one call: that is how a vector changes.

        Costs the changed rows plus a few O(rows) copies of small arrays (ids, the sorted lookup): the
        FAISS base and the embeddings are shared, the new rows searched exactly until ``merged``. Derive
        from the newest index: a second derivation from the same one copies the embeddings.
        ``compacted`` drops the retired rows once they add up."""
        ids = np.ascontiguousarray(np.asarray(item_ids), dtype=np.int64).reshape(-1)
        gone = self.rows(np.fromiter(retired, dtype=np.int64))
        gone = np.unique(gone[gone >= 0])
        if len(ids):
            vectors = normalise_rows(embeddings)
            if vectors.shape != (len(ids), self.dim):
                raise ValueError(f"{len(ids)} item ids but embeddings of shape {vectors.shape}")
            found = self.rows(ids)
            if len(np.unique(ids)) != len(ids) or np.isin(found[found >= 0], gone, invert=True).any():
                raise ValueError("appended item ids must be new or retired in the same call")
        else:
            vectors = np.zeros((0, self.dim), dtype=np.float32)
        rows = len(self)
        id_column = self._ids.derive(ids, gone, np.full(len(gone), -1, dtype=np.int64))
        vector_column = self._vectors.derive(vectors)
        # The lookup: retired ids leave it, appended ones are merged in (O(rows) copies, no sort of all).
        keep = np.ones(len(self._sorted_ids), dtype=np.bool_)
        keep[np.searchsorted(self._sorted_ids, self._item_ids[gone])] = False
        order, sorted_ids = self._order[keep], self._sorted_ids[keep]
        if len(ids):
            by_id = np.argsort(ids, kind="stable")
            at = np.searchsorted(sorted_ids, ids[by_id])
            sorted_ids = np.insert(sorted_ids, at, ids[by_id])
            order = np.insert(order, at, rows + by_id)
        meta = dataclasses.replace(self._meta, version=version, count=rows + len(ids))
        return ItemIndex._derived(
            self._index, self._base_rows, id_column, vector_column, meta, order, sorted_ids
        )

    @property
    def delta_rows(self) -> int:
        """Rows appended since the FAISS base was built (searched exactly until ``merged``)."""
        return len(self) - self._base_rows

    def merged(self) -> ItemIndex:
        """The same rows with the delta added to a copy of the FAISS base: a copy of the index, so it is
        made in the background and moved onto the newest index with ``rebased``."""
        if self.delta_rows == 0:
            return self
        base = faiss.clone_index(self._index)
        base.add(np.ascontiguousarray(self._embeddings[self._base_rows :]))
        return ItemIndex._derived(
            base, len(self), self._ids, self._vectors, self._meta, self._order, self._sorted_ids
        )

    def rebased(self, merged: ItemIndex) -> ItemIndex:
        """This index searched through ``merged``'s FAISS base when that base holds this index's first rows
        (``merged`` was made from this index or an older one of its line) and more of them than its own;
        otherwise this index as it is. Rows, ids and answers stay the same."""
        rows = merged._base_rows
        if (
            rows <= self._base_rows
            or rows > len(self)
            or merged._vectors.lineage is not self._vectors.lineage
            or merged._index.d != self.dim
        ):
            return self
        return ItemIndex._derived(
            merged._index, rows, self._ids, self._vectors, self._meta, self._order, self._sorted_ids
        )

    @property
    def retired_rows(self) -> int:
        """Rows a ``with_changes`` retired: still in FAISS, never found."""
        return len(self) - len(self._sorted_ids)

    def compacted(self) -> ItemIndex:
        """The same items without retired rows: a fresh index of this kind (a full build)."""
        keep = self._item_ids >= 0
        if not keep.any():
            return ItemIndex.empty(self.dim, encoder_model=self._meta.encoder_model)
        return ItemIndex.build(
            self._item_ids[keep],
            self._embeddings[keep],
            index_kind(self.kind),
            encoder_model=self._meta.encoder_model,
        )

    # -- lookups ------------------------------------------------------------------------------------------

    def rows(self, item_ids: npt.ArrayLike) -> IdArray:
        """Row of each id, -1 for ids not in the index."""
        ids = np.asarray(item_ids, dtype=np.int64).reshape(-1)
        if len(self._sorted_ids) == 0:
            return np.full(len(ids), -1, dtype=np.int64)
        pos = np.searchsorted(self._sorted_ids, ids)
        pos = np.minimum(pos, len(self._sorted_ids) - 1)
        found = self._sorted_ids[pos] == ids
        return np.where(found, self._order[pos], -1).astype(np.int64)

    def vector(self, item_id: int) -> FloatArray:
        """The item's unit embedding (a read-only view). ``KeyError`` if the item is not indexed."""
        row = int(self.rows([item_id])[0])
        if row < 0:
            raise KeyError(item_id)
        vector: FloatArray = self._embeddings[row]
        return vector

    def vectors(self, item_ids: npt.ArrayLike) -> tuple[FloatArray, IdArray]:
        """Embeddings of the ids that are indexed, and those ids (unknown ids are dropped)."""
        ids = np.asarray(item_ids, dtype=np.int64).reshape(-1)
        rows = self.rows(ids)
        keep = rows >= 0
        return self._embeddings[rows[keep]], ids[keep]

    # -- search -------------------------------------------------------------------------------------------

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[FloatArray, IdArray]:
        """Top ``k`` items by inner product for each query row.

        ``queries`` is ``[dim]`` or ``[m, dim]`` and should be unit-length (it is not renormalised, so a
        zero query scores everything 0). Returns ``scores [m, k']`` float32 and ``item_ids [m, k']`` int64,
        best first, with ``k' = min(k, len(self))``; approximate kinds pad missing hits with id -1 and
        score -inf.
        """
        matrix = np.ascontiguousarray(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
        if matrix.ndim != 2 or matrix.shape[1] != self.dim:
            raise ValueError(f"queries must have shape [m, {self.dim}], got {matrix.shape}")
        if k < 1:
            raise ValueError("k must be at least 1")
        k = min(k, len(self))
        if k == 0:
            return np.zeros((matrix.shape[0], 0), dtype=np.float32), np.zeros((matrix.shape[0], 0), np.int64)
        if self._base_rows == 0:
            scores, rows = _exact_top(matrix, self._embeddings, k)
        else:
            base_k = min(k, self._base_rows)
            scores, rows = self._index.search(matrix, base_k, params=self._search_params(base_k))
            if self.delta_rows:
                # The rows appended since the base was built: exact scores, merged into the base's hits.
                delta = self._embeddings[self._base_rows :]
                delta_scores, delta_rows = _exact_top(matrix, delta, min(k, len(delta)))
                scores = np.concatenate([np.where(rows >= 0, scores, -np.inf), delta_scores], axis=1)
                rows = np.concatenate([rows, delta_rows + self._base_rows], axis=1)
                best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
                scores = np.take_along_axis(scores, best, axis=1)
                rows = np.take_along_axis(rows, best, axis=1)
        found = rows >= 0
        item_ids = np.where(found, self._item_ids[np.where(found, rows, 0)], -1).astype(np.int64)
        scores = np.where(found, scores, -np.inf).astype(np.float32)
        return scores, item_ids

    async def search_async(self, queries: npt.ArrayLike, k: int) -> tuple[FloatArray, IdArray]:
        """``search`` for a server's event loop: inline when the search is cheap, else in a worker thread
        so the loop keeps serving while FAISS computes.

        Cheap means at most ``INLINE_SEARCH_VECTORS`` vectors scanned (an HNSW graph walk always is): the
        hand-off to a thread then costs more than it saves. Measured through the gRPC API at 100k items
        (HNSW), 8 clients: 527 req/s and p99 23.9 ms through a thread, 552 req/s and p99 16.9 ms inline.
        """
        if self.vectors_scanned(k) <= INLINE_SEARCH_VECTORS:
            return self.search_single_threaded(queries, k)
        return await asyncio.to_thread(self.search_single_threaded, queries, k)

    def vectors_scanned(self, k: int) -> int:
        """About how many vectors one query compares against: all for flat, the probed lists for IVF, and
        for HNSW a graph walk of a few thousand (counted as 0: always cheap)."""
        if self.kind == "hnsw":
            return self.delta_rows
        if self.kind == "ivf":
            params = self._meta.params
            return math.ceil(self._base_rows * params["nprobe"] / params["nlist"]) + self.delta_rows
        return len(self)

    def search_single_threaded(self, queries: npt.ArrayLike, k: int) -> tuple[FloatArray, IdArray]:
        # One OpenMP thread per calling thread (the setting is per thread). For one query over 12k x 384
        # on 2 cores, FAISS's default OpenMP team made a flat search take ~15 ms p50 instead of ~1 ms:
        # the threads spin and contend with each other and with concurrent requests, which already
        # spread over the cores. Batch callers using ``search`` directly keep FAISS's default (a thread
        # that called this once stays single-threaded: the API process, whose searches are all single).
        if not getattr(_omp_state, "single", False):
            faiss.omp_set_num_threads(1)
            _omp_state.single = True
        return self.search(queries, k)

    def _search_params(self, k: int) -> Any:
        if self.kind == "hnsw":
            return faiss.SearchParametersHNSW(efSearch=max(self._meta.params.get("ef_search", 0), k))
        if self.kind == "ivf":
            return faiss.SearchParametersIVF(nprobe=self._meta.params["nprobe"])
        return None

    # -- persistence --------------------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        """Write the four files into ``folder`` (created if missing). Not atomic by itself: write into a
        ``publish_dir`` staging folder to replace a live index."""
        folder.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.merged()._index, str(folder / INDEX_FILE))
        np.save(folder / IDS_FILE, self._item_ids, allow_pickle=False)
        np.save(folder / EMBEDDINGS_FILE, self._embeddings, allow_pickle=False)
        (folder / META_FILE).write_text(self._meta.to_json())

    @classmethod
    def load(cls, folder: Path) -> ItemIndex:
        """Load a saved index. ``folder`` is resolved first, so a concurrent ``publish_dir`` cannot mix files
        of two versions."""
        folder = folder.resolve()
        names = (INDEX_FILE, IDS_FILE, EMBEDDINGS_FILE, META_FILE)
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise IndexFormatError(f"{folder} lacks {', '.join(missing)}")
        meta = IndexMeta.from_json((folder / META_FILE).read_text())
        index = faiss.read_index(str(folder / INDEX_FILE))
        item_ids = np.load(folder / IDS_FILE, allow_pickle=False).astype(np.int64, copy=False)
        embeddings = np.load(folder / EMBEDDINGS_FILE, allow_pickle=False).astype(np.float32, copy=False)
        if index.d != meta.dim or len(item_ids) != meta.count:
            raise IndexFormatError(f"{folder}: files disagree with {META_FILE}")
        return cls(index, item_ids, embeddings, meta)


def _exact_top(queries: FloatArray, vectors: FloatArray, k: int) -> tuple[FloatArray, IdArray]:
    """Top ``k`` rows of ``vectors`` by inner product with each query, best first (a flat search)."""
    scores = (queries @ vectors.T).astype(np.float32, copy=False)
    if k < scores.shape[1]:
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        top = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    best = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1), axis=1)
    return np.take_along_axis(scores, best, axis=1), best.astype(np.int64)


def load_artifacts(index_dir: Path) -> tuple[ItemIndex, Catalogue]:
    """The index and its catalogue from one published folder (resolved once: both from one version)."""
    folder = index_dir.resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"no index at {index_dir}; run `llmrec build-index`")
    return ItemIndex.load(folder), Catalogue.load(catalogue_path(folder))
