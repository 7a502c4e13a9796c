"""A tiny trained-looking encoder run (random RoBERTa, hidden 32, 2 layers, its own BPE tokenizer, a random
sentiment head) in the layout ``llmrec export-encoder`` reads: no weights needed, built in a second."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from encoder_triton.sentiment_head import SentimentHead, save_head
from encoder_triton.training.backbones import encoder_of, scratch_roberta, train_bpe_tokenizer
from encoder_triton.training.presets import TINY
from llmrec.settings import TritonSettings
from tests.sample_reviews import review_texts


def make_tiny_run(run_dir: Path, seed: int = 7) -> Path:
    torch.manual_seed(seed)
    texts = review_texts(60)
    tokenizer = train_bpe_tokenizer(texts, TINY.scratch.vocab_size, 128)
    model = scratch_roberta(tokenizer, TINY.scratch, 128)
    final = run_dir / "checkpoints" / "final"
    encoder_of(model).save_pretrained(final)  # type: ignore[operator]
    tokenizer.save_pretrained(final)
    head = SentimentHead(TINY.scratch.hidden_size, hidden=8)
    save_head(head.eval(), run_dir / "sentiment", {"note": "random tiny head for tests"})
    return run_dir


def copy_repository(target: Path) -> Path:
    """The project's repository (config.pbtxt + version 1's model.py) without any exported version."""
    source = TritonSettings().repository / "llmrec_encoder"
    model = target / "llmrec_encoder"
    (model / "1").mkdir(parents=True)
    shutil.copy2(source / "config.pbtxt", model / "config.pbtxt")
    shutil.copy2(source / "1" / "model.py", model / "1" / "model.py")
    return target
