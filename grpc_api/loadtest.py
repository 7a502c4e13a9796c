"""A load generator for the gRPC API (``llmrec loadtest``; the serving benchmark uses it too).

``concurrency`` clients, each with its own channel (its own HTTP/2 connection, as separate clients behind a
load balancer would have), send ``Recommend`` back to back: as soon as an answer (or an error) arrives, the
client sends the next request for a user drawn at random from ``user_ids``. The run stops when
``requests`` have been sent or ``duration_s`` has passed, whichever comes first; requests in flight at
that moment still complete and are counted. ``warmup`` requests before the clock starts are not counted
(connections and server caches warm up).

Reported: requests, OK and errors by status code, the wall time from the first counted request to the last
answer, requests/s (all answers, and OK answers, over that time) and the latency of OK answers (p50, p90,
p99, mean, max, in ms; linear interpolation between order statistics, as ``numpy.percentile``).

Target, TLS and token options mean what they mean for ``llmrec_client.client.RecommenderClient``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from llmrec.store.postgres import PostgresStore
from llmrec_client.client import auth_metadata, channel_credentials
from llmrec_client.v1 import recommender_pb2, recommender_pb2_grpc

DEFAULT_TARGET = "127.0.0.1:50051"


@dataclass(frozen=True)
class LoadPlan:
    target: str = DEFAULT_TARGET
    concurrency: int = 8
    # Both bounds apply; the defaults keep an accidental run against a deployment short.
    requests: int = 1000
    duration_s: float = 30.0
    warmup: int = 16
    k: int = 10
    timeout_s: float = 5.0
    seed: int = 0
    token: str | None = None
    tls: bool = False
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.requests < 1:
            raise ValueError("requests must be at least 1")
        if not self.duration_s > 0:
            raise ValueError("duration_s must be positive")
        if self.warmup < 0:
            raise ValueError("warmup must be 0 or more")


@dataclass(frozen=True)
class LatencyStats:
    count: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    max_ms: float | None

    @classmethod
    def of(cls, latencies_ms: Sequence[float] | np.ndarray) -> LatencyStats:
        values = np.asarray(latencies_ms, dtype=np.float64)
        if values.size == 0:
            return cls(0, None, None, None, None, None)
        p50, p90, p99 = (float(v) for v in np.percentile(values, [50, 90, 99]))
        return cls(int(values.size), p50, p90, p99, float(values.mean()), float(values.max()))


@dataclass(frozen=True)
class LoadResult:
    target: str
    concurrency: int
    requests: int
    ok: int
    errors: dict[str, int]
    wall_s: float
    requests_per_s: float
    ok_per_s: float
    latency: LatencyStats
    stopped_by: str  # "count" or "time"
    users: int
    strategies: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def summarise(
    plan: LoadPlan,
    latencies_ms: Sequence[float],
    codes: Sequence[str],
    wall_s: float,
    stopped_by: str,
    users: int,
    strategies: Counter[str] | None = None,
) -> LoadResult:
    """The result of a run from the per-request records (``codes[i]`` is a status code name; the
    latencies are those of the OK answers)."""
    counts = Counter(codes)
    ok = counts.pop("OK", 0)
    total = ok + sum(counts.values())
    rate = total / wall_s if wall_s > 0 else 0.0
    return LoadResult(
        target=plan.target,
        concurrency=plan.concurrency,
        requests=total,
        ok=ok,
        errors=dict(sorted(counts.items())),
        wall_s=wall_s,
        requests_per_s=rate,
        ok_per_s=ok / wall_s if wall_s > 0 else 0.0,
        latency=LatencyStats.of(latencies_ms),
        stopped_by=stopped_by,
        users=users,
        strategies=dict(sorted((strategies or Counter()).items())),
    )


def _channel(plan: LoadPlan) -> grpc.aio.Channel:
    # A local subchannel pool: without it gRPC would share one connection among the clients.
    options = [("grpc.use_local_subchannel_pool", 1)]
    credentials = channel_credentials(plan.tls, plan.tls_ca_file, plan.tls_cert_file, plan.tls_key_file)
    if credentials is None:
        return grpc.aio.insecure_channel(plan.target, options=options)
    return grpc.aio.secure_channel(plan.target, credentials, options=options)


async def run_async(plan: LoadPlan, user_ids: Sequence[str]) -> LoadResult:
    if not user_ids:
        raise ValueError("no user ids to send requests for")
    rng = np.random.default_rng(plan.seed)
    metadata = auth_metadata(plan.token)
    channels = [_channel(plan) for _ in range(plan.concurrency)]
    latencies: list[float] = []
    codes: list[str] = []
    strategies: Counter[str] = Counter()
    budget = {"warmup": plan.warmup, "counted": plan.requests}
    deadline = 0.0

    def next_user() -> str:
        return user_ids[int(rng.integers(len(user_ids)))]

    async def call(stub: Any, user: str) -> tuple[str, float, str]:
        request = recommender_pb2.RecommendRequest(user_id=user, k=plan.k)
        started = time.perf_counter()
        try:
            response = await stub.Recommend(request, timeout=plan.timeout_s, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, (time.perf_counter() - started) * 1000.0, ""
        return "OK", (time.perf_counter() - started) * 1000.0, response.strategy

    async def client(stub: Any, counted: bool) -> None:
        key = "counted" if counted else "warmup"
        while budget[key] > 0 and (not counted or time.perf_counter() < deadline):
            budget[key] -= 1
            code, ms, strategy = await call(stub, next_user())
            if counted:
                codes.append(code)
                if code == "OK":
                    latencies.append(ms)
                    strategies[strategy] += 1

    try:
        stubs = [recommender_pb2_grpc.RecommenderStub(c) for c in channels]  # type: ignore[no-untyped-call]
        await asyncio.gather(*(client(s, counted=False) for s in stubs))
        started = time.perf_counter()
        deadline = started + plan.duration_s
        await asyncio.gather(*(client(s, counted=True) for s in stubs))
        wall = time.perf_counter() - started
    finally:
        await asyncio.gather(*(c.close() for c in channels))
    stopped_by = "count" if budget["counted"] <= 0 else "time"
    return summarise(plan, latencies, codes, wall, stopped_by, len(user_ids), strategies)


def run(plan: LoadPlan, user_ids: Sequence[str]) -> LoadResult:
    return asyncio.run(run_async(plan, user_ids))


# -- where the user ids come from -----------------------------------------------------------------------


def users_from_file(path: Path) -> list[str]:
    """One user id per line; blank lines and ``#`` comments skipped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]


