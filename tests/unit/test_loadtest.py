"""The load generator: its statistics, its bounds and user sources, and a short run against the in-process
server over an in-memory store (the integration test runs it against PostgreSQL)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from grpc_api import loadtest
from grpc_api.loadtest import LatencyStats, LoadPlan, summarise
from grpc_api.metrics import SERVICE_NAME, code_name
from grpc_api.server import ApiServer
from grpc_api.service import Snapshot
from llmrec.catalogue import Item
from llmrec.settings import ApiSettings, Settings
from llmrec.store.fake import FakeStore
from ranker.retrieval import ItemIndex
from tests.synthetic import Interaction, add_user, genre_embeddings

T0 = datetime(2024, 5, 1, tzinfo=UTC)
ITEMS = [
    Item(item_id=i, title=f"Show {i}", genres=(("Action",), ("Drama",))[i % 2], members=i)
    for i in range(1, 41)
]
VECTORS = genre_embeddings([it.genres for it in ITEMS], dim=16, seed=5)


def test_latency_percentiles_interpolate_between_order_statistics() -> None:
    stats = LatencyStats.of([float(v) for v in range(1, 101)])
    assert stats.count == 100
    assert stats.p50_ms == pytest.approx(50.5)
    assert stats.p90_ms == pytest.approx(90.1)
    assert stats.p99_ms == pytest.approx(99.01)
    assert stats.mean_ms == pytest.approx(50.5)
    assert stats.max_ms == 100.0


def test_latency_of_nothing_is_none() -> None:
    assert LatencyStats.of([]) == LatencyStats(0, None, None, None, None, None)


def test_summary_counts_errors_by_code_and_rates_over_wall_time() -> None:
    plan = LoadPlan(concurrency=2, requests=6)
    codes = ["OK", "OK", "UNAVAILABLE", "OK", "DEADLINE_EXCEEDED", "UNAVAILABLE"]
    result = summarise(plan, [2.0, 4.0, 6.0], codes, 2.0, "count", 3, Counter(personalized=3))
    assert (result.requests, result.ok) == (6, 3)
    assert result.errors == {"DEADLINE_EXCEEDED": 1, "UNAVAILABLE": 2}
    assert result.requests_per_s == 3.0 and result.ok_per_s == 1.5
    assert result.latency.p50_ms == 4.0 and result.latency.count == 3
    assert result.to_json()["latency"]["max_ms"] == 6.0
    assert "UNAVAILABLE 2" in loadtest.render(result)


@pytest.mark.parametrize("bad", [{"concurrency": 0}, {"requests": 0}, {"duration_s": 0.0}, {"warmup": -1}])
def test_plan_must_be_bounded(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LoadPlan(**bad)  # type: ignore[arg-type]


def test_user_sources(tmp_path: Path) -> None:
    assert loadtest.users_from_range("u", 3, 6) == ["u3", "u4", "u5"]
    with pytest.raises(ValueError):
        loadtest.users_from_range("u", 5, 5)
    path = tmp_path / "users.txt"
    path.write_text("# users\nalice\n\n bob \n")
    assert loadtest.users_from_file(path) == ["alice", "bob"]


@pytest.fixture
async def target() -> AsyncIterator[str]:
    store = FakeStore()
    vectors = {it.key: VECTORS[row] for row, it in enumerate(ITEMS)}  # the ledger and the index hold keys
    fan = [Interaction(ITEMS[i - 1].key, 0.4, T0 + timedelta(hours=i), rating=9.0) for i in (2, 4)]
    add_user(store, "fan", fan, vectors)

    async def factory(_: Settings) -> FakeStore:
        return store

    def loader(_: Settings) -> Snapshot:
        return Snapshot(ItemIndex.build([it.key for it in ITEMS], VECTORS), ITEMS)

    settings = Settings(api=ApiSettings(port=0, metrics_port=0, grace_period_s=0.5))
    server = ApiServer(settings, store_factory=factory, snapshot_loader=loader)
    port = await server.start()
    await server.wait_ready(10)
    assert server.service.snapshot.servable.all()  # type: ignore[union-attr]  # every row has an answer id
    yield f"127.0.0.1:{port}"
    await server.stop(0.5)


def _served(code: str) -> float:
    labels = {"grpc_type": "unary", "grpc_service": SERVICE_NAME, "grpc_method": "Recommend"}
    value = REGISTRY.get_sample_value(
        "grpc_server_handled_total", {**labels, "grpc_code": code_name(grpc.StatusCode[code])}
    )
    return value or 0.0


async def test_run_stops_at_the_request_count_and_counts_codes(target: str) -> None:
    ok_before, bad_before = _served("OK"), _served("INVALID_ARGUMENT")
    plan = LoadPlan(target=target, concurrency=3, requests=40, duration_s=30, warmup=2, k=5, seed=1)
    result = await loadtest.run_async(plan, ["fan", "newcomer", "not a valid id!"])
    assert result.requests == 40 and result.stopped_by == "count"
    assert result.ok + result.errors.get("INVALID_ARGUMENT", 0) == 40
    assert set(result.errors) <= {"INVALID_ARGUMENT"} and result.errors
    assert set(result.strategies) == {"personalized", "cold_start"}
    assert result.latency.count == result.ok
    assert result.latency.p50_ms is not None and result.latency.p99_ms is not None
    assert 0 < result.latency.p50_ms <= result.latency.p99_ms
    # The server's own histogram saw every request, warm-up included.
    served = _served("OK") - ok_before + _served("INVALID_ARGUMENT") - bad_before
    assert served == 40 + 2


async def test_run_stops_at_the_time_bound(target: str) -> None:
    plan = LoadPlan(target=target, concurrency=2, requests=10**9, duration_s=0.3, warmup=0)
    result = await loadtest.run_async(plan, ["fan"])
    assert result.stopped_by == "time"
    assert 0 < result.requests < 10**9 and result.wall_s < 5.0


async def test_unreachable_target_is_an_error_count_not_a_crash() -> None:
    plan = LoadPlan(target="127.0.0.1:1", concurrency=2, requests=4, warmup=0, timeout_s=0.5)
    result = await loadtest.run_async(plan, ["fan"])
    assert result.ok == 0 and result.errors == {"UNAVAILABLE": 4}
