"""Optimiser and learning-rate schedule shared by the stages: AdamW without decay on biases and norms, linear
warm-up then linear decay to zero (the usual BERT / SimCSE recipe)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def make_optimizer(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for p in params:
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def linear_warmup(
    optimizer: torch.optim.Optimizer, warmup: int, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = max(1, min(warmup, total))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def step_budget(steps: int | None, epochs: float, n_texts: int, batch_size: int) -> int:
    """``steps`` when set, else ``epochs`` passes over ``n_texts``."""
    if steps is not None:
        return steps
    return max(1, math.ceil(epochs * n_texts / batch_size))