def users_from_range(prefix: str, start: int, stop: int) -> list[str]:
    """``prefix + str(i)`` for ``start <= i < stop``."""
    if stop <= start:
        raise ValueError("the user range is empty")
    return [f"{prefix}{i}" for i in range(start, stop)]


def users_from_store(dsn: str, limit: int) -> list[str]:
    """Up to ``limit`` users that have a profile in the database (the ones ``Recommend`` personalises)."""
    return asyncio.run(_users_from_store(dsn, limit))


async def _users_from_store(dsn: str, limit: int) -> list[str]:
    async with PostgresStore(dsn, min_size=1, max_size=1, name="llmrec-loadtest") as store:
        return await store.users_with_profiles(limit)


# -- output ---------------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


def render(result: LoadResult) -> str:
    lat = result.latency
    errors = ", ".join(f"{code} {n}" for code, n in result.errors.items()) or "none"
    return "\n".join(
        [
            f"target {result.target}: {result.requests} requests from {result.concurrency} clients in "
            f"{result.wall_s:.2f} s (stopped by {result.stopped_by}), {result.users} distinct user ids",
            f"  throughput  {result.requests_per_s:.1f} req/s ({result.ok_per_s:.1f} OK/s)",
            f"  latency OK  p50 {_ms(lat.p50_ms)}  p90 {_ms(lat.p90_ms)}  p99 {_ms(lat.p99_ms)}  "
            f"mean {_ms(lat.mean_ms)}  max {_ms(lat.max_ms)}",
            f"  OK {result.ok}; errors: {errors}",
            "  strategies: " + (", ".join(f"{s} {n}" for s, n in result.strategies.items()) or "none"),
        ]
    )


def write_json(result: LoadResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
