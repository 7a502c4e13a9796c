"""``Recommend`` through the real gRPC path: the API process, PostgreSQL profiles, 8 concurrent clients.

Set-up (everything real, started for the run and stopped at the end):
- one PostgreSQL server (``deploy.postgres.PostgresServer``, durable: fsync on, as deployed), migrated;
- users created through the store (``PostgresStore.apply_batch`` with the worker's ``PreferenceUpdater``,
  i.e. ledger rows plus profiles, exactly what the worker writes): ``Plan.interactions`` ratings each, on
  items drawn at random from the first 10,000 real items (present in every catalogue size), ratings 1-10,
  event times over the past year;
- item catalogues of n items built as in ``bench.retrieval.item_vectors`` (the real item embeddings of
  ``artifacts/index/embeddings.npy`` tiled to n rows, copies after the first perturbed with Gaussian noise
  and renormalised); copy c of MAL item i gets anime id ``i + c * ID_STRIDE`` (``mal:<that>``) and i's
  title (suffixed ``#c``), genres and member count, so genre filters and the popularity prior behave as
  on the real catalogue;
- the index kind the API would be given at that size (``ranker.retrieval.choose_kind``); an IVF index
  gets the smallest nprobe whose recall@100 against exact search reaches 0.95 on 200 user-like queries;
  index folders are cached in ``.llmrec/bench-cache`` between runs (keyed by size, kind, seed, noise and
  the embeddings' content), and the report says whether this run built or reused one;
- the API as its own process (``llmrec serve``, default settings but free ports), log level INFO (every
  request writes its log line, as deployed).

Load: ``grpc_api.loadtest`` (the code behind ``llmrec loadtest``) in this process: 8 clients, each on its
own connection, sending ``Recommend(k=10)`` back to back for users drawn at random from the users in the
database; ``Plan.requests`` per repeat after 16 uncounted warm-up requests, ``Plan.repeats`` repeats.
Reported per point: median over repeats of the per-repeat p50 / p99 latency and requests/s, with their
spread (``bench.common.summary``), errors by code, and the API process's RSS (``VmRSS`` after the load,
``VmHWM`` its peak) read from /proc. The load generator, PostgreSQL and the API share the machine's cores.

Two sweeps:
- users: the database holds 100, 1k, 10k (and 100k in full mode) users, grown in place, while the API
  serves the ``USERS_SWEEP_ITEMS`` catalogue;
- items: 10k, 100k (and 1M in full mode) items, with the largest user population in the database (the
  100k-item point is the last point of the users sweep, which is the same configuration).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import SecretStr
from tqdm import tqdm

from bench import retrieval
from bench.common import summary
from deploy.env import settings_env
from deploy.postgres import PostgresServer
from deploy.process import ManagedProcess, free_port_run, free_ports, spawn
from deploy.stack import llmrec_command
from grpc_api import loadtest
from grpc_api.metrics import handled_series
from grpc_api.processes import wait_until_all_serving
from llmrec.artifacts import EMBEDDINGS_FILE, catalogue_path, load_item_vectors, publish_dir
from llmrec.catalogue import Catalogue, Item
from llmrec.events.schema import EventType
from llmrec.item_ids import item_keys, mal_item_id
from llmrec.metrics_http import sample_value, scrape
from llmrec.settings import REPO_ROOT, ApiSettings, PostgresSettings, Settings
from llmrec.store import migrate
from llmrec.store.interface import LedgerEntry
from llmrec.store.postgres import PostgresStore
from llmrec_client.client import RecommenderClient
from ranker.preferences import DecayPolicy, SignalWeights, rating_signal
from ranker.retrieval import ItemIndex, choose_kind
from stream.item_vectors import ArrayItemVectors
from stream.processing import PreferenceUpdater

ID_STRIDE = 10_000_000  # above every MAL anime id
USER_PREFIX = "bu"
USER_ITEM_POOL = 10_000  # users interact with the first rows only: items present at every size
USERS_SWEEP_ITEMS = 100_000
INSERT_BATCH_USERS = 200
CONCURRENCY = 8
K = 10
SEED = 7
CACHE_DIR = REPO_ROOT / ".llmrec" / "bench-cache"
INDEX_INFO = "bench-index.json"  # beside the index files: how the cached index was built and tuned
T_END = datetime(2026, 1, 1, tzinfo=UTC)


# API processes (``api.processes``) of the extra 100k-item point, compared with one process.
PROCESSES_COMPARED = 2


@dataclasses.dataclass(frozen=True)
class Plan:
    item_sizes: tuple[int, ...]
    user_sizes: tuple[int, ...]
    interactions: int
    requests: int
    repeats: int


QUICK = Plan(
    item_sizes=(10_000, 100_000), user_sizes=(100, 1_000, 10_000), interactions=10, requests=1000, repeats=3
)
FULL = Plan(
    item_sizes=(10_000, 100_000, 1_000_000),
    user_sizes=(100, 1_000, 10_000, 100_000),
    interactions=10,
    requests=2000,
    repeats=5,
)


# -- catalogue and index ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Base:
    item_ids: np.ndarray  # the index's item keys
    native_ids: np.ndarray  # the catalogue's MAL anime ids, row for row
    catalogue: Catalogue | None
    embeddings_path: Path
    digest: str


def load_base(index_dir: Path) -> Base:
    """The real items of the published index (ids, catalogue); random vectors and a synthetic catalogue
    when there is none (a fresh clone)."""
    folder = index_dir.resolve()
    embeddings = folder / EMBEDDINGS_FILE
    if embeddings.is_file() and catalogue_path(folder).is_file():
        ids, _ = load_item_vectors(folder)
        digest = hashlib.sha256(embeddings.read_bytes()).hexdigest()[:10]
        catalogue = Catalogue.load(catalogue_path(folder))
        by_key = {item.key: item.item_id for item in catalogue}
        native = np.asarray([by_key[key] for key in ids.tolist()], dtype=np.int64)
        return Base(ids, native, catalogue, embeddings, digest)
    native = np.arange(1, retrieval.DIM_RANDOM * 50 + 1, dtype=np.int64)
    return Base(item_keys(mal_item_id(i) for i in native.tolist()), native, None, embeddings, "random")


def catalogue_for(base: Base, n: int) -> tuple[np.ndarray, Catalogue]:
    rows = np.arange(n)
    copy, source = rows // len(base.item_ids), rows % len(base.item_ids)
    native = base.native_ids[source] + copy * ID_STRIDE
    items = []
    for item_id, c, s in zip(native.tolist(), copy.tolist(), source.tolist(), strict=True):
        original = base.catalogue.get(int(base.native_ids[s])) if base.catalogue is not None else None
        if original is None:
            items.append(
                Item(item_id=item_id, title=f"item {item_id}", genres=("Drama",), members=1 + s % 997)
            )
        else:
            items.append(
                Item(
                    item_id=item_id,
                    title=original.title if c == 0 else f"{original.title} #{c}",
                    genres=original.genres,
                    members=original.members,
                    type=original.type,
                    source=original.source,
                )
            )
    return np.asarray([item.key for item in items], dtype=np.int64), Catalogue.from_items(items)


def index_folder(base: Base, n: int) -> tuple[Path, dict[str, Any]]:
    """A published index folder of n items for the API (cached between runs)."""
    kind = choose_kind(n)
    key = f"serving-{n}-{kind}-s{SEED}-noise{retrieval.NOISE_STD}-{base.digest}"
    folder = CACHE_DIR / key
    info: dict[str, Any] = {"n": n, "kind": kind, "folder": str(folder)}
    if (folder / "meta.json").is_file() and catalogue_path(folder).is_file():
        # What the run that built it measured (build time, nprobe tuning), when it recorded it.
        recorded = folder / INDEX_INFO
        if recorded.is_file():
            info.update(json.loads(recorded.read_text()))
        info["built_in_this_run"] = False
        info["params"] = json.loads((folder / "meta.json").read_text())["params"]
        return folder, info
    print(f"serving: building the {n}-item {kind} index for the API ...", flush=True)
    rng = np.random.default_rng(SEED)
    t0 = time.perf_counter()
    vectors, note = retrieval.item_vectors(n, base.embeddings_path, rng)
    ids, catalogue = catalogue_for(base, n)
    index = ItemIndex.build(ids, vectors, kind, encoder_model="bench")
    info["build_s"] = time.perf_counter() - t0
    if kind == "ivf":
        queries = retrieval.make_queries(vectors, 200, rng)
        truth = ids[retrieval.exact_topk(vectors, queries, retrieval.K)]
        nlist = index.meta.params["nlist"]
        candidates = sorted({c for c in retrieval.NPROBE_CANDIDATES if c <= nlist} | {nlist})
        index, trials, reached = retrieval.tune(index, queries, truth, "nprobe", candidates)
        info.update(tuning=trials, target_reached=reached)
    info["params"] = dict(index.meta.params)
    info["vectors"] = note
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with publish_dir(folder) as staging:
        index.save(staging)
        catalogue.save(catalogue_path(staging))
        built = {k: v for k, v in info.items() if k not in ("folder", "n", "kind")}
        built["built_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        (staging / INDEX_INFO).write_text(json.dumps(built, indent=2) + "\n")
    info["built_in_this_run"] = True
    del index, vectors, catalogue
    gc.collect()
    return folder, info


# -- users ------------------------------------------------------------------------------------------------


def user_id(i: int) -> str:
    return f"{USER_PREFIX}{i}"


async def add_users(dsn: str, base: Base, start: int, stop: int, interactions: int) -> float:
    """Users ``start .. stop-1`` through ``PostgresStore.apply_batch``; returns the seconds it took."""
    rng = np.random.default_rng(SEED + start)
    pool = min(USER_ITEM_POOL, len(base.item_ids))
    vectors, _ = retrieval.item_vectors(pool, base.embeddings_path, np.random.default_rng(SEED))
    updater = PreferenceUpdater(ArrayItemVectors(base.item_ids[:pool], vectors), DecayPolicy())
    weights = SignalWeights()
    t0 = time.perf_counter()
    async with PostgresStore(dsn, min_size=2, max_size=2, name="bench-users") as store:
        batches = []
        for first in range(start, stop, INSERT_BATCH_USERS):
            entries = []
            for u in range(first, min(stop, first + INSERT_BATCH_USERS)):
                items = rng.choice(pool, interactions, replace=False)
                for j, row in enumerate(items.tolist()):
                    rating = int(rng.integers(1, 11))
                    entries.append(
                        LedgerEntry(
                            event_id=f"{user_id(u)}-{j}",
                            user_id=user_id(u),
                            item_id=int(base.item_ids[row]),
                            event_type=EventType.RATING,
                            event_time=T_END - timedelta(hours=int(rng.integers(0, 24 * 365))),
                            strength=rating_signal(rating, weights),
                            rating=float(rating),
                            source_topic="bench",
                        )
                    )
            batches.append(entries)
        with tqdm(total=stop - start, desc=f"users {start}->{stop}", unit="user") as bar:
            # Two transactions at a time (2 cores); batches hold disjoint users, so they never wait on locks.
            for i in range(0, len(batches), 2):
                pair = batches[i : i + 2]
                await asyncio.gather(*(store.apply_batch(b, updater) for b in pair))
                bar.update(sum(len(b) for b in pair) // interactions)
    return time.perf_counter() - t0


# -- the API process --------------------------------------------------------------------------------------


def rss_of(pid: int) -> dict[str, float | None]:
    out: dict[str, float | None] = {"rss_mb": None, "peak_rss_mb": None}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out["rss_mb"] = int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    out["peak_rss_mb"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (``/proc/<pid>/stat`` fields 14 and 15)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def served_requests(metrics_port: int) -> float | None:
    """OK Recommend answers the API itself counted (its Prometheus histogram), to cross-check the load."""
    try:
        text = scrape(metrics_port)
    except OSError:
        return None
    served = sample_value(text, handled_series("Recommend"))
    if served is None:  # an API from a checkout before the go-grpc-prometheus names (bench.serving_compare)
        served = sample_value(text, 'llmrec_api_request_seconds_count{code="OK",method="Recommend"}')
    return served


class Api:
    """``llmrec serve`` over one index folder; stopped by ``close``."""

    def __init__(
        self,
        root: Path,
        dsn: str,
        folder: Path,
        name: str,
        source: Path | None = None,
        processes: int = 1,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        """``source``: run the API from another checkout's code (``bench.serving_compare``);
        ``processes``: ``api.processes`` (each child has its own metrics port, metrics_port + i);
        ``extra_env``: environment variables set for the API process on top of its settings' (a
        diagnostic such as ``OMP_NUM_THREADS``)."""
        (port,) = free_ports(1)
        metrics_port = free_port_run(processes)
        artifacts = root / f"artifacts-{name}"
        artifacts.mkdir(parents=True, exist_ok=True)
        (artifacts / "index").symlink_to(folder)
        self.settings = Settings(
            state_dir=root / "state",
            artifacts_dir=artifacts,
            log_level="INFO",
            log_json=False,
            postgres=PostgresSettings(dsn=SecretStr(dsn)),
            api=ApiSettings(
                host="127.0.0.1",
                port=port,
                metrics_port=metrics_port,
                processes=processes,
                http_enabled=False,  # gRPC is what is measured
            ),
        )
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        env = {**settings_env(self.settings), **(extra_env or {})}
        argv = [llmrec_command(), "serve"]
        if source is not None:
            env["PYTHONPATH"] = str(source)
            argv = [sys.executable, "-m", "cli.main", "serve"]
        self.process: ManagedProcess = spawn(
            f"api-{name}",
            argv,
            log_path=root / f"api-{name}.log",
            env=env,
            cwd=root,
            grace_s=20.0,
        )
        with RecommenderClient(self.settings.api.target) as client:
            try:
                client.wait_until_serving(timeout_s=600)
                if processes > 1:  # health answered from one process; wait for every one
                    wait_until_all_serving("127.0.0.1", metrics_port, processes, timeout_s=600)
            except Exception:
                print(self.process.tail(), flush=True)
                self.close()
                raise
        self.startup_s = time.perf_counter() - t0

    @property
    def target(self) -> str:
        return self.settings.api.target

    def pids(self) -> list[int]:
        """The API's process and, with ``processes`` > 1, its children."""
        pid = self.process.pid
        children: list[int] = []
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    children += [int(c) for c in f.read().split()]
        except OSError:
            pass
        return [pid, *children]

    def cpu_seconds(self) -> float | None:
        times = [cpu_seconds(p) for p in self.pids()]
        return None if None in times else sum(t for t in times if t is not None)

    def served_requests(self) -> float | None:
        counts = [
            served_requests(self.settings.api.metrics_port + i) for i in range(self.settings.api.processes)
        ]
        return None if None in counts else sum(c for c in counts if c is not None)

    def rss(self) -> dict[str, float | None]:
        """``rss_of`` summed over the API's processes (the parent of several is small but counted)."""
        total: dict[str, float | None] = {"rss_mb": 0.0, "peak_rss_mb": 0.0}
        for pid in self.pids():
            for key, value in rss_of(pid).items():
                current = total[key]
                total[key] = None if value is None or current is None else current + value
        return total

    def close(self) -> None:
        self.process.stop()


