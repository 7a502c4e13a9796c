"""The stream worker as a child process, as ``llmrec up``, the benchmarks and the integration tests run it.

``start_worker(settings)`` runs ``python -m stream`` (``llmrec up`` runs ``llmrec worker`` instead) in a
session of its own, with exactly these settings in its environment (``deploy.env``) and its output in a
log file. ``WorkerProcess.wait_ready`` blocks until the log shows the worker's readiness line
(``llmrec.lifecycle.WORKER_READY``: its consumer has joined the group and holds partitions); ``stop`` sends
SIGTERM, on which the worker finishes its batches, commits and exits, and SIGKILLs the process group when
it does not exit in time. deploy only runs the worker; it never imports ``stream``.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy.env import settings_env
from deploy.process import ManagedProcess, ProcessError, spawn, stop_pid
from llmrec.lifecycle import WORKER_READY
from llmrec.settings import REPO_ROOT, Settings

# What ``wait_ready`` looks for in the worker's log (console and JSON logs both hold the text as is).
READY_PATTERN = re.compile(re.escape(WORKER_READY))
READY_TIMEOUT_S = 120.0
# On SIGTERM the worker finishes the batches in flight and commits; a backlog of big batches takes seconds.
STOP_GRACE_S = 60.0


def worker_command() -> list[str]:
    """``python -m stream`` with this interpreter."""
    return [sys.executable, "-m", "stream"]


@dataclass
class WorkerProcess:
    """A worker started by ``start_worker``. Times are ``time.perf_counter()`` readings."""

    managed: ManagedProcess
    spawned_at: float
    ready_at: float | None = None
    # When set, ``stop`` raises if the worker ignored SIGTERM and had to be killed (tests want to know).
    strict_stop: bool = False

    @property
    def process(self) -> subprocess.Popen[bytes]:
        popen = self.managed.popen
        if popen is None:  # never: start_worker spawns it from this interpreter
            raise ProcessError(f"worker {self.managed.name} was not spawned by this process")
        return popen

    @property
    def pid(self) -> int:
        return self.managed.pid

    @property
    def log_path(self) -> Path:
        return self.managed.log_path

    def log(self) -> str:
        """The whole log so far."""
        return self.log_path.read_text(errors="replace")

    def check_alive(self) -> None:
        """Raise ProcessError, with the log's tail, when the worker has exited."""
        code = self.process.poll()
        if code is not None:
            raise ProcessError(
                f"worker {self.managed.name} (pid {self.pid}) exited with code {code}:\n{self.managed.tail()}"
            )

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S, interval_s: float = 0.02) -> float:
        """Block until the log shows the readiness line; returns the seconds from the spawn.

        Raises ``ReadinessError`` (a ProcessError), with the log's tail, when the worker exits first or the
        line does not come within ``timeout_s``.
        """
        self.managed.wait_ready(log_pattern=READY_PATTERN, timeout_s=timeout_s, interval_s=interval_s)
        self.ready_at = time.perf_counter()
        return self.ready_at - self.spawned_at

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM, then SIGKILL for the whole process group after ``timeout_s`` (default: the grace period
        given to ``start_worker``); returns the exit code (``-9`` when it had to be killed)."""
        was_running = self.process.poll() is None
        self.managed.stop(timeout_s)
        code = self.process.poll()
        if self.strict_stop and was_running and code == -signal.SIGKILL:
            grace = self.managed.grace_s if timeout_s is None else timeout_s
            raise ProcessError(
                f"worker {self.managed.name} ignored SIGTERM for {grace:.0f}s:\n{self.managed.tail(80)}"
            )
        return code

    def kill(self) -> None:
        """SIGKILL the worker and whatever is left of its process group (a no-op once it has exited)."""
        stop_pid(self.pid, sig=signal.SIGKILL, expected_start=self.managed.started_ticks)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10.0)


def start_worker(
    settings: Settings,
    name: str = "worker",
    *,
    command: Sequence[str] | None = None,
    source: Path | None = None,
    log_path: Path | None = None,
    cwd: Path | None = None,
    grace_s: float = STOP_GRACE_S,
    strict_stop: bool = False,
) -> WorkerProcess:
    """Spawn the worker with exactly ``settings`` in its environment; does not wait (``wait_ready`` does).

    ``command`` defaults to ``python -m stream``; ``source`` runs the worker code of another source tree
    (an earlier commit, for a same-run baseline) by putting it first on ``PYTHONPATH``. The log goes to
    ``log_path`` (default ``<state_dir>/<name>.log``; a previous one is kept as ``.1``).
    """
    env = settings_env(settings)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    spawned_at = time.perf_counter()
    managed = spawn(
        name,
        list(command) if command is not None else worker_command(),
        log_path=log_path or settings.state_dir / f"{name}.log",
        cwd=cwd or source or REPO_ROOT,
        env=env,
        grace_s=grace_s,
    )
    return WorkerProcess(managed, spawned_at, strict_stop=strict_stop)


@contextlib.contextmanager
def running_worker(
    settings: Settings,
    name: str = "worker",
    *,
    timeout_s: float = READY_TIMEOUT_S,
    strict_stop: bool = False,
) -> Iterator[WorkerProcess]:
    """``python -m stream`` with these settings, from its readiness line until the block ends; a worker
    still running then is killed (stop it inside the block to see it exit cleanly)."""
    worker = start_worker(settings, name, strict_stop=strict_stop)
    try:
        worker.wait_ready(timeout_s)
        yield worker
    finally:
        worker.kill()
