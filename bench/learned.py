"""The served learned path: ``Recommend`` answered by the trained two-stage ranker through the real API.

Set-up, per catalogue size (100k; 1M in full mode), everything real and started for the run:
- the tiled item catalogue and API index of ``bench.serving`` (``serving.index_folder``: real item
  embeddings tiled to n rows with small Gaussian noise, the index kind the API picks at that size, cached in
  ``.llmrec/bench-cache``);
- one PostgreSQL server (durable, migrated); users written through ``PostgresStore.apply_batch`` with the
  worker's ``PreferenceUpdater`` (ledger rows + profiles, what the stream worker writes). The interactions
  have structure, so the collaborative side has co-occurrence to learn: ``Plan.anchors`` random catalogue
  items are tastes; each taste's pool is its ``Plan.pool`` nearest catalogue items (inner product over the
  catalogue's vectors); a user picks a taste (skewed: a few tastes are common) and rates
  ``Plan.interactions`` items of its pool (nearer items likelier) 6..10, plus ``Plan.noise`` random
  catalogue items rated 1..10;
- the ranker trained from that ledger by ``jobs.train_ranker.train_ranker_from_ledger`` (what
  ``llmrec train-ranker --from-ledger`` runs) with the repository's tuned parameters, against the same
  database and index; its wall time is ``ranker_fit_s`` at that ledger (ledger read + fit + save);
- ``llmrec serve`` as its own process over the index, with the trained ranker as ``CURRENT`` in its
  ``ranker_dir`` (default settings otherwise: ``api.scoring_threads`` = 1).

Checks that the learned path answered: 100 users' answers read one by one (``model_version`` ends with
the ranker's version, strategy ``personalized``, k items), and over the load the API's own counter
``llmrec_api_recommendations_total{ranker, strategy}``: the share answered by ``ranker="learned"``.

Load: ``grpc_api.loadtest`` at 1, 8 and 32 connections (one client per connection, back to back, random
users). The floor: ``bench.floor_server`` (a bare ``grpc.aio`` server answering a fixed 10-item
``RecommendResponse``) under the same load generator at 8 connections, the same users; repeats
interleaved with the API's (API at 1, 8, 32, then the floor, per repeat), so both see the same neighbours.
``recommend_floor_ratio`` = API requests/s at 8 / floor requests/s at 8 (medians over repeats).

At 1M (full mode) also: the API's RSS after the load, the index's recall@100 against exact search (the
nprobe tuning of ``serving.index_folder``), where the memory goes (``memory_breakdown``: RSS growth of a
fresh process as it imports and loads what the API loads), and a prototype of quantised IVF codes (FAISS
SQ8 and fp16 over the same coarse quantiser and nprobe) with their recall and code size.

Fit scaling (full mode): ``LLMRec(...).fit`` on 25/50/75/100 % of mal-completed's interactions (random
subsets, then the served job's index/k-core filter), as ``jobs.train_ranker.train_ranker`` builds the
served ranker (tuned parameters), with the least-squares exponent of fit time on interactions.

``python -m bench.learned [--quick] [--sizes 100000,...] [--out FILE]`` runs this section alone.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
from pydantic import SecretStr

from bench import retrieval, serving
from bench.common import summary
from deploy.postgres import PostgresServer
from deploy.process import ManagedProcess, free_ports, spawn
from grpc_api import loadtest
from llmrec.artifacts import catalogue_path, load_item_vectors
from llmrec.events.schema import EventType
from llmrec.metrics_http import scrape
from llmrec.settings import REPO_ROOT, PostgresSettings, Settings, load_settings
from llmrec.store import migrate
from llmrec.store.interface import LedgerEntry
from llmrec.store.postgres import PostgresStore
from llmrec_client.v1 import recommender_pb2, recommender_pb2_grpc
from ranker.preferences import DecayPolicy, SignalWeights, rating_signal
from stream.item_vectors import ArrayItemVectors
from stream.processing import PreferenceUpdater

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]

USER_PREFIX = "lu"
SEED = 17
K = 10
FLOOR_CONCURRENCY = 8
INSERT_BATCH_USERS = 200
CHECK_USERS = 100
FIT_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
# The learned path's searches (``IndexCatalogue.search``, the warm-item index in ``cold_neighbours``) run
# with one OpenMP thread per request thread (``ItemIndex.search_single_threaded``). This variant serves with
# OMP_NUM_THREADS=1 for the whole process too, to show whether any other OpenMP user still costs.
VARIANT_ENV = {"OMP_NUM_THREADS": "1"}
QUANTISED_NPROBES = (64, 96, 128)
CODE_FILES = ("ranker/model", "ranker/retrieval.py", "grpc_api/service.py", "jobs/train_ranker.py")


@dataclasses.dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]
    users: int
    interactions: int
    noise: int
    anchors: int
    pool: int
    requests: int
    repeats: int
    concurrencies: tuple[int, ...] = (1, 8, 32)
    fit_fractions: tuple[float, ...] = ()
    quantised_prototype: bool = False
    # Also serve the same ranker with FAISS's OpenMP team cut to one thread (``OMP_NUM_THREADS=1``), at the
    # floor's connection count: a diagnostic of the learned path's ANN searches (see ``VARIANT_ENV``).
    omp_variant: bool = True


QUICK = Plan(
    sizes=(100_000,),
    users=600,
    interactions=20,
    noise=2,
    anchors=40,
    pool=80,
    requests=300,
    repeats=1,
    omp_variant=False,
)
FULL = Plan(
    sizes=(100_000, 1_000_000),
    users=2000,
    interactions=20,
    noise=2,
    anchors=100,
    pool=100,
    requests=600,
    repeats=3,
    fit_fractions=FIT_FRACTIONS,
    quantised_prototype=True,
)


# -- synthetic users with structure -------------------------------------------------------------------------


def nearest_pools(vectors: FloatArray, anchors: IntArray, pool: int, chunk: int = 65_536) -> IntArray:
    """[len(anchors), pool] the rows of ``vectors`` with the largest inner product with each anchor's row,
    best first (the anchor itself first for unit vectors); exact, in chunks of ``chunk`` rows."""
    pool = min(pool, len(vectors))
    queries = vectors[anchors].astype(np.float32)
    best_rows = np.zeros((len(anchors), 0), dtype=np.int64)
    best_scores = np.zeros((len(anchors), 0), dtype=np.float32)
    for start in range(0, len(vectors), chunk):
        scores = queries @ vectors[start : start + chunk].T
        rows = np.broadcast_to(np.arange(start, start + scores.shape[1]), scores.shape)
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_rows = np.concatenate([best_rows, rows], axis=1)
        keep = min(pool, all_scores.shape[1])
        part = np.argpartition(-all_scores, keep - 1, axis=1)[:, :keep]
        best_scores = np.take_along_axis(all_scores, part, axis=1)
        best_rows = np.take_along_axis(all_rows, part, axis=1)
    order = np.lexsort((best_rows, -best_scores), axis=1)
    return np.take_along_axis(best_rows, order, axis=1).astype(np.int64)


def taste_histories(
    users: int, pools: IntArray, interactions: int, noise: int, n_items: int, rng: np.random.Generator
) -> list[tuple[IntArray, IntArray]]:
    """Per user (rows, ratings): ``interactions`` distinct rows of one taste's pool (taste t chosen with
    probability ~ 1/sqrt(t+1); pool rank r with probability ~ 1/(r+5)) rated 6..10, then ``noise`` random
    rows of the ``n_items`` rated 1..10 (a row already taken is not taken twice)."""
    n_tastes, width = pools.shape
    taste_p = 1.0 / np.sqrt(np.arange(1, n_tastes + 1))
    taste_p /= taste_p.sum()
    rank_p = 1.0 / (np.arange(width) + 5.0)
    rank_p /= rank_p.sum()
    take = min(interactions, width)
    out: list[tuple[IntArray, IntArray]] = []
    for _ in range(users):
        taste = int(rng.choice(n_tastes, p=taste_p))
        liked = pools[taste, rng.choice(width, size=take, replace=False, p=rank_p)]
        extra = rng.choice(n_items, size=noise, replace=False) if noise else np.zeros(0, np.int64)
        extra = extra[~np.isin(extra, liked)]
        rows = np.concatenate([liked, extra]).astype(np.int64)
        ratings = np.concatenate(
            [rng.integers(6, 11, size=liked.size), rng.integers(1, 11, size=extra.size)]
        ).astype(np.int64)
        out.append((rows, ratings))
    return out


def user_id(i: int) -> str:
    return f"{USER_PREFIX}{i}"


async def write_users(
    dsn: str, ids: IntArray, vectors: FloatArray, histories: Sequence[tuple[IntArray, IntArray]]
) -> float:
    """The histories as rating events through ``PostgresStore.apply_batch`` (ledger + profiles, as the
    worker writes them); returns the seconds it took."""
    touched = np.unique(np.concatenate([rows for rows, _ in histories]))
    updater = PreferenceUpdater(ArrayItemVectors(ids[touched], vectors[touched]), DecayPolicy())
    weights = SignalWeights()
    rng = np.random.default_rng(SEED + 1)
    t0 = time.perf_counter()
    async with PostgresStore(dsn, min_size=2, max_size=2, name="bench-learned-users") as store:
        batches: list[list[LedgerEntry]] = []
        for first in range(0, len(histories), INSERT_BATCH_USERS):
            entries = []
            for u in range(first, min(len(histories), first + INSERT_BATCH_USERS)):
                rows, ratings = histories[u]
                for j, (row, rating) in enumerate(zip(rows.tolist(), ratings.tolist(), strict=True)):
                    entries.append(
                        LedgerEntry(
                            event_id=f"{user_id(u)}-{j}",
                            user_id=user_id(u),
                            item_id=int(ids[row]),
                            event_type=EventType.RATING,
                            event_time=serving.T_END - timedelta(hours=int(rng.integers(0, 24 * 365))),
                            strength=rating_signal(int(rating), weights),
                            rating=float(rating),
                            source_topic="bench-learned",
                        )
                    )
            batches.append(entries)
        for i in range(0, len(batches), 2):
            await asyncio.gather(*(store.apply_batch(b, updater) for b in batches[i : i + 2]))
    return time.perf_counter() - t0


async def _clear_users(dsn: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("TRUNCATE interactions, user_profiles")


# -- training ---------------------------------------------------------------------------------------------


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def train_from_ledger(root: Path, dsn: str, index_folder: Path, name: str) -> dict[str, Any]:
    """``train_ranker_from_ledger`` against the bench database and index (tuned parameters from the
    repository's ``reports/tuned_params.json``); returns what it trained and the ranker folder."""
    from jobs.train_ranker import train_ranker_from_ledger

    artifacts = root / f"train-{name}"
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "index").symlink_to(index_folder)
    settings = Settings(
        state_dir=root / "state",
        artifacts_dir=artifacts,
        reports_dir=REPO_ROOT / "reports",
        postgres=PostgresSettings(dsn=SecretStr(dsn)),
    )
    t0 = time.perf_counter()
    trained = train_ranker_from_ledger(settings)
    wall = time.perf_counter() - t0
    size = folder_bytes(trained.folder)
    return {
        "folder": str(trained.folder),
        "version": trained.folder.name,
        "ranker_dir": str(settings.ranker_dir),
        "users": trained.users,
        "items": trained.items,
        "interactions": trained.interactions,
        "fit_s": wall,
        "params": trained.params,
        "artifact_bytes": size,
        "artifact_bytes_per_item": size / max(1, trained.items),
        "artifact_files": {p.name: p.stat().st_size for p in trained.folder.iterdir() if p.is_file()},
    }


