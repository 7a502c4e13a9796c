"""The client distribution (clients/python) on its own: installed with pip into a fresh virtual
environment, it answers from a real ``llmrec serve`` (PostgreSQL of this session, the published sample
index), its example script runs, and none of the server's heavy packages is importable there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from api_process import ApiProcess, publish_sample_index

from llmrec.settings import Settings
from llmrec.store import migrate

pytestmark = pytest.mark.integration

CLIENT_DIR = Path(__file__).resolve().parents[2] / "clients" / "python"
EXAMPLE = CLIENT_DIR / "examples" / "recommend.py"
# What the client may bring: its two dependencies and theirs (grpcio needs typing-extensions).
ALLOWED_DISTRIBUTIONS = {"llmrec-client", "grpcio", "protobuf", "typing-extensions", "typing_extensions"}
USER = "client-package-user"
HEAVY = ("torch", "faiss", "faust", "numpy", "transformers", "grpc_health", "llmrec")

# Runs inside the fresh environment: every RPC of the typed client against the real server.
PROBE = """
import importlib.metadata, importlib.util, json, sys
from llmrec_client import InvalidRequest, NotFound, RecommenderClient

target = sys.argv[1]
with RecommenderClient(target, timeout_s=10.0) as client:
    client.wait_until_serving(timeout_s=60.0)
    health = client.health()
    answer = client.recommend("client-package-user", k=4)
    similar = client.similar_items(answer.items[0].item_id, k=3)
    try:
        client.user_profile("client-package-user")
        profile = "found"
    except NotFound:
        profile = "not found"
    try:
        client.recommend("client-package-user", k=100_000)
        refused = None
    except InvalidRequest as exc:
        refused = type(exc).__name__
print(json.dumps({
    "strategy": answer.strategy,
    "items": [item.item_id for item in answer.items],
    "similar": [item.item_id for item in similar.items],
    "profile": profile,
    "refused": refused,
    "health": health,
    "importable": {name: importlib.util.find_spec(name) is not None for name in sys.argv[2:]},
    "distributions": sorted({d.metadata["Name"].lower() for d in importlib.metadata.distributions()}),
}))
"""


def _clean_env() -> dict[str, str]:
    """This process's environment without what would point the child at the repository or .venv."""
    return {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}


@pytest.fixture(scope="module")
def client_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with ``pip install clients/python`` (a copy: pip builds in the source tree)."""
    root = tmp_path_factory.mktemp("client-package")
    source = root / "llmrec-client"
    shutil.copytree(
        CLIENT_DIR, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "dist")
    )
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=120)
    python = root / "venv" / "bin" / "python"
    # pip's cache (the default, ~/.cache/pip) makes a rerun take seconds.
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
        check=True,
        timeout=300,
        cwd=root,
        env=_clean_env(),
    )
    return python


def test_the_installed_client_answers_from_the_real_api_without_server_packages(
    client_python: Path, settings_factory: Callable[..., Settings], postgres_dsn: str
) -> None:
    settings = settings_factory()
    catalogue = publish_sample_index(settings)
    migrate(postgres_dsn)
    api = ApiProcess(settings, name="api-client-package")
    api.start()
    try:
        probe = subprocess.run(
            [str(client_python), "-c", PROBE, api.target, *HEAVY],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=client_python.parent,
            env=_clean_env(),
        )
        assert probe.returncode == 0, probe.stderr[-4000:]
        example = subprocess.run(
            [str(client_python), str(EXAMPLE), "--target", api.target, "--user", USER, "-k", "3"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=client_python.parent,
            env=_clean_env(),
        )
    finally:
        api.stop()

    seen = json.loads(probe.stdout)
    known = {item.external_id for item in catalogue}
    assert seen["health"] == "SERVING"
    assert seen["strategy"] == "cold_start"
    assert len(seen["items"]) == 4 and set(seen["items"]) <= known
    assert len(seen["similar"]) == 3 and set(seen["similar"]) <= known
    assert seen["profile"] == "not found"
    assert seen["refused"] == "InvalidRequest"
    assert seen["importable"] == dict.fromkeys(HEAVY, False), seen["importable"]
    assert set(seen["distributions"]) - {"pip", "setuptools"} <= ALLOWED_DISTRIBUTIONS, seen["distributions"]

    assert example.returncode == 0, example.stderr[-4000:]
    assert f"{USER}: cold_start answer" in example.stdout, example.stdout
    assert example.stdout.count("\n") >= 5, example.stdout  # the header, 3 items, the similar line, ...
