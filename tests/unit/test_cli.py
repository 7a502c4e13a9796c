"""The command line's structure: ``llmrec --help`` lists every command without importing any, each command
loads from its module under its name, and default paths resolve against the configured root
(``LLMREC_ROOT``), not the working directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from cli import encoder_commands, encoder_report_command, model_commands
from cli.main import COMMANDS, cli
from jobs import train_ranker as train_ranker_job
from llmrec.settings import REPO_ROOT, Settings

PATH_VARIABLES = ("LLMREC_ROOT", "LLMREC_STATE_DIR", "LLMREC_ARTIFACTS_DIR", "LLMREC_REPORTS_DIR")


def test_every_command_loads_under_its_name_with_the_listed_summary() -> None:
    assert cli.list_commands(click.Context(cli)) == sorted(COMMANDS)
    for name, entry in COMMANDS.items():
        command = entry.load()
        assert command.name == name
        first_paragraph = (command.help or "").split("\n\n")[0]
        assert " ".join(first_paragraph.split()) == entry.summary, f"update the summary of {name}"


def test_help_imports_no_command_module_and_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "from cli.main import main\n"
        "sys.argv = ['llmrec', '--help']\n"
        "try:\n    main()\n"
        "except SystemExit:\n    pass\n"
        "heavy = ('torch', 'faiss', 'transformers', 'grpc', 'faust', 'deploy', 'jobs', 'research')\n"
        "loaded = [m for m in sys.modules if m.startswith('cli.') or m.split('.')[0] in heavy]\n"
        "sys.stderr.write(repr(sorted(loaded)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    )
    assert "train-ranker" in done.stdout and "encoder-report" in done.stdout
    assert done.stderr == repr(["cli.lazy", "cli.main"])


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """LLMREC_ROOT is ``tmp/root`` while the working directory is ``tmp/elsewhere``."""
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    for name in PATH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LLMREC_ROOT", str(root))
    monkeypatch.chdir(elsewhere)
    return root


def invoke(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output


def test_model_commands_default_to_the_reports_under_the_root(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: dict[str, Any] = {}

    def train(settings: Settings, tuned_path: Path | None = None, *, seed: int = 42) -> str:
        calls["train-ranker"] = tuned_path
        return "trained"

    def evaluate(settings: Settings, *args: Any) -> None:
        calls["eval"] = args[-2:]  # tuned, out

    monkeypatch.setattr(model_commands, "train_ranker_from_settings", train)
    monkeypatch.setattr(model_commands, "evaluate_baselines", evaluate)
    invoke(["train-ranker"])
    invoke(["eval"])
    assert calls["train-ranker"] == root / "reports" / "tuned_params.json"
    assert calls["eval"] == (root / "reports" / "tuned_params.json", root / "reports" / "eval.json")
    # A path given on the command line is taken as given, relative to the working directory.
    invoke(["eval", "--out", "mine.json"])
    assert calls["eval"] == (root / "reports" / "tuned_params.json", Path("mine.json"))


def test_encoder_commands_default_to_folders_under_the_root(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: dict[str, Any] = {}

    def report(run_dirs: list[Path], bench_json: Path, out: Path) -> Path:
        calls["encoder-report"] = (bench_json, out)
        return out / "encoder.md"

    def sentiment(data_dir: Path, out: Path, **kwargs: Any) -> dict[str, Any]:
        calls["train-sentiment"] = (out, kwargs["reports_dir"])
        return {"results": {}}

    monkeypatch.setattr(encoder_report_command, "write_report", report)
    monkeypatch.setattr(encoder_commands, "run_sentiment_training", sentiment)
    run = root / "run"
    run.mkdir()
    invoke(["encoder-report", str(run)])
    invoke(["train-sentiment"])
    assert calls["encoder-report"] == (root / "reports" / "encoder-bench.json", root / "reports")
    assert calls["train-sentiment"] == (root / "artifacts" / "sentiment", root / "reports")


def test_ranker_job_reads_the_tuned_parameters_under_the_root(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``llmrec demo`` trains through this with no path of its own."""
    (root / "reports").mkdir()
    tuned = {"budget": {}, "datasets": {"mal-completed": {"llmrec": {"params": {"d": 16}}}}}
    (root / "reports" / "tuned_params.json").write_text(json.dumps(tuned))
    seen: dict[str, Any] = {}

    def train(data_dir: Path, index_dir: Path, ranker_dir: Path, **kwargs: Any) -> str:
        seen.update(ranker_dir=ranker_dir, params=kwargs["params"])
        return "summary"

    monkeypatch.setattr(train_ranker_job, "train_ranker", train)
    trained = train_ranker_job.train_ranker_from_settings(Settings())
    assert seen == {"ranker_dir": root / "artifacts" / "ranker", "params": {"d": 16}}
    assert trained.tuned and trained.parameters == "tuned parameters"