def fit_scaling(fractions: Sequence[float], seed: int = SEED) -> dict[str, Any]:
    """``LLMRec.fit`` on growing random shares of mal-completed's interactions, built as the served job
    builds it (index filter + 5-core, the index's vectors, tuned parameters)."""
    from jobs.train_ranker import indexed_only
    from llmrec.artifacts import align_rows
    from llmrec.data_source import resolve_data_source
    from llmrec.settings import load_settings
    from ranker.model.recommender import LLMRec, variant
    from ranker.model.side_info import side_information
    from research.datasets import LOADERS, MAL_COMPLETED, with_serving_keys
    from research.llmrec_specs import DEFAULTS
    from research.registry import resolved_params
    from research.tuning import load_tuned

    settings = load_settings()
    source = resolve_data_source(settings)
    ids, vectors = load_item_vectors(settings.index_dir)
    full = with_serving_keys(MAL_COMPLETED, LOADERS[MAL_COMPLETED](source.path))
    params = {
        **DEFAULTS,
        **(
            resolved_params(load_tuned(settings.reports_dir / "tuned_params.json"), MAL_COMPLETED, "llmrec")
            or {}
        ),
    }
    rng = np.random.default_rng(seed)
    order = rng.permutation(full.n_interactions)
    points: list[dict[str, Any]] = []
    for fraction in fractions:
        rows = np.sort(order[: round(fraction * full.n_interactions)])
        data = indexed_only(full.subset(rows), set(ids.tolist()), 5)
        item_vectors = align_rows(data.item_ids, ids, vectors)
        model = LLMRec(
            side_information(data, item_vectors, str(settings.index_dir)),
            variant("llmrec", seed, **params),
            progress=False,
        )
        matrix = data.matrix()
        t0 = time.perf_counter()
        model.fit(matrix)
        seconds = time.perf_counter() - t0
        stats = data.stats()
        points.append(
            {
                "fraction": fraction,
                "users": stats.users,
                "items": stats.items,
                "interactions": stats.interactions,
                "fit_s": seconds,
            }
        )
        print(f"learned: fit on {fraction:.0%} of mal-completed ({stats.interactions:,}): {seconds:.1f} s")
    b = serving.exponent([p["interactions"] for p in points], [p["fit_s"] for p in points])
    return {
        "dataset": MAL_COMPLETED,
        "source": source.describe(),
        "points": points,
        "exponent": b,
        "growth": serving.describe(b),
    }


