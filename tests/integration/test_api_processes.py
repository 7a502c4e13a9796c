"""``llmrec serve`` with ``api.processes=2``: both processes answer on one port, SIGTERM stops the group
cleanly, and a child that dies takes the group down with an error (for the supervisor to restart)."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable

import grpc
from api_process import ApiProcess, publish_sample_index

from deploy.process import free_port_run, free_ports
from grpc_api.metrics import handled_series
from grpc_api.processes import wait_until_all_serving
from llmrec.metrics_http import sample_value, scrape
from llmrec.settings import ApiSettings, Settings
from llmrec.store import migrate
from llmrec_client.v1 import recommender_pb2, recommender_pb2_grpc

OK_RECOMMENDS = handled_series("Recommend")


def start_group(settings_factory: Callable[..., Settings], postgres_dsn: str, name: str) -> ApiProcess:
    (port,) = free_ports(1)
    metrics_port = free_port_run(2)  # child i serves metrics on metrics_port + i
    settings = settings_factory(
        api=ApiSettings(
            host="127.0.0.1", port=port, metrics_port=metrics_port, grace_period_s=2.0, processes=2
        )
    )
    publish_sample_index(settings)
    migrate(postgres_dsn)
    api = ApiProcess(settings, name=name)
    api.start()
    # Health on the shared port answered from one process; wait for the other to load its index too.
    wait_until_all_serving("127.0.0.1", metrics_port, 2)
    return api


def child_pids(api: ApiProcess) -> list[int]:
    match = re.search(r"api processes started.*?pids\"?[=:] ?\[([\d, ]+)\]", api.log())
    assert match, api.log()[-2000:]
    return [int(p) for p in match.group(1).split(",")]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_processes_share_the_port_and_stop_together(
    settings_factory: Callable[..., Settings], postgres_dsn: str
) -> None:
    api = start_group(settings_factory, postgres_dsn, "api-group")
    try:
        pids = child_pids(api)
        assert len(pids) == 2
        # Separate channels are separate connections, which the kernel spreads over the two processes.
        for i in range(24):
            with grpc.insecure_channel(api.target) as channel:
                stub = recommender_pb2_grpc.RecommenderStub(channel)  # type: ignore[no-untyped-call]
                answer = stub.Recommend(
                    recommender_pb2.RecommendRequest(user_id=f"group-user-{i}", k=5), timeout=10.0
                )
                assert len(answer.items) == 5
        port = api.settings.api.metrics_port
        served = [sample_value(scrape(p), OK_RECOMMENDS) for p in (port, port + 1)]
        assert None not in served and sum(s or 0 for s in served) == 24 and min(s or 0 for s in served) > 0, (
            served
        )
    finally:
        code = api.stop()
    assert code == 0, api.log()[-4000:]
    assert not any(alive(pid) for pid in pids)


def test_a_child_that_dies_stops_the_group_with_an_error(
    settings_factory: Callable[..., Settings], postgres_dsn: str
) -> None:
    api = start_group(settings_factory, postgres_dsn, "api-group-crash")
    try:
        first, second = child_pids(api)
        os.kill(first, signal.SIGKILL)
        assert api.process is not None
        deadline = time.monotonic() + 30.0
        while api.process.exit_code() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert api.process.exit_code() == 1, api.log()[-4000:]
        assert "api process exited; stopping the others" in api.log()
        assert not alive(second)
    finally:
        api.stop()