def measure(api: Api, users: int, plan: Plan, label: str) -> dict[str, Any]:
    ids = [user_id(i) for i in range(users)]
    before = api.served_requests() or 0.0
    runs = []
    api_cpu: list[float] = []
    client_cpu: list[float] = []
    for r in range(plan.repeats):
        cpu0, own0 = api.cpu_seconds(), time.process_time()
        lp = loadtest.LoadPlan(
            target=api.target,
            concurrency=CONCURRENCY,
            requests=plan.requests,
            duration_s=120.0,
            k=K,
            seed=SEED + r,
        )
        result = loadtest.run(lp, ids)
        cpu1 = api.cpu_seconds()
        counted = result.requests + lp.warmup
        if cpu0 is not None and cpu1 is not None:
            api_cpu.append((cpu1 - cpu0) * 1000.0 / counted)
        client_cpu.append((time.process_time() - own0) * 1000.0 / counted)
        print(
            f"  {label} repeat {r + 1}/{plan.repeats}: {loadtest.render(result).splitlines()[1].strip()}, "
            f"p99 {result.latency.p99_ms:.2f} ms",
            flush=True,
        )
        runs.append(result)
    after = api.served_requests()
    errors: dict[str, int] = {}
    for run in runs:
        for code, count in run.errors.items():
            errors[code] = errors.get(code, 0) + count
    strategies: dict[str, int] = {}
    for run in runs:
        for name, count in run.strategies.items():
            strategies[name] = strategies.get(name, 0) + count
    return {
        "users_in_db": users,
        "requests_per_repeat": plan.requests,
        "concurrency": CONCURRENCY,
        "p50_ms": summary([r.latency.p50_ms for r in runs if r.latency.p50_ms is not None]),
        "p90_ms": summary([r.latency.p90_ms for r in runs if r.latency.p90_ms is not None]),
        "p99_ms": summary([r.latency.p99_ms for r in runs if r.latency.p99_ms is not None]),
        "qps": summary([r.requests_per_s for r in runs]),
        # CPU time per request (warm-up included) is what the neighbours' load does not change much: the
        # figure to compare optimisations by on a shared machine.
        "api_cpu_ms_per_request": summary(api_cpu),
        "loadgen_cpu_ms_per_request": summary(client_cpu),
        "errors": errors,
        "strategies": strategies,
        # Sent by the load generator (warm-up included) against answered OK as the API itself counted.
        "requests_sent": sum(r.requests for r in runs) + plan.repeats * loadtest.LoadPlan.warmup,
        "server_counted_ok": None if after is None else after - before,
        "api_startup_s": api.startup_s,
        "api_processes": api.settings.api.processes,
        **api.rss(),
    }