# -- checks and load --------------------------------------------------------------------------------------


def check_answers(target: str, users: Sequence[str], version: str) -> dict[str, Any]:
    """Read ``users``' answers one by one: how many came from the learned ranker of ``version``."""
    counts = {"checked": 0, "model_version_matches": 0, "personalized": 0, "k_items": 0}
    example = ""
    with grpc.insecure_channel(target) as channel:
        stub = recommender_pb2_grpc.RecommenderStub(channel)  # type: ignore[no-untyped-call]
        for user in users:
            answer = stub.Recommend(recommender_pb2.RecommendRequest(user_id=user, k=K), timeout=10)
            counts["checked"] += 1
            counts["model_version_matches"] += answer.model_version.endswith("/" + version)
            counts["personalized"] += answer.strategy == "personalized"
            counts["k_items"] += len(answer.items) == K
            example = example or answer.model_version
    return {**counts, "example_model_version": example}


def answers_by_ranker(metrics_text: str) -> dict[str, float]:
    """``llmrec_api_recommendations_total`` by ``ranker/strategy`` label pair, from a Prometheus scrape."""
    out: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if not line.startswith("llmrec_api_recommendations_total{"):
            continue
        labels, value = line.rsplit(" ", 1)
        parts = dict(
            part.split("=", 1)
            for part in labels[labels.index("{") + 1 : labels.rindex("}")].split(",")
            if part
        )
        key = f"{parts.get('ranker', '').strip(chr(34))}/{parts.get('strategy', '').strip(chr(34))}"
        out[key] = out.get(key, 0.0) + float(value)
    return out


