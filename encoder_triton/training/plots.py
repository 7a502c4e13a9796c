"""PNG plots of a run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def smooth(values: Sequence[float], window: int = 10) -> np.ndarray[Any, Any]:
    """Trailing moving average (the first points average over what exists so far)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return x
    cumulative = np.cumsum(np.insert(x, 0, 0.0))
    counts = np.minimum(np.arange(1, len(x) + 1), window)
    return np.asarray((cumulative[1:] - cumulative[np.arange(1, len(x) + 1) - counts]) / counts)


def mlm_loss_plot(history: Mapping[str, Any], path: Path, title: str) -> Path:
    """Training loss per step (probe phase shaded) and held-out loss (log perplexity) at each evaluation."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    steps, loss, phase = history["steps"], history["train_loss"], history["phase"]
    ax.plot(steps, loss, color="#bbbbbb", linewidth=0.8, label="train loss (per step)")
    ax.plot(steps, smooth(loss), color="#1f77b4", label="train loss (10-step mean)")
    ax.plot(
        history["eval_steps"],
        history["eval_loss"],
        "o-",
        color="#d62728",
        label="held-out loss (ln perplexity)",
    )
    probe_end = sum(1 for p in phase if p == "probe")
    if probe_end:
        ax.axvspan(0, probe_end, color="#eeeeee", label="head-only probe (encoder frozen)")
    return _save_step_plot(plt, fig, ax, path, title, "masked-token cross-entropy")


def _save_step_plot(plt: Any, fig: Any, ax: Any, path: Path, title: str, ylabel: str) -> Path:
    """Label a loss-over-steps plot, write it and free the figure."""
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def contrastive_loss_plot(history: Mapping[str, Any], path: Path, title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = np.arange(1, len(history["loss"]) + 1)
    ax.plot(steps, smooth(history["loss"]), label="total (10-step mean)")
    ax.plot(steps, smooth(history["unsupervised_loss"]), label="unsupervised SimCSE (10-step mean)")
    return _save_step_plot(plt, fig, ax, path, title, "InfoNCE loss")


def bar_plot(values: Mapping[str, float], path: Path, title: str, ylabel: str, log: bool = False) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(values)
    bars = ax.bar(
        names, [values[n] for n in names], color=["#7f7f7f", "#1f77b4", "#2ca02c", "#ff7f0e"][: len(names)]
    )
    for bar, name in zip(bars, names, strict=True):
        ax.annotate(
            f"{values[name]:.3g}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
        )
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
