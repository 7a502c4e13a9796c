"""``llmrec up`` / ``down`` / ``status``: the whole stack as local processes, in dependency order.

Each component is one registry entry: how to start it (blocking until it is ready), how to tell that
something already answers at its address, how to show its endpoint, and a step to run once it is up
(topics for Kafka, migrations for PostgreSQL). ``up`` starts only what does not answer yet, so an external
Kafka or PostgreSQL named in the settings is used as it is and never stopped. Every process ``up`` starts
is recorded in ``<state_dir>/stack.json`` with its PID and start time; ``down`` stops exactly those, in
reverse order, each with its process group, so nothing is left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.table import Table

from deploy.env import settings_env
from deploy.kafka import STOP_GRACE_S as KAFKA_GRACE_S
from deploy.kafka import broker_for_settings, kafka_answers, split_host_port
from deploy.postgres import STOP_GRACE_S as POSTGRES_GRACE_S
from deploy.postgres import STOP_SIGNAL as POSTGRES_SIGNAL
from deploy.postgres import PostgresServer, dsn_answers, parse_dsn
from deploy.process import ManagedProcess, ProcessError, pid_alive, spawn, stop_pid
from deploy.triton import TritonServer
from deploy.worker import start_worker
from jobs.build_index import build_index_from_settings
from llmrec.artifacts import INDEX_FORMAT, index_exists, index_format
from llmrec.events.topics import client_config, ensure_system_topics
from llmrec.logs import get_logger
from llmrec.settings import Settings
from llmrec.store import migrate

log = get_logger(__name__)

STATE_FILE = "stack.json"


class StackError(RuntimeError):
    """A component could not be started or stopped; the message names it."""


@dataclass(frozen=True)
class Started:
    """What ``up`` records about a process it started."""

    pid: int
    start_ticks: int | None
    log: str | None


@dataclass(frozen=True)
class Component:
    name: str
    start: Callable[[Settings], Started]
    endpoint: Callable[[Settings], str]
    # True when something answers at the component's address (ours or somebody else's).
    probe: Callable[[Settings], bool] | None = None
    # Runs after the component is up, whether started now or found running: must be idempotent.
    after: Callable[[Settings], None] | None = None
    stop_signal: int = signal.SIGTERM
    grace_s: float = 15.0


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    state: str  # running | external | unhealthy | dead | stopped | failed
    endpoint: str
    pid: int | None = None
    log: str | None = None
    detail: str = ""


def _started(process: ManagedProcess | None, log_path: Path) -> Started:
    if process is None:  # never: start() returns only once the process it spawned is ready
        raise StackError("the server reported ready without a process")
    return Started(process.pid, process.started_ticks, str(log_path))


# --------------------------------------------------------------------------------------------------
# Kafka


def _kafka_start(settings: Settings) -> Started:
    host, _ = split_host_port(settings.kafka.bootstrap.split(",")[0])
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise StackError(f"Kafka at {settings.kafka.bootstrap} does not answer and is not on this machine")
    broker = broker_for_settings(settings)
    broker.start()
    return _started(broker.process, broker.server_log)


def _kafka_probe(settings: Settings) -> bool:
    return kafka_answers(client_config(settings.kafka))


def _kafka_topics(settings: Settings) -> None:
    ensure_system_topics(settings.kafka)


# --------------------------------------------------------------------------------------------------
# PostgreSQL


def _dsn(settings: Settings) -> str:
    return settings.postgres.conninfo()


def _postgres_start(settings: Settings) -> Started:
    parts = parse_dsn(_dsn(settings))
    if not parts.is_local:
        raise StackError(
            f"PostgreSQL at {parts.host}:{parts.port} does not answer and is not on this machine"
        )
    server = PostgresServer.for_dsn(_dsn(settings), settings.state_dir / "postgres")
    server.start()
    return _started(server.process, server.log_path)


def _postgres_endpoint(settings: Settings) -> str:
    parts = parse_dsn(_dsn(settings))
    return f"postgresql://{parts.user}:***@{parts.host}:{parts.port}/{parts.dbname}"


def _migrate(settings: Settings) -> None:
    migrate(_dsn(settings))


# --------------------------------------------------------------------------------------------------
# Triton (deploy/triton.py starts the server and waits until it is ready)


def _triton_start(settings: Settings) -> Started:
    server = TritonServer.from_settings(settings)
    server.start()
    return _started(server.process, server.log_path)


def _triton_probe(settings: Settings) -> bool:
    """Ready means one real inference answers (a crashed backend stub leaves the HTTP health "ready")."""
    return TritonServer.from_settings(settings).ready(timeout_s=5.0)


def _ensure_index(settings: Settings) -> None:
    """Build the item index on first start (minutes on 2 cores for the full catalogue), reuse it after."""
    if index_exists(settings.index_dir):
        if index_format(settings.index_dir) == INDEX_FORMAT:
            return
        log.info("index_outdated_rebuilding", index_dir=str(settings.index_dir))
    else:
        log.info("index_missing_building", index_dir=str(settings.index_dir))
    build_index_from_settings(settings, progress=True)


# --------------------------------------------------------------------------------------------------
# worker and API: the project's own CLI in child processes


def llmrec_command() -> str:
    """The ``llmrec`` entry point of the interpreter's environment (``<venv>/bin/llmrec``)."""
    beside = Path(sys.executable).parent / "llmrec"
    if beside.exists():
        return str(beside)
    found = shutil.which("llmrec")
    if found is None:
        raise StackError("the `llmrec` command is not installed; run `make install`")
    return found