def counter_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after if after[k] - before.get(k, 0.0) > 0}


def one_load(target: str, users: Sequence[str], concurrency: int, requests: int, seed: int) -> dict[str, Any]:
    plan = loadtest.LoadPlan(
        target=target, concurrency=concurrency, requests=requests, duration_s=120.0, k=K, seed=seed
    )
    result = loadtest.run(plan, users)
    return {
        "qps": result.requests_per_s,
        "p50_ms": result.latency.p50_ms,
        "p99_ms": result.latency.p99_ms,
        "errors": result.errors,
        "strategies": result.strategies,
        "requests": result.requests,
    }


def collect(runs: list[dict[str, Any]]) -> dict[str, Any]:
    errors: dict[str, int] = {}
    strategies: dict[str, int] = {}
    for run in runs:
        for code, n in run["errors"].items():
            errors[code] = errors.get(code, 0) + n
        for name, n in run["strategies"].items():
            strategies[name] = strategies.get(name, 0) + n
    return {
        "p50_ms": summary([r["p50_ms"] for r in runs if r["p50_ms"] is not None]),
        "p99_ms": summary([r["p99_ms"] for r in runs if r["p99_ms"] is not None]),
        "qps": summary([r["qps"] for r in runs]),
        "errors": errors,
        "strategies": strategies,
        "requests": sum(r["requests"] for r in runs),
    }


