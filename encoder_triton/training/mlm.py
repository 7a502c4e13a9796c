"""Stage 1: masked language modelling on the domain corpus, with held-out perplexity before and after.

Masking follows BERT: ``mask_fraction`` of the non-special tokens are chosen; of those 80% become the
mask token, 10% a random token, 10% stay. The loss is cross-entropy at the chosen positions only, and the
LM head runs only there. Every draw comes from a seeded ``torch.Generator``, so a rerun makes the same
masks and the same numbers.

Perplexity = exp(mean cross-entropy over masked held-out tokens), with one fixed set of masks (its own seed)
for every model measured, so base and adapted are scored on exactly the same predictions.

"Base" perplexity is the frozen base encoder with an LM head fitted for ``probe_steps`` (MiniLM ships no MLM
head, so an untouched one would measure a random projection); the adapted model continues from there with
every weight trainable.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from encoder_triton.training.backbones import encoder_of, lm_head
from encoder_triton.training.presets import MlmConfig
from encoder_triton.training.schedule import linear_warmup, make_optimizer, step_budget

EVAL_MASK_SEED = 1234


@dataclass
class MlmHistory:
    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    phase: list[str] = field(default_factory=list)  # "probe" (head only) or "adapt" per train step

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "train_loss": self.train_loss,
            "eval_steps": self.eval_steps,
            "eval_loss": self.eval_loss,
            "phase": self.phase,
        }


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    batch = tokenizer(
        list(texts),
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
        return_special_tokens_mask=True,
    )
    return {k: batch[k] for k in ("input_ids", "attention_mask", "special_tokens_mask")}


def mask_tokens(
    batch: dict[str, torch.Tensor], tokenizer: Any, fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked input ids, labels with -100 where nothing is predicted)."""
    ids = batch["input_ids"].clone()
    candidates = (batch["attention_mask"] == 1) & (batch["special_tokens_mask"] == 0)
    chosen = (torch.rand(ids.shape, generator=generator) < fraction) & candidates
    # At least one prediction per batch, so the loss is always defined.
    if not bool(chosen.any()) and bool(candidates.any()):
        chosen[candidates.nonzero()[0].unbind()] = True
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape, generator=generator)
    ids[chosen & (roll < 0.8)] = int(tokenizer.mask_token_id)
    randomise = chosen & (roll >= 0.8) & (roll < 0.9)
    ids[randomise] = torch.randint(len(tokenizer), ids.shape, generator=generator)[randomise]
    return ids, labels


def masked_loss(
    model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    hidden = encoder_of(model)(input_ids=ids, attention_mask=mask).last_hidden_state
    where = labels != -100
    logits = lm_head(model)(hidden[where])
    return torch.nn.functional.cross_entropy(logits.float(), labels[where])


@torch.no_grad()
def perplexity(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], config: MlmConfig) -> float:
    """exp(mean masked-token cross-entropy) on ``texts`` with masks fixed by ``EVAL_MASK_SEED``."""
    model.eval()
    generator = torch.Generator().manual_seed(EVAL_MASK_SEED)
    total, count = 0.0, 0
    for start in range(0, len(texts), config.batch_size):
        batch = tokenize(tokenizer, texts[start : start + config.batch_size], config.max_length)
        ids, labels = mask_tokens(batch, tokenizer, config.mask_fraction, generator)
        n = int((labels != -100).sum())
        total += float(masked_loss(model, ids, batch["attention_mask"], labels)) * n
        count += n
    return math.exp(total / max(count, 1))


def _train(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    heldout: Sequence[str],
    config: MlmConfig,
    params: list[torch.nn.Parameter],
    steps: int,
    lr: float,
    warmup: int,
    weight_decay: float,
    seed: int,
    phase: str,
    history: MlmHistory,
    progress: bool,
) -> None:
    generator = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(params, lr, weight_decay)
    scheduler = linear_warmup(optimizer, warmup, steps)
    order: list[int] = []
    offset = history.steps[-1] if history.steps else 0
    bar = tqdm(range(steps), desc=f"MLM {phase}", unit="step", disable=not progress)
    for step in bar:
        if len(order) < config.batch_size:
            order += torch.randperm(len(texts), generator=generator).tolist()
        picked, order = order[: config.batch_size], order[config.batch_size :]
        model.train()
        batch = tokenize(tokenizer, [texts[i] for i in picked], config.max_length)
        ids, labels = mask_tokens(batch, tokenizer, config.mask_fraction, generator)
        loss = masked_loss(model, ids, batch["attention_mask"], labels)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        history.steps.append(offset + step + 1)
        history.train_loss.append(loss.item())
        history.phase.append(phase)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if phase == "adapt" and ((step + 1) % config.eval_every == 0 or step + 1 == steps):
            history.eval_steps.append(offset + step + 1)
            history.eval_loss.append(math.log(perplexity(model, tokenizer, heldout, config)))


def train_mlm(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    heldout: Sequence[str],
    config: MlmConfig,
    seed: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Probe (head only), measure base perplexity, adapt (all weights), measure again. Trains ``model`` in
    place."""
    started = time.perf_counter()
    history = MlmHistory()
    head_params = [p for p in lm_head(model).parameters() if p.requires_grad]
    encoder_params = {id(p) for p in encoder_of(model).parameters()}
    # Tied decoder weights are the word embeddings: they belong to the encoder and stay frozen in the probe.
    probe_params = [p for p in head_params if id(p) not in encoder_params]
    for p in encoder_of(model).parameters():
        p.requires_grad_(False)
    if config.probe_steps > 0 and probe_params:
        _train(
            model,
            tokenizer,
            texts,
            heldout,
            config,
            probe_params,
            config.probe_steps,
            config.probe_lr,
            max(1, config.probe_steps // 10),
            0.0,
            seed,
            "probe",
            history,
            progress,
        )
    for p in model.parameters():
        p.requires_grad_(True)
    ppl_base = perplexity(model, tokenizer, heldout, config)
    history.eval_steps.append(history.steps[-1] if history.steps else 0)
    history.eval_loss.append(math.log(ppl_base))
    steps = step_budget(config.steps, config.epochs, len(texts), config.batch_size)
    params = [p for p in model.parameters() if p.requires_grad]
    _train(
        model,
        tokenizer,
        texts,
        heldout,
        config,
        params,
        steps,
        config.lr,
        config.warmup_steps,
        config.weight_decay,
        seed + 1,
        "adapt",
        history,
        progress,
    )
    ppl_adapted = math.exp(history.eval_loss[-1])
    model.eval()
    return {
        "perplexity_base": ppl_base,
        "perplexity_adapted": ppl_adapted,
        "probe_steps": config.probe_steps,
        "adapt_steps": steps,
        "train_texts": len(texts),
        "heldout_texts": len(heldout),
        "seconds": round(time.perf_counter() - started, 1),
        "history": history.to_dict(),
    }
