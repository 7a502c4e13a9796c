"""``llmrec serve`` with ``api.processes`` > 1: several API processes sharing one port.

One Python process answers from one thread (the GIL): at 100k items it spent about 1.9 ms of CPU per
``Recommend``, so it tops out near 530 requests/s whatever the machine. The API holds no state of its
own (profiles live in PostgreSQL, the index is read-only), so N identical processes can share a port:
each binds it with ``SO_REUSEPORT`` and the kernel spreads incoming connections over them, as a load
balancer would spread clients over replicas. A client's connection, and so all its calls, stays with one
process.

This parent starts the children (fresh interpreters, ``spawn``), forwards SIGTERM / SIGINT (graceful
stop) and SIGHUP (reload the index) to each, and exits when they have. If a child dies on its own, the
parent stops the others and exits with an error: a supervisor (systemd, Kubernetes) restarts the whole
group, rather than the group silently serving at reduced capacity. Each child serves its Prometheus
metrics on ``api.metrics_port + i``.

What a child runs is passed in (``grpc_api.server.serve_one``, from ``grpc_api.server.serve``): this
module knows how to run a group of processes, not how one serves.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Protocol

from llmrec.logs import configure_logging, get_logger
from llmrec.metrics_http import sample_value, scrape
from llmrec.settings import Settings

log = get_logger(__name__)

POLL_S = 0.2
# After the children's own grace period (drain + in-flight requests), how long to wait before SIGKILL.
KILL_AFTER_S = 15.0


class ServeOne(Protocol):
    """One API process serving until it is stopped (``grpc_api.server.serve_one``). A module-level
    function: ``spawn`` pickles it by name for the child."""

    def __call__(self, settings: Settings, *, reuse_port: bool) -> None: ...


def child_settings(settings: Settings, index: int) -> Settings:
    """The settings child ``index`` runs with: its own metrics port (0 stays off)."""
    api = settings.api
    metrics_port = api.metrics_port + index if api.metrics_port > 0 else api.metrics_port
    return settings.model_copy(update={"api": api.model_copy(update={"metrics_port": metrics_port})})


def _run_child(settings: Settings, serve_one: ServeOne) -> None:
    configure_logging(settings.log_level, settings.log_json)  # a spawned interpreter starts unconfigured
    serve_one(settings, reuse_port=True)


def serve_processes(settings: Settings, serve_one: ServeOne) -> int:
    """Run ``settings.api.processes`` processes of ``serve_one`` sharing the port until SIGTERM / SIGINT;
    returns the exit status."""
    count = settings.api.processes  # ApiSettings refuses processes > 1 with port 0
    context = multiprocessing.get_context("spawn")
    children: list[BaseProcess] = []
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    for index in range(count):
        child = context.Process(
            target=_run_child, args=(child_settings(settings, index), serve_one), name=f"llmrec-api-{index}"
        )
        child.start()
        children.append(child)
    log.info(
        "api processes started",
        processes=count,
        pids=[c.pid for c in children],
        port=settings.api.port,
    )

    status = 0
    while any(c.is_alive() for c in children):
        dead = [c for c in children if not c.is_alive()]
        if dead and not stopping:
            log.error(
                "api process exited; stopping the others",
                pids=[c.pid for c in dead],
                exit_codes=[c.exitcode for c in dead],
            )
            status = 1
            forward(signal.SIGTERM, None)
        if stopping:
            _join_or_kill(children, settings.api.grace_period_s + KILL_AFTER_S)
            break
        time.sleep(POLL_S)
    log.info("api processes stopped", exit_codes=[c.exitcode for c in children])
    return status


def _join_or_kill(children: list[BaseProcess], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
    for child in children:
        if child.is_alive():
            log.warning("api process did not stop in time; killing it", pid=child.pid)
            child.kill()
            child.join(5.0)


def wait_until_all_serving(host: str, metrics_port: int, processes: int, timeout_s: float = 120.0) -> None:
    """Block until every process of a group has loaded its index (its metrics show a non-empty index).

    A health check on the shared port reaches one process only; until the others have warmed up, a new
    connection may land on one that still answers UNAVAILABLE ("the server is starting; retry").
    """
    deadline = time.monotonic() + timeout_s
    pending = set(range(processes))
    while pending:
        for index in sorted(pending):
            try:
                items = sample_value(
                    scrape(metrics_port + index, host, timeout_s=2.0), "llmrec_api_index_items"
                )
            except OSError:
                items = None
            if items is not None and items > 0:
                pending.discard(index)
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"api processes {sorted(pending)} not serving after {timeout_s:.0f} s")
        if pending:
            time.sleep(0.2)