class Floor:
    """``bench.floor_server`` as its own process (as the API is)."""

    def __init__(self, root: Path) -> None:
        (port,) = free_ports(1)
        self.target = f"127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        self.process: ManagedProcess = spawn(
            "floor",
            [sys.executable, "-m", "bench.floor_server", str(port)],
            log_path=root / "floor.log",
            env=env,
            cwd=REPO_ROOT,
            grace_s=5.0,
        )
        with grpc.insecure_channel(self.target) as channel:
            grpc.channel_ready_future(channel).result(timeout=60)

    def close(self) -> None:
        self.process.stop()


def measure_size(
    root: Path, server: PostgresServer, base: serving.Base, n: int, plan: Plan
) -> dict[str, Any]:
    out: dict[str, Any] = {"n": n}
    folder, out["index"] = serving.index_folder(base, n)
    ids, vectors = load_item_vectors(folder)
    rng = np.random.default_rng(SEED + n)
    anchors = rng.choice(len(ids), size=plan.anchors, replace=False).astype(np.int64)
    t0 = time.perf_counter()
    pools = nearest_pools(vectors, anchors, plan.pool)
    histories = taste_histories(plan.users, pools, plan.interactions, plan.noise, len(ids), rng)
    out["synthesis_s"] = time.perf_counter() - t0
    asyncio.run(_clear_users(server.dsn))
    out["user_write_s"] = asyncio.run(write_users(server.dsn, ids, vectors, histories))
    out["ledger_interactions"] = int(sum(len(r) for r, _ in histories))
    out["distinct_items_touched"] = int(np.unique(np.concatenate([r for r, _ in histories])).size)
    del vectors
    print(f"learned: {n:,} items: training the ranker from the ledger ...", flush=True)
    out["training"] = train_from_ledger(root, server.dsn, folder, str(n))
    version = out["training"]["version"]

    name = f"learned-{n}"
    artifacts = root / f"artifacts-{name}"
    artifacts.mkdir(parents=True, exist_ok=True)
    shutil.copytree(out["training"]["ranker_dir"], artifacts / "ranker")
    users = [user_id(i) for i in range(plan.users)]
    api = serving.Api(root, server.dsn, folder, name)
    floor: Floor | None = None
    try:
        out["api_startup_s"] = api.startup_s
        out["scoring_threads"] = api.settings.api.scoring_threads
        out["check"] = check_answers(api.target, users[:CHECK_USERS], version)
        floor = Floor(root)
        metrics_port = api.settings.api.metrics_port
        before = answers_by_ranker(scrape(metrics_port))
        cpu0 = api.cpu_seconds()
        runs: dict[str, list[dict[str, Any]]] = {str(c): [] for c in plan.concurrencies}
        floor_runs: list[dict[str, Any]] = []
        for r in range(plan.repeats):
            for c in plan.concurrencies:
                runs[str(c)].append(one_load(api.target, users, c, plan.requests, SEED + r))
                last = runs[str(c)][-1]
                print(
                    f"  learned {n:,} c={c} repeat {r + 1}: {last['qps']:.0f} req/s, "
                    f"p99 {last['p99_ms']:.2f} ms",
                    flush=True,
                )
            floor_runs.append(one_load(floor.target, users, FLOOR_CONCURRENCY, plan.requests, SEED + r))
            print(
                f"  floor c={FLOOR_CONCURRENCY} repeat {r + 1}: {floor_runs[-1]['qps']:.0f} req/s", flush=True
            )
        cpu1 = api.cpu_seconds()
        out["answers_during_load"] = counter_delta(before, answers_by_ranker(scrape(metrics_port)))
        sent = sum(sum(x["requests"] for x in v) for v in runs.values())
        out["api_cpu_ms_per_request"] = (
            None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) * 1000.0 / max(1, sent)
        )
        out["concurrency"] = {c: collect(v) for c, v in runs.items()}
        out["floor"] = {"concurrency": FLOOR_CONCURRENCY, **collect(floor_runs)}
        served = out["concurrency"].get(str(FLOOR_CONCURRENCY))
        if served is not None:
            out["floor_ratio"] = served["qps"]["median"] / out["floor"]["qps"]["median"]
        learned = sum(v for k, v in out["answers_during_load"].items() if k.startswith("learned/"))
        total = sum(out["answers_during_load"].values())
        out["learned_share_during_load"] = learned / total if total else None
        out.update(api.rss())
    finally:
        if floor is not None:
            floor.close()
        api.close()
    if plan.omp_variant and "floor" in out:
        variant_name = f"{name}-omp1"
        shutil.copytree(out["training"]["ranker_dir"], root / f"artifacts-{variant_name}" / "ranker")
        api = serving.Api(root, server.dsn, folder, variant_name, extra_env=VARIANT_ENV)
        try:
            variant_runs = [
                one_load(api.target, users, FLOOR_CONCURRENCY, plan.requests, SEED + r)
                for r in range(plan.repeats)
            ]
            out["variant"] = {
                "env": " ".join(f"{k}={v}" for k, v in VARIANT_ENV.items()),
                "concurrency": FLOOR_CONCURRENCY,
                **collect(variant_runs),
                **api.rss(),
            }
            print(
                f"  learned {n:,} {out['variant']['env']} c={FLOOR_CONCURRENCY}: "
                f"{out['variant']['qps']['median']:.0f} req/s",
                flush=True,
            )
        finally:
            api.close()
    if plan.quantised_prototype and n >= 1_000_000:
        ranker_folder = Path(out["training"]["folder"])
        for key, fn, args in (
            ("memory_breakdown", memory_breakdown, (folder, ranker_folder)),
            ("quantised", quantised_recall, (folder,)),
        ):
            try:
                out[key] = in_fresh_process(fn, *args)
            except Exception as exc:  # the served figures above stand without these
                out[key] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


