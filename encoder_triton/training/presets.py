"""Hyperparameters of a training run, with two named presets.

``paper`` is the paper's Table 1 (the documented defaults): MLM 10 epochs, batch 32, lr 2e-5, max length 512,
warm-up 10,000 steps, weight decay 0.01; contrastive 20 epochs, batch 128, lr 5e-5, max length 256, warm-up
1,000, weight decay 0.1. It is meant for a GPU and the full corpus.

``cpu-small`` is what runs on a 2-core machine in well under an hour even when the cores are shared: a few
thousand texts, 64-token training windows (inference and every evaluation stay at the served 128), tens of
steps. Its learning rates are higher than the paper's because it takes far fewer steps; it demonstrates the
pipeline and measures the direction of each stage's effect, not the paper's end point.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

MINILM = "minilm"  # the offline all-MiniLM-L6-v2 package (default)
SCRATCH_ROBERTA = "scratch-roberta"  # a small RoBERTa trained from scratch with its own BPE tokenizer


@dataclass(frozen=True)
class MlmConfig:
    mask_fraction: float = 0.15
    epochs: float = 10.0  # used when steps is None
    steps: int | None = None  # fixed step budget (overrides epochs)
    batch_size: int = 32
    lr: float = 2e-5
    max_length: int = 512
    warmup_steps: int = 10_000
    weight_decay: float = 0.01
    # "Base" perplexity needs an LM head on the frozen base encoder (sentence encoders such as MiniLM ship
    # none): the head alone is fitted for probe_steps at probe_lr, the encoder frozen, then measured.
    probe_steps: int = 200
    probe_lr: float = 1e-3
    eval_every: int = 50


@dataclass(frozen=True)
class ContrastiveConfig:
    epochs: float = 20.0
    steps: int | None = None
    batch_size: int = 128
    lr: float = 5e-5
    max_length: int = 256
    warmup_steps: int = 1_000
    weight_decay: float = 0.1
    temperature: float = 0.05  # SimCSE's
    # Supervised pairs (review -> its anime's item text) next to the unsupervised dropout pairs.
    supervised_pairs: bool = True


@dataclass(frozen=True)
class ScratchConfig:
    """The from-scratch RoBERTa (compared variant): small enough to train on a CPU."""

    vocab_size: int = 8_000
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 1024


@dataclass(frozen=True)
class TrainConfig:
    preset: str
    base: str = MINILM  # MINILM, SCRATCH_ROBERTA, or a local Hugging Face folder (roberta-base, ...)
    seed: int = 42
    mlm_texts: int | None = None  # cap on MLM training texts (None: all)
    heldout_texts: int | None = None  # cap on held-out texts for perplexity
    contrastive_texts: int | None = None  # cap on contrastive training reviews (None: all)
    retrieval_queries: int | None = None  # cap on held-out reviews used as retrieval queries
    # Cap on retrieval candidates: every query's own item plus other reviewed items up to this many.
    retrieval_candidates: int | None = None
    # Cap on the sentiment head's training reviews (val and test are always whole: same test split as VADER).
    sentiment_train_reviews: int | None = None
    torch_threads: int = 2
    mlm: MlmConfig = field(default_factory=MlmConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    scratch: ScratchConfig = field(default_factory=ScratchConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PAPER = TrainConfig(preset="paper")

CPU_SMALL = TrainConfig(
    preset="cpu-small",
    mlm_texts=4_000,
    heldout_texts=120,
    contrastive_texts=3_000,
    retrieval_queries=200,
    retrieval_candidates=400,
    sentiment_train_reviews=1_000,
    # One torch thread: on 2 cores shared with other jobs, two threads mostly wait for each other.
    torch_threads=1,
    mlm=MlmConfig(
        steps=50, batch_size=16, lr=1e-4, max_length=64, warmup_steps=5, probe_steps=30, eval_every=25
    ),
    contrastive=ContrastiveConfig(steps=30, batch_size=16, lr=5e-5, max_length=64, warmup_steps=3),
)

# Unit tests and the integration test's tiny model: seconds, not minutes.
TINY = TrainConfig(
    preset="tiny",
    mlm_texts=64,
    heldout_texts=16,
    contrastive_texts=32,
    retrieval_queries=16,
    retrieval_candidates=64,
    sentiment_train_reviews=100,
    torch_threads=1,
    mlm=MlmConfig(steps=4, batch_size=8, lr=1e-3, max_length=64, warmup_steps=1, probe_steps=2, eval_every=2),
    contrastive=ContrastiveConfig(steps=3, batch_size=8, lr=1e-3, max_length=64, warmup_steps=1),
    scratch=ScratchConfig(
        vocab_size=400, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    ),
)

PRESETS: dict[str, TrainConfig] = {c.preset: c for c in (PAPER, CPU_SMALL, TINY)}


def preset(name: str, base: str | None = None, seed: int | None = None) -> TrainConfig:
    config = PRESETS[name]
    if base is not None:
        config = replace(config, base=base)
    if seed is not None:
        config = replace(config, seed=seed)
    return config