def _log_path(settings: Settings, name: str) -> Path:
    return settings.state_dir / "logs" / f"{name}.log"


def _worker_start(settings: Settings) -> Started:
    # The child loads its settings from the environment: deploy.worker hands it exactly ours.
    worker = start_worker(
        settings,
        "worker",
        command=[llmrec_command(), "worker"],
        log_path=_log_path(settings, "worker"),
        cwd=settings.state_dir,
        grace_s=20.0,
    )
    try:
        worker.wait_ready(timeout_s=180.0, interval_s=0.2)
    except ProcessError:
        worker.stop()
        raise
    return _started(worker.managed, worker.log_path)


def grpc_serving(target: str, timeout_s: float = 2.0) -> bool:
    """True when the gRPC health service at ``target`` reports SERVING for the whole server."""
    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
            )
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def _metrics_endpoint(host: str, port: int, processes: int = 1) -> str | None:
    """``metrics http://host:port/metrics``; with several processes, process i serves on port + i."""
    if port <= 0:
        return None
    if processes > 1:
        return f"metrics http://{host}:{port}..{port + processes - 1}/metrics"
    return f"metrics http://{host}:{port}/metrics"


def _api_endpoint(settings: Settings) -> str:
    api = settings.api
    metrics = _metrics_endpoint(api.host, api.metrics_port, api.processes)
    http = f", http {api.http_url}" if api.http_enabled else ""  # the HTTP/JSON API (grpc_api/http_api.py)
    return f"grpc {api.target}{http}" + (f", {metrics}" if metrics else "")


def _api_start(settings: Settings) -> Started:
    process = spawn(
        "api",
        [llmrec_command(), "serve"],
        log_path=_log_path(settings, "api"),
        # The child loads its settings from the environment: hand it exactly ours.
        env=settings_env(settings),
        cwd=settings.state_dir,
        grace_s=20.0,
    )
    try:
        process.wait_ready(probe=lambda: grpc_serving(settings.api.target), timeout_s=180.0, interval_s=0.5)
    except ProcessError:
        process.stop()
        raise
    return _started(process, process.log_path)


# --------------------------------------------------------------------------------------------------
# the registry, in start order

COMPONENTS: tuple[Component, ...] = (
    Component(
        "kafka",
        start=_kafka_start,
        endpoint=lambda s: s.kafka.bootstrap,
        probe=_kafka_probe,
        after=_kafka_topics,
        grace_s=KAFKA_GRACE_S,
    ),
    Component(
        "postgres",
        start=_postgres_start,
        endpoint=_postgres_endpoint,
        probe=lambda s: dsn_answers(_dsn(s)),
        # The schema must exist before the worker consumes (else UndefinedTable on the first batch).
        after=_migrate,
        stop_signal=POSTGRES_SIGNAL,
        grace_s=POSTGRES_GRACE_S,
    ),
    Component(
        "triton",
        start=_triton_start,
        endpoint=lambda s: f"grpc {s.triton.grpc_url}, http {s.triton.host}:{s.triton.http_port}",
        probe=_triton_probe,
        # The worker and the API load the item index, which is built through Triton.
        after=_ensure_index,
        # Triton drains in-flight requests on SIGTERM (2 to 6 s).
        grace_s=30.0,
    ),
    Component(
        "worker",
        start=_worker_start,
        endpoint=lambda s: _metrics_endpoint("127.0.0.1", s.worker.metrics_port) or "metrics off",
        grace_s=30.0,
    ),
    Component(
        "api",
        start=_api_start,
        endpoint=_api_endpoint,
        probe=lambda s: grpc_serving(s.api.target),
        grace_s=20.0,
    ),
)
COMPONENT_NAMES = tuple(c.name for c in COMPONENTS)


# --------------------------------------------------------------------------------------------------
# the state file


def state_path(settings: Settings) -> Path:
    return settings.state_dir / STATE_FILE


def _load(settings: Settings) -> dict[str, dict[str, Any]]:
    path = state_path(settings)
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    components = data.get("components", {})
    assert isinstance(components, dict)
    return components


def _save(settings: Settings, components: dict[str, dict[str, Any]]) -> None:
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"version": 1, "components": components}, indent=2) + "\n")
    # Atomic: a crash mid-write must not lose the PIDs `down` needs.
    os.replace(tmp, path)


def _record_alive(record: dict[str, Any]) -> bool:
    return bool(record.get("managed")) and pid_alive(int(record["pid"]), record.get("start_ticks"))


