"""deploy.process with tiny Python child processes: readiness, stop escalation, groups, zombies, ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from deploy.process import (
    ReadinessError,
    free_port,
    free_ports,
    group_members,
    log_tail,
    pid_alive,
    port_free,
    port_open,
    process_state,
    spawn,
    start_ticks,
    stop_pid,
    wait_until,
)


def python(code: str) -> list[str]:
    return [sys.executable, "-u", "-c", textwrap.dedent(code)]


SLEEPER = python(
    """
    import time
    print("sleeper ready", flush=True)
    time.sleep(600)
    """
)


def test_spawn_wait_for_log_line_and_stop(tmp_path: Path) -> None:
    process = spawn("sleeper", SLEEPER, log_path=tmp_path / "sleeper.log")
    try:
        waited = process.wait_ready(log_pattern=r"sleeper ready", timeout_s=20)
        assert waited < 20
        assert process.alive()
        assert process_state(process.pid) in {"R", "S", "D"}
        # Its own session: it leads its own process group.
        assert os.getpgid(process.pid) == process.pid
    finally:
        assert process.stop(grace_s=5) is True
    assert not process.alive()
    assert process_state(process.pid) is None  # reaped, not a zombie
    assert process.exit_code() is None or process.exit_code() == -signal.SIGTERM


def test_probe_is_checked_after_the_log_line(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    process = spawn("sleeper", SLEEPER, log_path=tmp_path / "p.log")
    calls: list[float] = []

    def probe() -> bool:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise ConnectionError("not yet")  # a probe that raises counts as not ready
        if len(calls) == 3:
            flag.write_text("x")
        return flag.exists()

    try:
        process.wait_ready(log_pattern="sleeper ready", probe=probe, timeout_s=20, interval_s=0.01)
        assert len(calls) == 3
    finally:
        process.stop(grace_s=5)


def test_probe_only_readiness(tmp_path: Path) -> None:
    port = free_port()
    server = spawn(
        "listener",
        python(
            f"""
            import socket, time
            time.sleep(0.3)
            s = socket.socket(); s.bind(("127.0.0.1", {port})); s.listen()
            time.sleep(600)
            """
        ),
        log_path=tmp_path / "l.log",
    )
    try:
        assert not port_free("127.0.0.1", port) or True  # may or may not be bound yet
        server.wait_ready(probe=lambda: port_open("127.0.0.1", port), timeout_s=20)
        assert port_open("127.0.0.1", port)
        assert not port_free("127.0.0.1", port)
    finally:
        server.stop(grace_s=5)
    assert wait_until(lambda: port_free("127.0.0.1", port), 5)


def test_timeout_error_names_the_wait_and_carries_the_log_tail(tmp_path: Path) -> None:
    process = spawn(
        "quiet",
        python(
            """
            import time
            for i in range(50):
                print(f"line {i}", flush=True)
            time.sleep(600)
            """
        ),
        log_path=tmp_path / "q.log",
    )
    try:
        with pytest.raises(ReadinessError) as info:
            process.wait_ready(log_pattern="never printed", timeout_s=1.0)
    finally:
        process.stop(grace_s=5)
    message = str(info.value)
    assert "quiet" in message and "not ready after 1s" in message and "log line" in message
    assert "line 49" in message and "line 0\n" not in message  # the tail, not the whole log


def test_early_exit_fails_fast_with_exit_code(tmp_path: Path) -> None:
    process = spawn(
        "crasher",
        python(
            """
            import sys
            print("config error: no such file", flush=True)
            sys.exit(3)
            """
        ),
        log_path=tmp_path / "c.log",
    )
    began = time.monotonic()
    with pytest.raises(ReadinessError) as info:
        process.wait_ready(log_pattern="ready", timeout_s=30)
    assert time.monotonic() - began < 10
    assert "exited with code 3" in str(info.value)
    assert "config error: no such file" in str(info.value)


def test_sigterm_ignored_gets_sigkill_after_grace(tmp_path: Path) -> None:
    process = spawn(
        "stubborn",
        python(
            """
            import signal, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print("ready", flush=True)
            time.sleep(600)
            """
        ),
        log_path=tmp_path / "s.log",
    )
    process.wait_ready(log_pattern="ready", timeout_s=20)
    began = time.monotonic()
    assert process.stop(grace_s=0.5)
    elapsed = time.monotonic() - began
    assert 0.4 < elapsed < 8
    assert not process.alive()
    assert process.exit_code() == -signal.SIGKILL


def test_stop_takes_the_whole_group_with_it(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    process = spawn(
        "parent",
        python(
            f"""
            import subprocess, sys, time, signal
            # A grandchild that ignores SIGTERM: only the group kill can end it.
            child = subprocess.Popen([sys.executable, "-c",
                "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
            open({str(pid_file)!r}, "w").write(str(child.pid))
            print("ready", flush=True)
            time.sleep(600)
            """
        ),
        log_path=tmp_path / "g.log",
    )
    process.wait_ready(log_pattern="ready", timeout_s=20)
    grandchild = int(pid_file.read_text())
    assert pid_alive(grandchild)
    assert set(group_members(process.pid)) >= {process.pid, grandchild}
    process.stop(grace_s=5)
    assert wait_until(lambda: not pid_alive(grandchild), 5)
    assert group_members(process.pid) == []


def test_zombie_counts_as_dead(tmp_path: Path) -> None:
    # A child that exits and is not reaped stays a zombie: kill -0 would call it alive.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    assert wait_until(lambda: process_state(child.pid) == "Z", 10)
    os.kill(child.pid, 0)  # the zombie still "exists" for signals
    assert not pid_alive(child.pid)
    # pid_alive reaped it (it is our child), so it is gone from /proc.
    assert process_state(child.pid) is None
    child.returncode = 0  # tell Popen it is finished so its destructor does not wait on it


def test_stop_pid_refuses_a_reused_pid(tmp_path: Path) -> None:
    process = spawn("sleeper", SLEEPER, log_path=tmp_path / "r.log")
    try:
        process.wait_ready(log_pattern="sleeper ready", timeout_s=20)
        ticks = start_ticks(process.pid)
        assert ticks is not None
        # A record whose start time does not match names another process: leave this one alone.
        assert stop_pid(process.pid, expected_start=ticks + 1, grace_s=1, kill_group=False) is False
        assert process.alive()
    finally:
        process.stop(grace_s=5)


def test_stop_pid_of_a_dead_process_is_a_no_op() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert stop_pid(child.pid, grace_s=1) is False


def test_stop_never_kills_the_callers_group() -> None:
    assert group_members(os.getpgrp())  # sanity: we are in it
    # A process in our own group: stop_pid may signal it but must not killpg our group.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)",
        ]
    )
    time.sleep(0.3)
    assert stop_pid(child.pid, grace_s=0.3)
    child.wait(5)
    assert pid_alive(os.getpid())


def test_log_is_rotated_on_respawn(tmp_path: Path) -> None:
    log_path = tmp_path / "x.log"
    first = spawn("one", python('print("first run")'), log_path=log_path)
    assert wait_until(lambda: not first.alive(), 10)
    second = spawn("two", python('print("second run")'), log_path=log_path)
    assert wait_until(lambda: not second.alive(), 10)
    assert "second run" in log_path.read_text() and "first run" not in log_path.read_text()
    assert "first run" in (tmp_path / "x.log.1").read_text()


def test_log_tail_of_missing_and_long_files(tmp_path: Path) -> None:
    assert log_tail(tmp_path / "missing.log") == ""
    path = tmp_path / "long.log"
    path.write_text("".join(f"row {i}\n" for i in range(1000)))
    assert log_tail(path, lines=3) == "row 997\nrow 998\nrow 999"


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5
    for port in ports:
        assert port_free("127.0.0.1", port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[0]))
        sock.listen()
        assert not port_free("127.0.0.1", ports[0])
        assert port_open("127.0.0.1", ports[0])


def test_spawn_of_a_missing_binary_raises(tmp_path: Path) -> None:
    from deploy.process import ProcessError

    with pytest.raises(ProcessError, match="cannot start"):
        spawn("ghost", [str(tmp_path / "no-such-binary")], log_path=tmp_path / "ghost.log")