# -- memory at 1M --------------------------------------------------------------------------------


def in_fresh_process(fn: Any, *args: Any) -> Any:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory_breakdown(index_folder: Path, ranker_folder: Path) -> dict[str, Any]:
    """RSS growth (MB) of a fresh process as it loads, step by step, what the API holds."""
    steps: dict[str, float] = {}
    last = _rss_mb()
    steps["interpreter + numpy"] = last

    def step(name: str) -> None:
        nonlocal last
        now = _rss_mb()
        steps[name] = now - last
        last = now

    import faiss  # noqa: F401
    import torch  # noqa: F401

    import grpc_api.service  # noqa: F401

    step("imports (torch, faiss, grpc, service)")
    from llmrec.catalogue import Catalogue
    from ranker.model.serving import load_ranker
    from ranker.retrieval import ItemIndex

    index = ItemIndex.load(index_folder)
    step("item index (FAISS + embeddings array + ids)")
    catalogue = Catalogue.load(catalogue_path(index_folder))
    step("catalogue metadata (Python objects)")
    ranker = load_ranker(ranker_folder)
    step("trained ranker (item side, warm index, network)")
    view = ranker.catalogue_of(index)
    step("ranker's view of the index (row maps)")
    embeddings = index.embeddings
    faiss_file = index_folder / "index.faiss"
    out = {
        "steps_mb": steps,
        "total_mb": last,
        "embeddings_array_mb": embeddings.nbytes / 2**20,
        "faiss_file_mb": faiss_file.stat().st_size / 2**20 if faiss_file.is_file() else None,
        "ranker_vectors_mb": ranker.side.vectors.nbytes / 2**20,
        "catalogue_items": len(list(catalogue)),
    }
    del index, catalogue, ranker, view
    return out


