"""The project folders: all under one root (``LLMREC_ROOT``, default the checkout), whatever the working
directory, each still settable on its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmrec.settings import REPO_ROOT, Settings


@pytest.fixture(autouse=True)
def no_path_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LLMREC_ROOT", "LLMREC_STATE_DIR", "LLMREC_ARTIFACTS_DIR", "LLMREC_REPORTS_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_the_root_defaults_to_the_checkout() -> None:
    settings = Settings()
    assert settings.root == REPO_ROOT
    assert settings.state_dir == REPO_ROOT / ".llmrec"
    assert settings.artifacts_dir == REPO_ROOT / "artifacts"
    assert settings.reports_dir == REPO_ROOT / "reports"


def test_the_root_moves_every_project_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMREC_ROOT", str(tmp_path))
    settings = Settings()
    assert settings.state_dir == tmp_path / ".llmrec"
    assert settings.reports_dir == tmp_path / "reports"
    assert settings.ranker_dir == tmp_path / "artifacts" / "ranker"
    assert settings.index_dir == tmp_path / "artifacts" / "index"
    # One folder set on its own; the others stay under the root.
    monkeypatch.setenv("LLMREC_REPORTS_DIR", str(tmp_path / "elsewhere"))
    settings = Settings()
    assert settings.reports_dir == tmp_path / "elsewhere"
    assert settings.artifacts_dir == tmp_path / "artifacts"


def test_a_relative_root_is_fixed_when_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LLMREC_ROOT", "deployment")
    settings = Settings()
    monkeypatch.chdir(REPO_ROOT)
    assert settings.root == tmp_path / "deployment"
    assert settings.reports_dir == tmp_path / "deployment" / "reports"