def run(quick: bool, index_dir: Path) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    base = load_base(index_dir)
    root = Path(tempfile.mkdtemp(prefix="llmrec-bench-serving-"))
    root.chmod(0o755)  # PostgreSQL may run as another user (when we are root) and must traverse this
    (pg_port,) = free_ports(1)
    server = PostgresServer(state_dir=root / "postgres", port=pg_port)
    out: dict[str, Any] = {
        "plan": dataclasses.asdict(plan),
        "concurrency": CONCURRENCY,
        "k": K,
        "users_sweep_items": USERS_SWEEP_ITEMS,
        "indexes": {},
        "users": {},
        "items": {},
        "user_inserts": [],
    }
    apis: list[Api] = []
    started = time.perf_counter()
    try:
        print("serving: starting PostgreSQL ...", flush=True)
        server.start()
        migrate(server.dsn)
        folders = {}
        for n in plan.item_sizes:
            folders[n], out["indexes"][str(n)] = index_folder(base, n)

        # Users sweep: one API process over the USERS_SWEEP_ITEMS catalogue, users grown in place.
        have = 0
        api: Api | None = None
        for users in plan.user_sizes:
            seconds = asyncio.run(add_users(server.dsn, base, have, users, plan.interactions))
            out["user_inserts"].append(
                {"from": have, "to": users, "seconds": seconds, "users_per_s": (users - have) / seconds}
            )
            have = users
            if api is None:
                api = Api(root, server.dsn, folders[USERS_SWEEP_ITEMS], f"{USERS_SWEEP_ITEMS}")
                apis.append(api)
            print(f"serving: {USERS_SWEEP_ITEMS} items, {users} users", flush=True)
            out["users"][str(users)] = measure(api, users, plan, f"users={users}")
        if api is not None:
            out["items"][str(USERS_SWEEP_ITEMS)] = out["users"][str(have)]
            api.close()
            apis.remove(api)

        # Items sweep: one API process per catalogue size, the same users.
        for n in plan.item_sizes:
            if n == USERS_SWEEP_ITEMS:
                continue
            print(f"serving: {n} items, {have} users", flush=True)
            api = Api(root, server.dsn, folders[n], str(n))
            apis.append(api)
            out["items"][str(n)] = measure(api, have, plan, f"items={n}")
            api.close()
            apis.remove(api)
        out["items"] = dict(sorted(out["items"].items(), key=lambda kv: int(kv[0])))

        # The same 100k point served by PROCESSES_COMPARED API processes sharing the port (api.processes),
        # against the single process measured above in this run (full mode: quick stays under 5 minutes).
        if not quick and USERS_SWEEP_ITEMS in folders:
            print(f"serving: {USERS_SWEEP_ITEMS} items, {have} users, {PROCESSES_COMPARED} API processes")
            api = Api(root, server.dsn, folders[USERS_SWEEP_ITEMS], "processes", processes=PROCESSES_COMPARED)
            apis.append(api)
            point = measure(api, have, plan, f"processes={PROCESSES_COMPARED}")
            single = out["items"][str(USERS_SWEEP_ITEMS)]
            point["qps_vs_one_process"] = point["qps"]["median"] / single["qps"]["median"]
            out["processes"] = {str(PROCESSES_COMPARED): point}
            api.close()
            apis.remove(api)
        out["growth"] = growth(out)
    except Exception as exc:  # reported with the reason, never as a made-up number
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        for api in apis:
            api.close()
        try:
            server.stop()
        except Exception as exc:
            out.setdefault("stop_errors", []).append(f"{type(exc).__name__}: {exc}")
        shutil.rmtree(root, ignore_errors=True)
    out["wall_s"] = time.perf_counter() - started
    return out


