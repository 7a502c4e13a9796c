"""Start, watch and stop the stack's server processes without Docker.

Every process runs in its own session (``start_new_session``), so it leads its own process group and a
stop can take its children with it. Liveness comes from ``/proc/<pid>/status``, not ``kill -0``: in these
sandboxes an exited process can linger as a zombie when nobody reaps it, and a zombie must count as dead.
A stop is recorded with the process's start time too, so a PID reused by an unrelated process is never
signalled.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llmrec.logs import get_logger

log = get_logger(__name__)

# Popen objects of the processes this interpreter spawned: reaping through them keeps their exit codes.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class ProcessError(RuntimeError):
    """A managed process failed to start, to become ready or to stop."""


class ReadinessError(ProcessError):
    """A process exited or did not become ready in time; the message ends with its log tail."""


# --------------------------------------------------------------------------------------------------
# /proc inspection


def process_state(pid: int) -> str | None:
    """The one-letter state from ``/proc/<pid>/status`` ("R", "S", "Z", ...), or None without such a PID."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    for line in text.splitlines():
        if line.startswith("State:"):
            parts = line.split()
            return parts[1] if len(parts) > 1 else None
    return None


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (which may hold spaces and parentheses)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text[text.rfind(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot: with the PID it names one process for good."""
    fields = _stat_fields(pid)
    # Field 22 of stat; after dropping pid and comm it is at index 19.
    return int(fields[19]) if fields and len(fields) > 19 else None


def _reap(pid: int) -> None:
    """Collect the exit status of our own dead child so that it does not stay a zombie."""
    popen = _CHILDREN.get(pid)
    if popen is not None:
        if popen.poll() is not None:
            _CHILDREN.pop(pid, None)
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def pid_alive(pid: int, expected_start: int | None = None) -> bool:
    """True while the process runs; a zombie, a missing PID or a PID now owned by another process is dead."""
    if pid <= 0:
        return False
    _reap(pid)
    state = process_state(pid)
    if state is None or state in ("Z", "X", "x"):
        return False
    return expected_start is None or start_ticks(pid) == expected_start


def group_members(pgid: int) -> list[int]:
    """Live processes (zombies excluded) whose process group is ``pgid``."""
    members: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        # After pid and comm: state, ppid, pgrp.
        if fields and len(fields) > 2 and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return sorted(members)


# --------------------------------------------------------------------------------------------------
# ports


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the kernel's pick); a small race remains until it is bound."""
    return free_ports(1, host)[0]


def free_port_run(count: int, host: str = "127.0.0.1", attempts: int = 50) -> int:
    """The first of ``count`` consecutive free ports (for ``api.metrics_port`` of several API processes,
    which use metrics_port + i)."""
    for _ in range(attempts):
        (base,) = free_ports(1, host)
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no run of {count} consecutive free ports found")


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free ports: the sockets stay open until all are picked so none repeats."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def port_free(host: str, port: int) -> bool:
    """True when a server could bind host:port now.

    SO_REUSEADDR as servers set it: connections of a just-stopped server linger in TIME_WAIT and must not
    make its own port look taken for a minute.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


# --------------------------------------------------------------------------------------------------
# logs


def log_tail(path: Path, lines: int = 40, max_bytes: int = 64 * 1024) -> str:
    """The last lines of a log file, for error messages; empty when the file does not exist."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])


class _LogScanner:
    """Reads a growing log file from where it last stopped and searches each new line for a pattern."""

    def __init__(self, path: Path, pattern: re.Pattern[str]) -> None:
        self.path = path
        self.pattern = pattern
        self._offset = 0
        self._partial = ""

    def found(self) -> bool:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return False
        if not chunk:
            return False
        self._offset += len(chunk)
        text = self._partial + chunk.decode("utf-8", errors="replace")
        lines = text.split("\n")
        # The last piece may be half a line still being written: keep it for the next read.
        self._partial = lines.pop()
        return any(self.pattern.search(line) for line in [*lines, self._partial])


def rotate_log(path: Path) -> None:
    """Keep the previous run's log as ``<name>.1`` so a new run starts with an empty file."""
    if path.exists():
        path.replace(path.with_name(path.name + ".1"))


# --------------------------------------------------------------------------------------------------
# waiting and stopping


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll ``predicate`` until it holds or the time is up; returns whether it held."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def stop_pid(
    pid: int,
    *,
    sig: int = signal.SIGTERM,
    grace_s: float = 10.0,
    expected_start: int | None = None,
    kill_group: bool = True,
) -> bool:
    """Stop a process: ``sig`` first, SIGKILL after ``grace_s``, then SIGKILL whatever is left of its group.

    Only a process that leads its own group (one started with ``start_new_session``) has its group killed,
    so this can never take down the caller's own group. Returns True when the process had been running.
    """
    if not pid_alive(pid, expected_start):
        if kill_group:
            _kill_group_leftovers(pid)
        return False
    try:
        leads_group = os.getpgid(pid) == pid and pid != os.getpgrp()
    except ProcessLookupError:
        leads_group = False
    group = kill_group and leads_group
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    if not wait_until(lambda: not pid_alive(pid), grace_s, 0.05):
        log.warning("process_kill", pid=pid, grace_s=grace_s, reason="did not exit after signal")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        if not wait_until(lambda: not pid_alive(pid), 10.0, 0.05):
            raise ProcessError(f"process {pid} survived SIGKILL (state {process_state(pid)})")
    if group:
        _kill_group_leftovers(pid)
    return True


def _kill_group_leftovers(pgid: int) -> None:
    """SIGKILL processes still in the group of a stopped leader (children it did not take down)."""
    if pgid == os.getpgrp():
        return
    members = group_members(pgid)
    if not members:
        return
    log.warning("process_group_leftovers", pgid=pgid, pids=members)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    if not wait_until(lambda: not [p for p in group_members(pgid) if pid_alive(p)], 10.0, 0.05):
        raise ProcessError(f"process group {pgid} survived SIGKILL: {group_members(pgid)}")


# --------------------------------------------------------------------------------------------------
# the managed process


@dataclass
class ManagedProcess:
    """One spawned server: its PID, its start time (to recognise it later) and the file its output goes to."""

    name: str
    pid: int
    log_path: Path
    started_ticks: int | None = None
    stop_signal: int = signal.SIGTERM
    grace_s: float = 10.0
    argv: tuple[str, ...] = field(default_factory=tuple)
    # Set when this interpreter spawned it: the exit status is read from here.
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def alive(self) -> bool:
        return pid_alive(self.pid, self.started_ticks)

    def exit_code(self) -> int | None:
        """The exit status when this interpreter spawned the process and it has ended, else None."""
        return self.popen.poll() if self.popen is not None else None

    def tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def wait_ready(
        self,
        *,
        log_pattern: str | re.Pattern[str] | None = None,
        probe: Callable[[], bool] | None = None,
        timeout_s: float = 60.0,
        interval_s: float = 0.2,
        watch: Path | None = None,
    ) -> float:
        """Block until the log shows ``log_pattern`` and then ``probe()`` holds (each only when given).

        ``watch`` names another log file to search (Kafka writes its own log through log4j). A probe that
        raises counts as not ready. Raises ReadinessError, with the log tail, when the process exits or the
        time runs out. Returns the seconds waited.
        """
        began = time.monotonic()
        watched = watch or self.log_path
        scanner = None
        if log_pattern is not None:
            pattern = re.compile(log_pattern) if isinstance(log_pattern, str) else log_pattern
            scanner = _LogScanner(watched, pattern)
        seen_line = scanner is None
        last_error: BaseException | None = None
        deadline = began + timeout_s
        while True:
            if not seen_line and scanner is not None:
                seen_line = scanner.found()
            if seen_line:
                if probe is None:
                    return time.monotonic() - began
                try:
                    if probe():
                        return time.monotonic() - began
                except Exception as exc:  # a probe against a half-started server fails in many ways
                    last_error = exc
            if not self.alive():
                raise ReadinessError(
                    self._failure(f"exited with code {self.exit_code()} before ready", watched)
                )
            if time.monotonic() >= deadline:
                waiting_for = "log line" if not seen_line else "probe"
                detail = f" (last probe error: {last_error!r})" if last_error else ""
                raise ReadinessError(
                    self._failure(
                        f"not ready after {timeout_s:.0f}s, waiting for {waiting_for}{detail}", watched
                    )
                )
            time.sleep(interval_s)

    def _failure(self, what: str, watched: Path) -> str:
        parts = [f"{self.name} (pid {self.pid}) {what}.", f"--- {self.log_path} (tail) ---", self.tail()]
        if watched != self.log_path:
            parts += [f"--- {watched} (tail) ---", log_tail(watched)]
        return "\n".join(parts)

    def stop(self, grace_s: float | None = None) -> bool:
        """Stop the process and its group; True when it had been running."""
        stopped = stop_pid(
            self.pid,
            sig=self.stop_signal,
            grace_s=self.grace_s if grace_s is None else grace_s,
            expected_start=self.started_ticks,
        )
        if self.popen is not None:
            # A process's main thread shows as a zombie as soon as it exits, while its other threads (gRPC's,
            # say) may still be finishing: wait for the whole process, so that ``exit_code`` has the status.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=10.0)
        _reap(self.pid)
        return stopped


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    user: str | int | None = None,
    group: str | int | None = None,
    stop_signal: int = signal.SIGTERM,
    grace_s: float = 10.0,
) -> ManagedProcess:
    """Start ``argv`` in a new session with stdout and stderr appended to a fresh ``log_path``.

    ``user``/``group`` drop privileges (PostgreSQL refuses to run as root). ``env`` replaces the whole
    environment when given.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    rotate_log(log_path)
    with log_path.open("wb") as log_file:
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,
                user=user,
                group=group,
                # Without this a process started as root would keep root's supplementary groups.
                extra_groups=[] if user is not None else None,
            )
        except OSError as exc:
            raise ProcessError(f"cannot start {name}: {argv[0]}: {exc}") from exc
    _CHILDREN[popen.pid] = popen
    process = ManagedProcess(
        name=name,
        pid=popen.pid,
        log_path=log_path,
        started_ticks=start_ticks(popen.pid),
        stop_signal=stop_signal,
        grace_s=grace_s,
        argv=tuple(argv),
        popen=popen,
    )
    log.info("process_started", name=name, pid=popen.pid, log=str(log_path))
    return process
