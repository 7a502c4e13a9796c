"""Library log lines that read like failures stay off the console: faiss.loader's INFO lines about the
CPU-specific builds it tries (eleven of them on every command that imports faiss)."""

from __future__ import annotations

import logging
import subprocess
import sys

from llmrec.logs import configure_logging
from llmrec.settings import REPO_ROOT


def test_faiss_loader_is_quiet_unless_debug_is_asked_for() -> None:
    loader = logging.getLogger("faiss.loader")
    try:
        configure_logging("INFO")
        assert not loader.isEnabledFor(logging.INFO) and loader.isEnabledFor(logging.WARNING)
        configure_logging("DEBUG")
        assert loader.isEnabledFor(logging.INFO)
        configure_logging("ERROR")
        assert not loader.isEnabledFor(logging.WARNING)
    finally:
        configure_logging("INFO")


def test_importing_faiss_prints_nothing_at_info() -> None:
    code = "from llmrec.logs import configure_logging\nconfigure_logging('INFO')\nimport faiss\n"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True, timeout=120
    )
    assert "faiss.loader" not in done.stderr + done.stdout
