"""The scaling plot of the serving benchmark: latency, throughput and API memory against items and users."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers

import matplotlib.pyplot as plt


def _series(points: dict[str, Any], key: str) -> tuple[list[int], list[float], list[float], list[float]]:
    xs, med, lo, hi = [], [], [], []
    for x, p in points.items():
        s = p[key]
        xs.append(int(x))
        med.append(s["median"])
        lo.append(s["median"] - s["min"])
        hi.append(s["max"] - s["median"])
    return xs, med, lo, hi


def write(serving: dict[str, Any], path: Path) -> str:
    """Draw the two sweeps (items, users) side by side; returns the file name written."""
    fig, axes = plt.subplots(3, 2, figsize=(11, 10), sharex="col")
    for col, (sweep, label) in enumerate((("items", "items in the index"), ("users", "users in PostgreSQL"))):
        points = serving[sweep]
        growth = serving.get("growth", {})
        ax = axes[0][col]
        for key, name in (("p50_ms", "p50"), ("p99_ms", "p99")):
            xs, med, lo, hi = _series(points, key)
            ax.errorbar(xs, med, yerr=[lo, hi], marker="o", capsize=3, label=name)
        ax.set_ylabel("Recommend latency (ms)")
        g50 = growth.get(f"{sweep}_p50_ms", {})
        ax.set_title(f"latency vs {label}: p50 {g50.get('growth', 'n/a')}")
        ax.legend()
        ax = axes[1][col]
        xs, med, lo, hi = _series(points, "qps")
        ax.errorbar(xs, med, yerr=[lo, hi], marker="o", capsize=3, color="tab:green")
        ax.set_ylabel(f"requests/s ({serving['concurrency']} clients)")
        ax.set_title(f"throughput: {growth.get(f'{sweep}_qps', {}).get('growth', 'n/a')}")
        ax = axes[2][col]
        xs = [int(x) for x in points]
        ax.plot(xs, [points[x]["rss_mb"] for x in points], marker="o", color="tab:red", label="RSS")
        ax.plot(
            xs, [points[x]["peak_rss_mb"] for x in points], marker="x", ls="--", color="tab:red", label="peak"
        )
        ax.set_ylabel("API process memory (MB)")
        ax.set_title(f"memory: {growth.get(f'{sweep}_rss_mb', {}).get('growth', 'n/a')}")
        ax.set_xlabel(label)
        ax.legend()
        for row in axes:
            row[col].set_xscale("log")
            row[col].set_yscale("log")
            row[col].grid(True, which="both", alpha=0.3)
    fig.suptitle("Recommend through gRPC (API process + PostgreSQL), median over repeats, bars = min–max")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
