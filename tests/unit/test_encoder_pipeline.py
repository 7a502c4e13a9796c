"""``llmrec train-encoder --preset tiny`` end to end on the shipped sample with a tiny from-scratch RoBERTa,
then ``export-encoder`` and ``encoder-report``: the run folder, the exported version and the report's keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from encoder_triton.encoder import Encoder
from tests.tiny_encoder import copy_repository

REPORT_KEYS = {
    "perplexity_base",
    "perplexity_adapted",
    "retrieval_base",
    "retrieval_contrastive",
    "retrieval_measure",
    "sentiment_macro_f1",
    "vader_macro_f1",
    "sentiment_spearman",
    "serving_overhead_b32",
}


def test_train_export_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mp = monkeypatch
    mp.setenv("LLMREC_DATA_DIR", str(tmp_path / "no-data"))  # the shipped sample, as on a fresh clone
    repository = copy_repository(tmp_path / "repository")
    mp.setenv("LLMREC_TRITON__REPOSITORY", str(repository))
    runner = CliRunner()
    trained = runner.invoke(
        cli,
        [
            "train-encoder",
            "--preset",
            "tiny",
            "--base",
            "scratch-roberta",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--run-id",
            "t",
        ],
    )
    assert trained.exit_code == 0, trained.output
    run = tmp_path / "runs" / "t"
    for name in (
        "config.json",
        "metrics.json",
        "history.json",
        "mlm.json",
        "mlm_loss.png",
        "contrastive_loss.png",
        "perplexity.png",
        "retrieval.png",
    ):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["corpus"]["source"].endswith("sample_data")
    assert set(metrics["retrieval"]) == {"measure", "base", "adapted", "contrastive"}
    assert metrics["mlm"]["perplexity_base"] > 1.0 and metrics["sentiment"]["sizes"]["train"] <= 100

    exported = runner.invoke(cli, ["export-encoder", str(run)])
    assert exported.exit_code == 0, exported.output
    version = repository / "llmrec_encoder" / "2"
    assert Encoder.from_version_dir(version).encode(["Fine."]).embeddings.shape == (1, 32)

    reported = runner.invoke(
        cli,
        ["encoder-report", str(run), "--bench", str(tmp_path / "none.json"), "--out", str(tmp_path / "rep")],
    )
    assert reported.exit_code == 0, reported.output
    body = json.loads((tmp_path / "rep" / "encoder.json").read_text())
    assert set(body) >= REPORT_KEYS
    assert body["perplexity_adapted"] == metrics["mlm"]["perplexity_adapted"]
    assert body["serving_overhead_b32"] is None  # no bench file: reported as missing, never invented
    assert (tmp_path / "rep" / "encoder" / "mlm_loss.png").is_file()