def _select(only: Sequence[str] | None) -> list[Component]:
    if only is None:
        return list(COMPONENTS)
    unknown = set(only) - set(COMPONENT_NAMES)
    if unknown:
        raise StackError(f"unknown components {sorted(unknown)}; known: {', '.join(COMPONENT_NAMES)}")
    return [c for c in COMPONENTS if c.name in only]


# --------------------------------------------------------------------------------------------------
# up / down / status


def up(settings: Settings, only: Sequence[str] | None = None, quiet: bool = False) -> list[ComponentStatus]:
    """Start, in order, each selected component that does not answer yet; returns one status per component.

    ``only`` limits the run to some components (``("kafka", "postgres")`` for the services alone). A failure
    stops the run with StackError; what was started before it stays up and recorded, for ``down``.
    """
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    records = _load(settings)
    statuses: list[ComponentStatus] = []
    for component in _select(only):
        endpoint = component.endpoint(settings)
        record = records.get(component.name)
        try:
            if record is not None and _record_alive(record):
                state = "running"
            elif component.probe is not None and component.probe(settings):
                # Somebody else's server answers at this address: use it, never stop it.
                records[component.name] = {"managed": False, "endpoint": endpoint}
                state = "external"
            else:
                began = time.monotonic()
                started = component.start(settings)
                records[component.name] = {
                    "managed": True,
                    **asdict(started),
                    "endpoint": endpoint,
                    "stop_signal": int(component.stop_signal),
                    "grace_s": component.grace_s,
                    "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                }
                log.info(
                    "component_started",
                    name=component.name,
                    pid=started.pid,
                    seconds=round(time.monotonic() - began, 2),
                )
                state = "running"
            _save(settings, records)
            if component.after is not None:
                component.after(settings)
        except Exception as exc:
            _save(settings, records)
            statuses.append(
                ComponentStatus(component.name, "failed", endpoint, detail=str(exc).splitlines()[0])
            )
            if not quiet:
                _print(statuses, "llmrec up (failed)")
            raise StackError(
                f"{component.name} did not come up: {exc}\n(what started before it is still running; "
                "`llmrec down` stops it)"
            ) from exc
        current = records[component.name]
        statuses.append(
            ComponentStatus(component.name, state, endpoint, current.get("pid"), current.get("log"))
        )
    if not quiet:
        _print(statuses, "llmrec up")
    return statuses


def down(settings: Settings, quiet: bool = False) -> list[str]:
    """Stop every process ``up`` recorded, in reverse start order; returns the names that were running."""
    records = _load(settings)
    stopped: list[str] = []
    errors: list[str] = []
    for name in reversed(list(records)):
        record = records[name]
        if record.get("managed"):
            try:
                if stop_pid(
                    int(record["pid"]),
                    sig=int(record.get("stop_signal", signal.SIGTERM)),
                    grace_s=float(record.get("grace_s", 15.0)),
                    expected_start=record.get("start_ticks"),
                ):
                    stopped.append(name)
                    log.info("component_stopped", name=name, pid=record["pid"])
            except ProcessError as exc:
                errors.append(f"{name}: {exc}")
                continue
        del records[name]
        _save(settings, records)
    if not quiet:
        Console().print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    if errors:
        raise StackError("could not stop: " + "; ".join(errors))
    return stopped


def status(settings: Settings, quiet: bool = False) -> list[ComponentStatus]:
    """Each component's state: running (ours), external, unhealthy, dead (recorded but gone) or stopped."""
    records = _load(settings)
    statuses: list[ComponentStatus] = []
    for component in COMPONENTS:
        record = records.get(component.name, {})
        endpoint = component.endpoint(settings)
        answers = component.probe(settings) if component.probe is not None else None
        if record.get("managed"):
            alive = _record_alive(record)
            state = "dead" if not alive else "unhealthy" if answers is False else "running"
        else:
            state = "external" if answers else "stopped"
        statuses.append(
            ComponentStatus(component.name, state, endpoint, record.get("pid"), record.get("log"))
        )
    if not quiet:
        _print(statuses, "llmrec status")
    return statuses


UNBOUNDED_COLUMNS = 10_000


def status_table(statuses: Sequence[ComponentStatus], title: str) -> Table:
    """Every cell in full: in a narrow terminal long endpoints and log paths fold onto more lines rather
    than being cut with an ellipsis."""
    table = Table(title=title)
    for column in ("component", "state", "endpoint", "pid", "log"):
        # The short columns keep their width; the others share what is left.
        table.add_column(column, overflow="fold", no_wrap=column in ("component", "pid"))
    for item in statuses:
        detail = f" ({item.detail})" if item.detail else ""
        table.add_row(item.name, item.state + detail, item.endpoint, str(item.pid or ""), item.log or "")
    return table


def _print(statuses: list[ComponentStatus], title: str, console: Console | None = None) -> None:
    console = console or Console()
    table = status_table(statuses, title)
    if not console.is_terminal:
        # Into a pipe or a file there is no screen to fit (rich assumes 80 columns): whole lines, so that
        # grep, a log or a copied endpoint gets every character on one line.
        unbounded = console.options.update_width(UNBOUNDED_COLUMNS)
        console.width = max(console.width, console.measure(table, options=unbounded).maximum)
    console.print(table)
