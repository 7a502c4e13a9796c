"""The worker harness (``deploy.worker``) and the stack's components that start processes, with stand-ins for
the worker and Triton: no Kafka, PostgreSQL or tritonserver."""

from __future__ import annotations

import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from deploy import stack
from deploy.process import ProcessError, ReadinessError, pid_alive, spawn, start_ticks
from deploy.triton import TritonServer
from deploy.worker import READY_PATTERN, start_worker
from llmrec.lifecycle import WORKER_READY
from llmrec.settings import Settings

# A stand-in for the worker that logs its readiness through the worker's own function and logging setup
# (``stream.main``), then waits: what the harness sees is exactly what the real worker prints.
ANNOUNCING_WORKER = textwrap.dedent(
    """
    import signal, sys, time
    from llmrec.logs import configure_logging
    from llmrec.settings import load_settings
    from stream.main import announce_assignment

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_json)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    announce_assignment(settings.kafka.consumer_group, 3, first=True)
    time.sleep(120)
    """
)

SILENT_WORKER = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"


def _settings(state_dir: Path, *, log_json: bool = False) -> Settings:
    return Settings(state_dir=state_dir, artifacts_dir=state_dir / "artifacts", log_json=log_json)


@pytest.mark.parametrize("log_json", [False, True], ids=["console", "json"])
def test_the_harness_sees_the_readiness_line_the_worker_logs(tmp_path: Path, log_json: bool) -> None:
    settings = _settings(tmp_path, log_json=log_json)
    worker = start_worker(settings, "announcer", command=[sys.executable, "-c", ANNOUNCING_WORKER])
    try:
        assert worker.wait_ready(timeout_s=60.0) > 0
        assert worker.ready_at is not None and worker.ready_at > worker.spawned_at
        lines = [line for line in worker.log().splitlines() if READY_PATTERN.search(line)]
        assert len(lines) == 1 and WORKER_READY in lines[0] and "partitions" in lines[0], worker.log()
        worker.check_alive()
    finally:
        code = worker.stop(timeout_s=20.0)
    assert code == 0, worker.log()
    assert not pid_alive(worker.pid)
    with pytest.raises(ProcessError, match="exited with code 0"):
        worker.check_alive()


def test_a_worker_that_exits_before_ready_fails_with_its_log(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import sys; print('no index here'); sys.exit(3)"]
    worker = start_worker(_settings(tmp_path), "failing", command=command)
    with pytest.raises(ReadinessError, match="exited with code 3") as failure:
        worker.wait_ready(timeout_s=30.0)
    assert "no index here" in str(failure.value)
    assert worker.log_path == tmp_path / "failing.log"


def test_strict_stop_fails_when_sigterm_is_ignored(tmp_path: Path) -> None:
    worker = start_worker(
        _settings(tmp_path), "stubborn", command=[sys.executable, "-c", SILENT_WORKER], strict_stop=True
    )
    time.sleep(0.5)  # let it install its handler
    with pytest.raises(ProcessError, match="ignored SIGTERM"):
        worker.stop(timeout_s=0.5)
    assert worker.process.returncode == -signal.SIGKILL
    assert not pid_alive(worker.pid)


def test_kill_takes_a_running_worker_down(tmp_path: Path) -> None:
    worker = start_worker(_settings(tmp_path), "killed", command=[sys.executable, "-c", SILENT_WORKER])
    worker.kill()
    assert worker.process.returncode == -signal.SIGKILL
    worker.kill()  # a no-op once it has exited


def _component(name: str) -> stack.Component:
    return next(c for c in stack.COMPONENTS if c.name == name)


def test_stack_worker_component_waits_for_the_workers_readiness_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `llmrec worker` replaced by a script that logs the readiness line the way the worker does.
    script = tmp_path / "llmrec"
    script.write_text(f"#!{sys.executable}\n{ANNOUNCING_WORKER}")
    script.chmod(0o755)
    monkeypatch.setattr(stack, "llmrec_command", lambda: str(script))
    settings = _settings(tmp_path / "state")
    settings.state_dir.mkdir()
    started = _component("worker").start(settings)
    try:
        assert started.log == str(settings.state_dir / "logs" / "worker.log")
        assert started.start_ticks == start_ticks(started.pid) and pid_alive(started.pid)
        assert WORKER_READY in Path(started.log).read_text()
    finally:
        stack.stop_pid(started.pid, grace_s=10.0)
    assert not pid_alive(started.pid)


def test_stack_triton_component_starts_the_server_through_its_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The component calls ``TritonServer.from_settings(...).start()`` and records that server's process
    (it once looked up a ``deploy.triton.start_triton`` that does not exist)."""
    servers: list[TritonServer] = []

    def fake_start(self: TritonServer, timeout_s: float = 180.0) -> float:
        self.process = spawn("tritonserver", [sys.executable, "-c", SILENT_WORKER], log_path=self.log_path)
        servers.append(self)
        return 0.0

    monkeypatch.setattr(TritonServer, "start", fake_start)
    settings = _settings(tmp_path)
    started = _component("triton").start(settings)
    try:
        (server,) = servers
        process = server.process
        assert process is not None
        assert started == stack.Started(process.pid, process.started_ticks, str(server.log_path))
        assert server.log_path == settings.state_dir / "triton" / "tritonserver.log"
    finally:
        stack.stop_pid(started.pid, sig=signal.SIGKILL)
