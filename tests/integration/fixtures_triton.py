"""A real Triton Inference Server with the llmrec encoder, started once per test session.

Loaded by ``tests/integration/conftest.py`` (every ``fixtures_*.py`` is). The server runs from the
nvidia-pytriton wheel's binary on free ports in a temporary folder; the first session on a machine also
builds ``.venv-triton`` (the server's Python, NumPy 1.x), which takes about a minute once.

A server that cannot start fails the tests that need it, in CI and outside it: never a skip.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deploy.process import free_ports
from deploy.triton import TritonServer
from llmrec.settings import TritonSettings


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A ready server (a real inference answered); ``.ready_after_s`` holds its start-to-ready time."""
    http_port, grpc_port, metrics_port = free_ports(3)
    server = TritonServer(
        repository=TritonSettings().repository,
        state_dir=tmp_path_factory.mktemp("triton"),
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
    )
    try:
        server.start()
    except Exception as exc:
        server.stop()
        pytest.fail(
            f"Triton could not be started: {exc}\nThe server comes from the nvidia-pytriton wheel and runs "
            "model.py in .venv-triton (built on first use with uv); run `make install`. Integration tests "
            "are never skipped.",
            pytrace=False,
        )
    yield server
    server.stop()
    assert not server.alive(), "tritonserver survived stop()"


@pytest.fixture(scope="session")
def triton_settings(triton_server: TritonServer) -> TritonSettings:
    """``TritonSettings`` pointing at the session's server: ``settings_factory(triton=triton_settings)``."""
    return TritonSettings(
        host=triton_server.host,
        http_port=triton_server.http_port,
        grpc_port=triton_server.grpc_port,
        metrics_port=triton_server.metrics_port,
        model_name=triton_server.model_name,
    )