def quantised_recall(index_folder: Path, queries: int = 200) -> dict[str, Any]:
    """Recall@100 against exact search of IVF indexes with scalar-quantised codes (SQ8, fp16) built on the
    cached index's own coarse quantiser and nprobe; the float32 IVF as measured alongside. A prototype in
    bench code: ``ranker.retrieval`` builds float32 IVF-flat codes today."""
    import faiss

    meta = json.loads((index_folder / "meta.json").read_text())
    params = meta["params"]
    if meta.get("kind") != "ivf" and "nprobe" not in params:
        return {"error": f"the cached index is {meta.get('kind')}, not IVF"}
    ids, vectors = load_item_vectors(index_folder)
    rng = np.random.default_rng(SEED)
    q = retrieval.make_queries(vectors, queries, rng)
    truth = retrieval.exact_topk(vectors, q, retrieval.K)
    flat = faiss.read_index(str(index_folder / "index.faiss"))
    ivf = faiss.extract_index_ivf(flat)
    nprobe = int(params["nprobe"])
    out: dict[str, Any] = {"nlist": int(ivf.nlist), "nprobe": nprobe, "queries": queries, "methods": {}}

    def recall(index: Any, probes: int = nprobe) -> float:
        index.nprobe = probes
        _, found = index.search(q, retrieval.K)
        hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
        return hits / (queries * retrieval.K)

    # The float32 index as the API holds it, searched the same way (rows in insertion order).
    ivf_flat = faiss.IndexIVFFlat(ivf.quantizer, vectors.shape[1], ivf.nlist, faiss.METRIC_INNER_PRODUCT)
    ivf_flat.add(vectors)
    out["methods"]["ivf-flat float32"] = {
        "recall100": recall(ivf_flat),
        "code_mb": vectors.shape[0] * vectors.shape[1] * 4 / 2**20,
    }
    del ivf_flat
    sample = vectors[rng.choice(len(vectors), size=min(100_000, len(vectors)), replace=False)]
    for name, qtype, width in (
        ("ivf-sq8", faiss.ScalarQuantizer.QT_8bit, 1),
        ("ivf-fp16", faiss.ScalarQuantizer.QT_fp16, 2),
    ):
        t0 = time.perf_counter()
        index = faiss.IndexIVFScalarQuantizer(
            ivf.quantizer, vectors.shape[1], ivf.nlist, qtype, faiss.METRIC_INNER_PRODUCT
        )
        index.train(sample)
        index.add(vectors)
        out["methods"][name] = {
            "recall100": recall(index),
            "code_mb": vectors.shape[0] * vectors.shape[1] * width / 2**20,
            "build_s": time.perf_counter() - t0,
            # Deeper probing buys back what the coarser codes lose (search cost grows with nprobe).
            "recall100_by_nprobe": {
                str(p): recall(index, p) for p in QUANTISED_NPROBES if p > nprobe and p <= ivf.nlist
            },
        }
        del index
    out["items"] = len(ids)
    return out


# -- the section --------------------------------------------------------------------------------


def code_state() -> str:
    """The commit and a digest of the served path's source files as measured (the tree may hold
    uncommitted changes: the digest tells two runs' code apart)."""
    import hashlib
    import subprocess

    digest = hashlib.sha256()
    for name in CODE_FILES:
        path = REPO_ROOT / name
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            if file.is_file():
                digest.update(file.read_bytes())
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        head = "unknown"
    return f"commit {head}, sha256 of {', '.join(CODE_FILES)} = {digest.hexdigest()[:12]}"


def run(quick: bool, sizes: Sequence[int] | None = None) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    if sizes is not None:
        plan = dataclasses.replace(plan, sizes=tuple(sizes))
    started = time.perf_counter()
    load_before = os.getloadavg()
    out: dict[str, Any] = {"plan": dataclasses.asdict(plan), "k": K, "sizes": {}, "code_state": code_state()}
    base = serving.load_base(load_settings().index_dir)
    root = Path(tempfile.mkdtemp(prefix="llmrec-bench-learned-"))
    root.chmod(0o755)  # PostgreSQL may run as another user (when we are root) and must traverse this
    (pg_port,) = free_ports(1)
    server = PostgresServer(state_dir=root / "postgres", port=pg_port)
    try:
        server.start()
        migrate(server.dsn)
        for n in plan.sizes:
            try:
                out["sizes"][str(n)] = measure_size(root, server, base, n, plan)
            except Exception as exc:  # reported with the reason, never as a made-up number
                out["sizes"][str(n)] = {"error": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        try:
            server.stop()
        except Exception as exc:
            out.setdefault("stop_errors", []).append(f"{type(exc).__name__}: {exc}")
        shutil.rmtree(root, ignore_errors=True)
    if plan.fit_fractions:
        try:
            out["fit_scaling"] = fit_scaling(plan.fit_fractions)
        except Exception as exc:
            out["fit_scaling"] = {"error": f"{type(exc).__name__}: {exc}"}
    out["load_average"] = {"start": list(load_before), "end": list(os.getloadavg())}
    out["wall_s"] = time.perf_counter() - started
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.learned", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", help="comma-separated catalogue sizes (default: the plan's)")
    parser.add_argument("--fit-only", action="store_true", help="only the mal-completed fit scaling")
    parser.add_argument("--out", type=Path, help="write the result here as JSON (default: stdout)")
    args = parser.parse_args()
    if args.fit_only:
        result: dict[str, Any] = {"fit_scaling": fit_scaling(FIT_FRACTIONS)}
    else:
        sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
        result = run(args.quick, sizes)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