# -- growth -----------------------------------------------------------------------------------------------


def exponent(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y on log x: y ~ x^b. b near 1 is linear, below 1 sub-linear."""
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y and y > 0]
    if len(points) < 2:
        return None
    lx, ly = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    return float(np.polyfit(lx, ly, 1)[0])


def describe(b: float | None) -> str:
    if b is None:
        return "n/a"
    if abs(b) < 0.1:
        return "flat (|b| < 0.1)"
    if b < 0:
        return "decreasing"
    if b < 0.9:
        return "sub-linear"
    if b <= 1.1:
        return "linear"
    return "super-linear"


def growth(out: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for sweep in ("items", "users"):
        points = out[sweep]
        xs = [float(x) for x in points]
        for metric, key in (("p50_ms", "p50_ms"), ("p99_ms", "p99_ms"), ("qps", "qps")):
            ys = [points[x][key]["median"] for x in points]
            b = exponent(xs, ys)
            result[f"{sweep}_{metric}"] = {"exponent": b, "growth": describe(b)}
        rss = [points[x]["rss_mb"] for x in points]
        b = exponent(xs, rss)
        result[f"{sweep}_rss_mb"] = {"exponent": b, "growth": describe(b)}
        if len(xs) >= 2 and None not in rss:
            # Total RSS includes a fixed base (interpreter, gRPC, FAISS, ...): the slope is the per-unit cost.
            kb = (rss[-1] - rss[0]) * 1024 / (xs[-1] - xs[0])
            result[f"{sweep}_rss_kb_per_unit"] = {
                "exponent": None,
                "growth": f"{kb:.3f} KB per extra {sweep[:-1]}",
            }
    return result
