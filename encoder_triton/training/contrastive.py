"""Stage 2: SimCSE-style contrastive fine-tuning of the (adapted) encoder.

Each step takes a batch of training reviews. Unsupervised SimCSE: the same reviews are encoded twice with
dropout on, and each review's second view is its positive, every other review of the batch a negative
(InfoNCE at temperature ``tau``). Supervised pairs (``supervised_pairs``): each review is also pulled
towards its own anime's item text and pushed from the other items of the batch; two reviews of the same
anime in one batch are not treated as negatives of each other. Loss = unsupervised + supervised.

Embeddings are the served ones (``Encoder.forward``: mean pooling, L2 normalisation, the same head + tail
token window), so what is trained is exactly what Triton computes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from encoder_triton.encoder import Encoder
from encoder_triton.training.corpus import Corpus
from encoder_triton.training.presets import ContrastiveConfig
from encoder_triton.training.schedule import linear_warmup, make_optimizer, step_budget


def info_nce(
    queries: torch.Tensor, keys: torch.Tensor, temperature: float, same: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of row i against column i among all columns; ``same[i, j]`` True drops column j from
    row i's negatives (a false negative such as another review of the same anime)."""
    logits = queries @ keys.T / temperature
    if same is not None:
        eye = torch.eye(len(queries), dtype=torch.bool)
        logits = logits.masked_fill(same & ~eye, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(queries)))


def _encode(encoder: Encoder, texts: Sequence[str]) -> torch.Tensor:
    batch = encoder.tokenize(texts)
    vectors: torch.Tensor = encoder(batch["input_ids"], batch["attention_mask"])
    return vectors


def train_contrastive(
    encoder: Encoder, corpus: Corpus, config: ContrastiveConfig, seed: int, progress: bool = True
) -> dict[str, Any]:
    """Fine-tunes ``encoder.backbone`` in place; returns the loss history."""
    started = time.perf_counter()
    use_pairs = config.supervised_pairs and len(corpus.pairs) >= 2
    n = len(corpus.pairs) if use_pairs else len(corpus.contrastive_texts)
    steps = step_budget(config.steps, config.epochs, n, config.batch_size)
    params = [p for p in encoder.backbone.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, config.lr, config.weight_decay)
    scheduler = linear_warmup(optimizer, config.warmup_steps, steps)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    unsup_losses: list[float] = []
    order: list[int] = []
    bar = tqdm(range(steps), desc="contrastive", unit="step", disable=not progress)
    for _ in bar:
        if len(order) < config.batch_size:
            order += torch.randperm(n, generator=generator).tolist()
        picked, order = order[: config.batch_size], order[config.batch_size :]
        encoder.backbone.train()
        torch.manual_seed(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())  # dropout masks
        if use_pairs:
            pairs = [corpus.pairs[i] for i in picked]
            texts = [p.review for p in pairs]
        else:
            texts = [corpus.contrastive_texts[i] for i in picked]
        first, second = _encode(encoder, texts), _encode(encoder, texts)
        unsupervised = info_nce(first, second, config.temperature)
        loss = unsupervised
        if use_pairs:
            ids = torch.tensor([p.item_id for p in pairs])
            items = _encode(encoder, [corpus.item_text(p.item_id) for p in pairs])
            same = ids[:, None] == ids[None, :]
            loss = loss + info_nce(first, items, config.temperature, same)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        unsup_losses.append(unsupervised.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    encoder.backbone.eval()
    return {
        "steps": steps,
        "supervised_pairs": use_pairs,
        "loss": losses,
        "unsupervised_loss": unsup_losses,
        "seconds": round(time.perf_counter() - started, 1),
    }
