"""Serving-side nearest-item search: exact numpy (the baseline) against FAISS flat, IVF and HNSW.

What is measured, per catalogue size n (10k and 100k; 1M without ``--quick``):
- item vectors: the real item embeddings of ``artifacts/index/embeddings.npy`` when present, tiled to n
  rows; every copy after the first gets Gaussian noise (std ``NOISE_STD`` per component) and is
  renormalised. Without that file: random unit vectors. The report says which;
- queries: user-like vectors, each the renormalised mean of ``QUERY_MIX`` random item vectors (a user's
  preference vector is a weighted sum of item vectors);
- recall@100 of each index against the exact top 100 (numpy, float32 inner product);
- HNSW only up to ``ranker.retrieval.HNSW_MAX_ITEMS`` (its build time; the API uses IVF above that);
  above 200k items the timed query counts shrink in proportion (exact search costs ~100 ms a query at 1M);
- IVF (nlist from ``ItemIndex``, about 4*sqrt(n), at most 1024) and HNSW (M=32, efConstruction=200,
  from ``ItemIndex``):
  nprobe / efSearch tuned upward until recall@100 >= 0.95 (the smallest setting that reaches it); the
  recall of ``ItemIndex``'s default parameters (what the API serves today) is reported too;
- single-query latency through ``ItemIndex.search_single_threaded`` (the call ``search_async``, i.e. the
  API, makes: one OpenMP thread per call), k=100, p50 and p99 per repeat; the numpy baseline runs with
  BLAS limited to one thread for the same reason;
- throughput with 8 client threads sharing the index (queries/s), per repeat;
- build time (ItemIndex.build, including IVF training) and index memory (FAISS serialised size; for numpy
  the matrix itself).
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from bench.common import summary
from ranker.retrieval import HNSW_MAX_ITEMS, IndexKind, ItemIndex, choose_kind

K = 100
RECALL_TARGET = 0.95
NOISE_STD = 0.01
QUERY_MIX = 10
THREADS = 8
DIM_RANDOM = 384
NPROBE_CANDIDATES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
QUERY_SCALE_ITEMS = 200_000
EF_CANDIDATES = (100, 128, 160, 200, 256, 320, 400, 512, 768, 1024)

SearchFn = Callable[[np.ndarray], Any]


@dataclasses.dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]
    recall_queries: int
    latency_queries: int
    throughput_queries: int
    repeats: int


QUICK = Plan(
    sizes=(10_000, 100_000), recall_queries=200, latency_queries=300, throughput_queries=800, repeats=3
)
FULL = Plan(
    sizes=(10_000, 100_000, 1_000_000),
    recall_queries=500,
    latency_queries=1000,
    throughput_queries=2000,
    repeats=5,
)


def item_vectors(n: int, embeddings_path: Path, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    if embeddings_path.is_file():
        base = np.load(embeddings_path).astype(np.float32)
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        out = np.empty((n, base.shape[1]), dtype=np.float32)
        for start in range(0, n, len(base)):
            stop = min(n, start + len(base))
            block = base[: stop - start].copy()
            if start > 0:
                block += rng.normal(0.0, NOISE_STD, size=block.shape).astype(np.float32)
                block /= np.linalg.norm(block, axis=1, keepdims=True)
            out[start:stop] = block
        copies = math.ceil(n / len(base))
        note = (
            f"real item embeddings from {embeddings_path} ({len(base)} x {base.shape[1]}), tiled {copies}x; "
            f"copies after the first perturbed with Gaussian noise (std {NOISE_STD} per component) and "
            "renormalised"
        )
        return out, note
    out = rng.standard_normal((n, DIM_RANDOM)).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out, f"random unit vectors ({DIM_RANDOM}-d): {embeddings_path} not found"


def make_queries(vectors: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    picks = rng.integers(0, len(vectors), size=(count, QUERY_MIX))
    queries = vectors[picks].mean(axis=1)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return np.ascontiguousarray(queries, dtype=np.float32)


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int, chunk: int = 64) -> np.ndarray:
    rows = []
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ vectors.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        rows.append(part)
    return np.concatenate(rows)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [len(np.intersect1d(f[f >= 0], t, assume_unique=False)) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits) / truth.shape[1])


def numpy_search(vectors: np.ndarray) -> SearchFn:
    def search(query: np.ndarray) -> np.ndarray:
        scores = vectors @ query
        top = np.argpartition(-scores, K - 1)[:K]
        return top[np.argsort(-scores[top])]

    return search


def served_search(index: ItemIndex) -> SearchFn:
    """The call the API makes per request (``search_async`` runs it in a worker thread)."""

    def search(query: np.ndarray) -> Any:
        return index.search_single_threaded(query, K)

    return search


def with_params(index: ItemIndex, **params: int) -> ItemIndex:
    """The same FAISS index under other per-call search parameters (ItemIndex passes them per query)."""
    meta = dataclasses.replace(index.meta, params={**index.meta.params, **params})
    return ItemIndex(index._index, index.item_ids, index.embeddings, meta)


def latency(search: SearchFn, queries: np.ndarray, repeats: int, label: str) -> dict[str, Any]:
    for q in queries[:20]:
        search(q)  # warm-up
    p50s, p99s, pooled = [], [], []
    for r in range(repeats):
        times = []
        for q in tqdm(queries, desc=f"  {label} latency {r + 1}/{repeats}", unit="q", leave=False):
            t0 = time.perf_counter()
            search(q)
            times.append((time.perf_counter() - t0) * 1000)
        p50s.append(float(np.percentile(times, 50)))
        p99s.append(float(np.percentile(times, 99)))
        pooled.extend(times)
    return {
        "p50_ms": summary(p50s),
        "p99_ms": summary(p99s),
        "pooled_p50_ms": float(np.percentile(pooled, 50)),
        "pooled_p99_ms": float(np.percentile(pooled, 99)),
        "queries_per_repeat": len(queries),
    }


def throughput(search: SearchFn, queries: np.ndarray, repeats: int, label: str) -> dict[str, Any]:
    shares = np.array_split(queries, THREADS)

    def run(share: np.ndarray) -> None:
        for q in share:
            search(q)

    rates = []
    with ThreadPoolExecutor(THREADS) as pool:
        for _ in tqdm(range(repeats), desc=f"  {label} {THREADS}-thread qps", leave=False):
            t0 = time.perf_counter()
            list(pool.map(run, shares))
            rates.append(len(queries) / (time.perf_counter() - t0))
    return {"qps": summary(rates), "threads": THREADS, "queries_per_repeat": len(queries)}


def tune(
    index: ItemIndex, queries: np.ndarray, truth: np.ndarray, name: str, candidates: list[int]
) -> tuple[ItemIndex, list[dict[str, float]], bool]:
    trials: list[dict[str, float]] = []
    chosen = index
    for value in candidates:
        chosen = with_params(index, **{name: value})
        _, ids = chosen.search(queries, K)
        r = recall(ids, truth)
        trials.append({name: value, "recall100": r})
        if r >= RECALL_TARGET:
            return chosen, trials, True
    return chosen, trials, False


def index_bytes(index: ItemIndex) -> int:
    return int(faiss.serialize_index(index._index).nbytes)


def bench_size(n: int, plan: Plan, embeddings_path: Path, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    vectors, source = item_vectors(n, embeddings_path, rng)
    ids = np.arange(n, dtype=np.int64)
    recall_q = make_queries(vectors, plan.recall_queries, rng)
    # Exact search costs ~100 ms per query at 1M items: fewer timed queries there keep the run in minutes.
    scale = min(1.0, QUERY_SCALE_ITEMS / n)
    latency_n = max(100, int(plan.latency_queries * scale))
    tput_n = max(200, int(plan.throughput_queries * scale))
    latency_q = make_queries(vectors, latency_n, rng)
    tput_q = make_queries(vectors, tput_n, rng)
    t0 = time.perf_counter()
    truth = exact_topk(vectors, recall_q, K)
    truth_s = time.perf_counter() - t0
    result: dict[str, Any] = {
        "n": n,
        "dim": int(vectors.shape[1]),
        "k": K,
        "vectors": source,
        "queries": f"renormalised mean of {QUERY_MIX} random item vectors; {plan.recall_queries} for recall, "
        f"{latency_n} x {plan.repeats} repeats for latency, {tput_n} x "
        f"{plan.repeats} repeats for throughput",
        "api_index_kind": choose_kind(n),
        "methods": {},
    }
    methods = result["methods"]

    # Baseline: exact numpy, one BLAS thread per call (as FAISS gets one OpenMP thread per call).
    base = numpy_search(vectors)
    with threadpool_limits(1):
        methods["numpy_exact"] = {
            "role": "baseline",
            "build_s": 0.0,
            "memory_mb": vectors.nbytes / 2**20,
            "recall100": 1.0,
            "ground_truth_batch_s": truth_s,
            "params": {},
            **latency(base, latency_q, plan.repeats, f"{n} numpy"),
            **throughput(base, tput_q, plan.repeats, f"{n} numpy"),
        }

    kinds: tuple[IndexKind, ...] = ("flat", "ivf", "hnsw")
    if n > HNSW_MAX_ITEMS:
        kinds = ("flat", "ivf")
        result["skipped"] = {
            "hnsw": f"not built above {HNSW_MAX_ITEMS:,} items (ranker.retrieval.HNSW_MAX_ITEMS): its "
            "build time grows faster than n (see the 100k row), so at this size it would take most of the run"
        }
    for kind in kinds:
        print(f"  n={n}: building {kind} ...", flush=True)
        gc.collect()
        t0 = time.perf_counter()
        index = ItemIndex.build(ids, vectors, kind)
        build_s = time.perf_counter() - t0
        _, default_ids = index.search(recall_q, K)
        default_recall = recall(default_ids, truth)
        entry: dict[str, Any] = {
            "build_s": build_s,
            "memory_mb": index_bytes(index) / 2**20,
            "default_params": dict(index.meta.params),
            "recall100_default_params": default_recall,
        }
        tuned = index
        if kind == "ivf":
            nlist = index.meta.params["nlist"]
            cands = sorted({c for c in NPROBE_CANDIDATES if c <= nlist} | {nlist})
            tuned, trials, reached = tune(index, recall_q, truth, "nprobe", cands)
            entry.update(tuning=trials, target_reached=reached)
        elif kind == "hnsw":
            tuned, trials, reached = tune(index, recall_q, truth, "ef_search", list(EF_CANDIDATES))
            entry.update(tuning=trials, target_reached=reached)
        _, found = tuned.search(recall_q, K)
        entry["params"] = dict(tuned.meta.params)
        entry["recall100"] = recall(found, truth)
        search = served_search(tuned)
        entry.update(latency(search, latency_q, plan.repeats, f"{n} {kind}"))
        entry.update(throughput(search, tput_q, plan.repeats, f"{n} {kind}"))
        methods[kind] = entry
        del index, tuned
    base_p50 = methods["numpy_exact"]["p50_ms"]["median"]
    base_qps = methods["numpy_exact"]["qps"]["median"]
    for entry in methods.values():
        entry["p50_speedup_vs_numpy"] = base_p50 / entry["p50_ms"]["median"]
        entry["qps_vs_numpy"] = entry["qps"]["median"] / base_qps
    return result


def run(quick: bool, embeddings_path: Path, seed: int = 7) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    out: dict[str, Any] = {"plan": dataclasses.asdict(plan), "recall_target": RECALL_TARGET, "sizes": {}}
    for n in plan.sizes:
        print(f"retrieval: n={n}", flush=True)
        t0 = time.perf_counter()
        out["sizes"][str(n)] = bench_size(n, plan, embeddings_path, seed)
        out["sizes"][str(n)]["wall_s"] = time.perf_counter() - t0
        gc.collect()
    return out
