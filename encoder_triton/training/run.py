"""The training pipeline of ``llmrec train-encoder`` and its run folder.

``artifacts/encoder-runs/<run-id>/`` holds:

* ``config.json``: the resolved ``TrainConfig`` (preset, base, seed, every hyperparameter);
* ``metrics.json``: corpus sizes, perplexity base / adapted, retrieval for base / adapted / contrastive,
  the sentiment results of Stage 3, timings; ``history.json``: every loss value;
* ``mlm_loss.png``, ``contrastive_loss.png``, ``perplexity.png``, ``retrieval.png``;
* ``checkpoints/adapted/`` (after MLM) and ``checkpoints/final/`` (after contrastive): Hugging Face
  encoder + tokenizer folders that ``Encoder.from_pretrained`` loads;
* ``sentiment/``: the Stage 3 head (``head.json`` + ``head.pt``) on the final encoder, and its report.

Seeds: Python, NumPy and torch are seeded from ``config.seed``, every shuffle and mask uses a seeded
generator, and torch runs with deterministic algorithms and a fixed thread count, so a rerun with the same
configuration on the same machine reproduces the numbers.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoder_triton.encoder import Encoder, EncoderOptions
from encoder_triton.sentiment.train import train_sentiment
from encoder_triton.training import plots
from encoder_triton.training.backbones import encoder_of, load_base
from encoder_triton.training.contrastive import train_contrastive
from encoder_triton.training.corpus import build_corpus
from encoder_triton.training.mlm import train_mlm
from encoder_triton.training.presets import TrainConfig
from encoder_triton.training.retrieval import MEASURE, evaluate_retrieval
from llmrec.logs import get_logger

log = get_logger(__name__)

DEFAULT_RUNS_DIR = Path("artifacts/encoder-runs")
INFERENCE_MAX_LENGTH = 128  # what Triton serves (config.pbtxt parameter max_length)


def seed_everything(seed: int, threads: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def default_run_id(config: TrainConfig) -> str:
    base = Path(config.base).name if "/" in config.base else config.base
    return f"{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{config.preset}-{base}-s{config.seed}"


def save_checkpoint(model: torch.nn.Module, tokenizer: Any, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)  # type: ignore[operator]
    tokenizer.save_pretrained(folder)
    return folder


def _serving_encoder(backbone: torch.nn.Module, tokenizer: Any, config: TrainConfig) -> Encoder:
    options = EncoderOptions(
        max_length=INFERENCE_MAX_LENGTH, torch_threads=config.torch_threads, batch_size=32
    )
    return Encoder(backbone, tokenizer, options)


def train_encoder(
    config: TrainConfig,
    data_dir: Path | None,
    runs_dir: Path = DEFAULT_RUNS_DIR,
    run_id: str | None = None,
    progress: bool = True,
    bootstrap_reps: int = 1000,
) -> Path:
    """Run the three stages; returns the run folder."""
    started = time.perf_counter()
    seed_everything(config.seed, config.torch_threads)
    run_dir = runs_dir / (run_id or default_run_id(config))
    run_dir.mkdir(parents=True, exist_ok=False)
    (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    corpus = build_corpus(
        data_dir,
        seed=config.seed,
        mlm_texts=config.mlm_texts,
        heldout_texts=config.heldout_texts,
        contrastive_texts=config.contrastive_texts,
        retrieval_queries=config.retrieval_queries,
        retrieval_candidates=config.retrieval_candidates,
    )
    log.info("encoder_corpus", run=run_dir.name, source=corpus.source, **corpus.sizes())
    model, tokenizer, description = load_base(
        config.base, corpus.mlm_train, config.scratch, config.mlm.max_length, config.seed
    )
    backbone = encoder_of(model)
    retrieval: dict[str, Any] = {"measure": MEASURE}
    retrieval["base"] = evaluate_retrieval(
        _serving_encoder(backbone, tokenizer, config), corpus, progress, "base"
    )

    # Stage 1: masked language modelling.
    mlm = train_mlm(model, tokenizer, corpus.mlm_train, corpus.mlm_heldout, config.mlm, config.seed, progress)
    # Stage 1's figures on disk at once: a later stage that fails does not lose them.
    (run_dir / "mlm.json").write_text(json.dumps({k: v for k, v in mlm.items() if k != "history"}, indent=2))
    retrieval["adapted"] = evaluate_retrieval(
        _serving_encoder(backbone, tokenizer, config), corpus, progress, "adapted"
    )
    save_checkpoint(backbone, tokenizer, run_dir / "checkpoints" / "adapted")

    # Stage 2: contrastive fine-tuning, on the served embedding (mean pooling, head + tail window).
    options = EncoderOptions(max_length=config.contrastive.max_length, torch_threads=config.torch_threads)
    contrastive = train_contrastive(
        Encoder(backbone, tokenizer, options), corpus, config.contrastive, config.seed, progress
    )
    final = _serving_encoder(backbone, tokenizer, config)
    retrieval["contrastive"] = evaluate_retrieval(final, corpus, progress, "contrastive")
    final_dir = save_checkpoint(backbone, tokenizer, run_dir / "checkpoints" / "final")

    # Stage 3: the sentiment head on the final encoder, on the sentiment module's own title split.
    sentiment = train_sentiment(
        data_dir,
        out_dir=run_dir / "sentiment",
        seed=config.seed,
        progress=progress,
        reports_dir=run_dir / "sentiment",
        bootstrap_reps=bootstrap_reps,
        encoder=Encoder.from_pretrained(final_dir, options=final.options),
        encoder_name=f"{description}, {run_dir.name} final",
        max_train_reviews=config.sentiment_train_reviews,
    )

    history = {
        "mlm": mlm.pop("history"),
        "contrastive": {k: contrastive.pop(k) for k in ("loss", "unsupervised_loss")},
    }
    metrics = {
        "run_id": run_dir.name,
        "preset": config.preset,
        "base": config.base,
        "base_description": description,
        "seed": config.seed,
        "parameters": sum(p.numel() for p in backbone.parameters()),
        "corpus": {"source": corpus.source, **corpus.sizes()},
        "mlm": mlm,
        "contrastive": contrastive,
        "retrieval": retrieval,
        "sentiment": {
            "test": sentiment["results"]["head"]["test"],
            "vader_test": sentiment["results"]["vader"]["test"],
            "anchor_test": sentiment["results"]["anchor"]["test"],
            "lead_over_vader": sentiment["test_lead_of_head"]["head_minus_vader"],
            "sizes": sentiment["data"]["sizes"],
        },
        "torch_threads": config.torch_threads,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (run_dir / "history.json").write_text(json.dumps(history) + "\n")
    title = f"{description} ({config.preset})"
    plots.mlm_loss_plot(history["mlm"], run_dir / "mlm_loss.png", f"MLM: {title}")
    plots.contrastive_loss_plot(
        history["contrastive"], run_dir / "contrastive_loss.png", f"Contrastive: {title}"
    )
    plots.bar_plot(
        {"base": mlm["perplexity_base"], "adapted": mlm["perplexity_adapted"]},
        run_dir / "perplexity.png",
        "Held-out perplexity (lower is better)",
        "perplexity",
    )
    plots.bar_plot(
        {k: retrieval[k]["recall@10"] for k in ("base", "adapted", "contrastive")},
        run_dir / "retrieval.png",
        "Held-out review -> own anime, recall@10",
        "recall@10",
    )
    log.info("encoder_run_done", run=run_dir.name, seconds=metrics["seconds"])
    return run_dir


def with_overrides(config: TrainConfig, **changes: Any) -> TrainConfig:
    return replace(config, **{k: v for k, v in changes.items() if v is not None})
