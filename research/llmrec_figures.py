"""The llmrec report's figures (PNG, matplotlib): the t-SNE of the users' preference vectors (Figure 5)
and the fit and scoring times against data size (Figure 7)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ranker.interactions import InteractionData
from ranker.model.profiles import ProfileKind, history_weights, preference_vectors
from ranker.model.side_info import SideInformation

FloatMatrix = npt.NDArray[np.float32]


def tsne_plot(
    side: SideInformation, train: FloatMatrix, data: InteractionData, catalogue: Any, path: Path, seed: int
) -> dict[str, Any]:
    # Lazy: plotting and t-SNE libraries are heavy and only the report draws.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    weights = history_weights(train, side.ratings, side.timestamps, ProfileKind.DYNAMIC)
    vectors = preference_vectors(weights, side.item_vectors)
    dominant = []
    for u in range(data.n_users):
        c: Counter[str] = Counter()
        for i in np.flatnonzero(train[u]):
            item = catalogue.get(data.item_ids[i])
            c.update(item.genres if item is not None else ())
        dominant.append(c.most_common(1)[0][0] if c else "?")
    points = TSNE(n_components=2, random_state=seed, init="pca", perplexity=30).fit_transform(vectors)
    fig, ax = plt.subplots(figsize=(7, 6))
    for genre, _ in Counter(dominant).most_common(8):
        sel = np.array([d == genre for d in dominant])
        ax.scatter(points[sel, 0], points[sel, 1], s=8, label=genre, alpha=0.7)
    ax.set_title("t-SNE of user preference vectors (mal-completed), by most frequent history genre")
    ax.legend(fontsize=7, markerscale=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"users": int(data.n_users), "dominant_genres": dict(Counter(dominant).most_common(8))}


def timing_plot(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    # Lazy: matplotlib is heavy and only the report draws.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (score_ax, fit_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for model in sorted({r["model"] for r in rows}):
        pts = sorted(
            (r["interactions"], r["infer_ms_per_user"], r["fit_s"]) for r in rows if r["model"] == model
        )
        score_ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=model)
        fit_ax.plot([p[0] for p in pts], [p[2] for p in pts], marker="o", label=model)
    for ax, label in ((score_ax, "scoring, ms per user (all items)"), (fit_ax, "fit, seconds")):
        ax.set_xlabel("interactions in the data set (25 to 100 % of mal-completed's users)")
        ax.set_ylabel(label)
        ax.set_yscale("log")
    score_ax.set_title("Inference time vs data size (2 CPU cores)")
    fit_ax.set_title("Training time vs data size")
    fit_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
