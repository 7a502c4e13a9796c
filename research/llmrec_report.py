"""``llmrec eval-report``: the llmrec model's figures, ``reports/llmrec_model.{md,json}`` and PNGs.

What it measures itself (protocol (a) = per-user random 80/10/10, full ranking, test part, seed 42, with
the tuned llmrec parameters from ``--tuned``, defaults otherwise):

- Table 3: early, late and hybrid fusion (``network`` defines them);
- static vs dynamic profiles (Figure 3) on MovieLens with the temporal leave-last-out protocol (the only
  set with real timestamps; without them the two profiles are the same): the semantic branch alone
  (rank by cosine to the profile) and the whole model, P@K and NDCG@K;
- t-SNE of the MAL users' preference vectors, coloured by their most frequent history genre;
- inference time against data size (Figure 7): users subsampled to 25/50/75/100 %, each model fitted on
  the sample's training part, then the time to score a user over every item (ms) and the fit time;
- two case studies with real titles: a psychological-thriller fan (long-tail picks) and a science-fiction
  + romance fan (cross-genre picks), our top 10 against the best baseline's with popularity ranks.

What it reads: Tables 4, 9 and 10 (baselines vs llmrec, ablations) come from ``reports/eval.json``
(``llmrec eval --models ...``), mean ± std over the seeds there.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from ranker.interactions import InteractionData
from ranker.model.base import FitContext, Recommender
from ranker.model.features import FEATURES, universe_features
from ranker.model.network import Fusion
from ranker.model.profiles import ProfileKind, history_weights, preference_vectors
from ranker.model.recommender import LLMRec, variant
from ranker.model.side_info import SideInformation, side_from_context, side_information
from research.datasets import MAL_COMPLETED, MOVIELENS, load_dataset
from research.evaluate import ModelFactory, evaluate_model
from research.llmrec_specs import DEFAULTS
from research.scaling import inference_time_curve
from research.splits import PROTOCOL_RANDOM, Part, Split, random_split, temporal_split

FloatMatrix = npt.NDArray[np.float32]
KS = (5, 10, 20)
HEADLINE = ("ndcg@10", "mrr", "precision@10", "recall@10", "hit@10", "map@10", "coverage@10", "long_tail@10")
PAPER_MODELS = ("mf", "ncf", "bert4rec", "lightgcn", "bpr", "vbpr_text", "llmrec")
ABLATIONS = ("llmrec", "llmrec-no-pref", "llmrec-no-lm", "llmrec-no-fusion")
# Our baseline -> the same model from an established library (``research.library_models``).
LIBRARY_PAIRS = {"bpr": "implicit-bpr", "mf": "implicit-als"}


class SemanticProfile(Recommender):
    """The semantic branch alone: cosine between the user's profile (static or dynamic) and each item."""

    name = "semantic-profile"

    def __init__(self, side: SideInformation, kind: ProfileKind) -> None:
        super().__init__()
        self.side = side
        self.kind = kind

    def _fit(self, train: FloatMatrix) -> None:
        weights = history_weights(train, self.side.ratings, self.side.timestamps, self.kind)
        self._profiles = preference_vectors(weights, self.side.item_vectors)

    def _score(self, users: npt.NDArray[np.int64]) -> FloatMatrix:
        scores: FloatMatrix = self._profiles[users] @ self.side.item_vectors.T
        return scores


class BranchAlone(Recommender):
    """One input of the fusion layer used alone as the ranking (a fitted llmrec model's feature column)."""

    def __init__(self, fitted: LLMRec, column: int) -> None:
        super().__init__()
        self.fitted = fitted
        self.column = column
        self.name = FEATURES[column]

    def _fit(self, train: FloatMatrix) -> None:
        return None

    def _score(self, users: npt.NDArray[np.int64]) -> FloatMatrix:
        out = np.empty((users.size, self.fitted.item_side.n_items), dtype=np.float32)
        for start in range(0, users.size, 64):
            batch = users[start : start + 64]
            inputs = self.fitted._batch_inputs(batch)
            out[start : start + batch.size] = universe_features(inputs, self.fitted.item_side)[
                ..., self.column
            ]
        return out


def branch_table(fitted: LLMRec, split: Split) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in range(len(FEATURES) - 1):  # activity is constant per user: it cannot rank
        model = BranchAlone(fitted, column).fit(split.train_matrix())
        out[FEATURES[column]] = evaluate_model(model, split, part=Part.TEST, ks=(10,)).metrics
    return out


def _fit_eval(model: Recommender, split: Split, ks: Sequence[int] = KS) -> dict[str, float]:
    model.fit(split.train_matrix(), FitContext(data=split.data, train_rows=split.train))
    return evaluate_model(model, split, part=Part.TEST, ks=ks).metrics


def fusion_table(
    side: SideInformation, split: Split, params: Mapping[str, Any], seed: int, hybrid: LLMRec | None = None
) -> dict[str, Any]:
    """Test metrics of early, late and hybrid fusion with the other parameters fixed (``hybrid``: an
    already fitted llmrec model, reused for the row of its own fusion kind)."""
    out: dict[str, Any] = {}
    for fusion in tqdm((Fusion.EARLY, Fusion.LATE, Fusion.HYBRID), desc="fusion variants"):
        if hybrid is not None and hybrid.config.fusion is fusion:
            out[fusion.value] = evaluate_model(hybrid, split, part=Part.TEST, ks=KS).metrics
            continue
        model = LLMRec(side, variant("llmrec", seed, **{**params, "fusion": fusion}))
        out[fusion.value] = _fit_eval(model, split)
    return out


def profile_study(
    side: SideInformation, split: Split, params: Mapping[str, Any], seed: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in (ProfileKind.STATIC, ProfileKind.DYNAMIC):
        out[f"semantic/{kind.value}"] = _fit_eval(SemanticProfile(side, kind), split)
        model = LLMRec(side, variant("llmrec", seed, **{**params, "profile": kind}))
        out[f"llmrec/{kind.value}"] = _fit_eval(model, split)
    return out


TIMED_MODELS = ("pop", "itemknn", "ease", "mf", "bpr", "ncf", "vbpr_text", "llmrec")


def inference_timing(
    factories: Mapping[str, ModelFactory],
    data: InteractionData,
    features: FloatMatrix,
    seed: int,
    shares: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
) -> list[dict[str, Any]]:
    """Figure 7: each model fitted on growing shares of the users (their interactions, protocol (a)'s
    training part; ``scaling.inference_time_curve``), with its fit time and the time to score a user over
    every item of that subset (the per-request cost)."""
    rows: list[dict[str, Any]] = []
    for name, factory in tqdm(factories.items(), desc="timing", unit="model"):
        for point in inference_time_curve(factory, data, shares, seed=seed, item_features=features):
            rows.append({"model": name, **point.as_dict()})
    return rows


def _genres(catalogue: Any, item_id: int) -> set[str]:
    item = catalogue.get(item_id) if hasattr(catalogue, "get") else None
    if item is None:
        return set()
    return set(item.genres) | set(item.themes)


def _pick_user(train: FloatMatrix, data: InteractionData, catalogue: Any, wanted: Sequence[str]) -> int:
    """The user (with at least 20 training items) whose history has the largest share of items carrying
    every genre in ``wanted`` (a single genre, or two for a cross-genre fan: each must be common)."""
    best, best_score = 0, -1.0
    for u in range(data.n_users):
        items = np.flatnonzero(train[u])
        if items.size < 20:
            continue
        tags = [_genres(catalogue, data.item_ids[i]) for i in items]
        shares = [np.mean([g in t for t in tags]) for g in wanted]
        score = float(min(shares))
        if score > best_score:
            best, best_score = u, score
    return best


def case_study(
    title: str,
    wanted: Sequence[str],
    train: FloatMatrix,
    data: InteractionData,
    catalogue: Any,
    ours: Recommender,
    baseline: Recommender,
    baseline_name: str,
) -> dict[str, Any]:
    u = _pick_user(train, data, catalogue, wanted)
    counts = train.sum(axis=0)
    pop_rank = np.empty(data.n_items, dtype=np.int64)
    pop_rank[np.argsort(-counts, kind="stable")] = np.arange(1, data.n_items + 1)

    def describe(i: int) -> dict[str, Any]:
        item = catalogue.get(data.item_ids[i])
        return {
            "item_id": data.item_ids[i],
            "title": item.title if item is not None else str(data.item_ids[i]),
            "genres": sorted(_genres(catalogue, data.item_ids[i])),
            "popularity_rank": int(pop_rank[i]),
        }

    def top10(model: Recommender) -> list[dict[str, Any]]:
        scores = model.score(np.array([u]))[0]
        scores[train[u] > 0] = -np.inf
        return [describe(int(i)) for i in np.argsort(-scores, kind="stable")[:10]]

    history = sorted(np.flatnonzero(train[u]).tolist(), key=lambda i: pop_rank[i])
    return {
        "title": title,
        "genres": list(wanted),
        "user": data.user_ids[u],
        "history_size": int(train[u].sum()),
        "history_genre_share": {
            g: float(np.mean([g in _genres(catalogue, data.item_ids[i]) for i in history])) for g in wanted
        },
        "history_sample": [describe(i) for i in history[:: max(1, len(history) // 12)][:12]],
        "llmrec": top10(ours),
        baseline_name: top10(baseline),
        "baseline": baseline_name,
    }


def tsne_plot(
    side: SideInformation, train: FloatMatrix, data: InteractionData, catalogue: Any, path: Path, seed: int
) -> dict[str, Any]:
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


# -- markdown -----------------------------------------------------------------------------------------------


def _mean_std(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def eval_rows(
    records: Sequence[Mapping[str, Any]], dataset: str, protocol: str, models: Sequence[str]
) -> list[str]:
    lines = ["| model | seeds | " + " | ".join(HEADLINE) + " |", "|---" * (len(HEADLINE) + 2) + "|"]
    for model in models:
        rs = [
            r
            for r in records
            if r["dataset"] == dataset and r["protocol"] == protocol and r["model"] == model
        ]
        if not rs:
            continue
        cells = [_mean_std([r["metrics"][m] for r in rs]) for m in HEADLINE]
        lines.append(f"| {model} | {','.join(str(r['seed']) for r in rs)} | " + " | ".join(cells) + " |")
    return lines


def gains(records: Sequence[Mapping[str, Any]], dataset: str, protocol: str) -> dict[str, Any]:
    """llmrec vs the best baseline by mean NDCG@10 on this dataset x protocol (relative gains)."""
    by_model: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        if r["dataset"] == dataset and r["protocol"] == protocol:
            by_model.setdefault(r["model"], []).append(r)
    if "llmrec" not in by_model:
        return {}

    def mean(model: str, metric: str) -> float:
        return statistics.fmean(r["metrics"][metric] for r in by_model[model])

    baselines = [m for m in by_model if not m.startswith("llmrec")]
    if not baselines:
        return {}
    best = max(baselines, key=lambda m: mean(m, "ndcg@10"))
    return {
        "best_baseline": best,
        **{
            f"{metric}_gain": mean("llmrec", metric) / mean(best, metric) - 1.0
            for metric in ("ndcg@10", "mrr")
        },
        "llmrec": {m: mean("llmrec", m) for m in ("ndcg@10", "mrr")},
        best: {m: mean(best, m) for m in ("ndcg@10", "mrr")},
    }


def overview_lines(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """One row per data set x protocol that has llmrec: its NDCG@10 and MRR, the best baseline's, the
    relative gains and the ablations' NDCG@10."""
    lines = [
        "| dataset | protocol | seeds | best baseline | ndcg@10 | llmrec ndcg@10 | gain | mrr | llmrec mrr "
        "| gain | " + " | ".join(f"{a} ndcg@10" for a in ABLATIONS[1:]) + " |",
        "|---" * (10 + len(ABLATIONS) - 1) + "|",
    ]
    pairs = sorted({(r["dataset"], r["protocol"]) for r in records if r["model"] == "llmrec"})
    for dataset, protocol in pairs:
        g = gains(records, dataset, protocol)
        if not g:
            continue
        best = g["best_baseline"]
        seeds = sorted(
            {
                r["seed"]
                for r in records
                if (r["dataset"], r["protocol"], r["model"]) == (dataset, protocol, "llmrec")
            }
        )

        def mean(model: str, dataset: str = dataset, protocol: str = protocol) -> str:
            vals = [
                r["metrics"]["ndcg@10"]
                for r in records
                if (r["dataset"], r["protocol"], r["model"]) == (dataset, protocol, model)
            ]
            return f"{statistics.fmean(vals):.4f}" if vals else ""

        lines.append(
            f"| {dataset} | {protocol} | {','.join(map(str, seeds))} | {best} | {g[best]['ndcg@10']:.4f} | "
            f"{g['llmrec']['ndcg@10']:.4f} | {g['ndcg@10_gain']:+.1%} | {g[best]['mrr']:.4f} | "
            f"{g['llmrec']['mrr']:.4f} | {g['mrr_gain']:+.1%} | "
            + " | ".join(mean(a) for a in ABLATIONS[1:])
            + " |"
        )
    return lines


def library_lines(records: Sequence[Mapping[str, Any]], protocol: str = PROTOCOL_RANDOM) -> list[str]:
    """Per data set, each of our models with a library counterpart against it: mean NDCG@10 and MRR."""
    lines = [
        "| dataset | ours | ndcg@10 | mrr | library | ndcg@10 | mrr | ours / library (ndcg@10) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def mean(dataset: str, model: str, metric: str) -> float | None:
        vals = [
            r["metrics"][metric]
            for r in records
            if (r["dataset"], r["protocol"], r["model"]) == (dataset, protocol, model)
        ]
        return statistics.fmean(vals) if vals else None

    for dataset in sorted({r["dataset"] for r in records}):
        for ours, library in LIBRARY_PAIRS.items():
            a, b = mean(dataset, ours, "ndcg@10"), mean(dataset, library, "ndcg@10")
            if a is None or b is None:
                continue
            lines.append(
                f"| {dataset} | {ours} | {a:.4f} | {mean(dataset, ours, 'mrr'):.4f} | {library} | {b:.4f} | "
                f"{mean(dataset, library, 'mrr'):.4f} | {a / b:.2f} |"
            )
    return lines


def _metric_table(results: Mapping[str, Mapping[str, float]], metrics: Sequence[str]) -> list[str]:
    lines = ["| variant | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for name, values in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[m]:.4f}" for m in metrics) + " |")
    return lines


def _case_lines(case: Mapping[str, Any]) -> list[str]:
    base = case["baseline"]
    shares = ", ".join(f"{g} {s:.0%}" for g, s in case["history_genre_share"].items())
    lines = [
        f"### {case['title']}",
        "",
        f"User `{case['user']}`: {case['history_size']} training titles ({shares} of them). "
        "History sample (by popularity rank): "
        + "; ".join(f"{h['title']} (#{h['popularity_rank']})" for h in case["history_sample"]),
        "",
        f"| # | llmrec | pop. rank | genres | {base} | pop. rank | genres |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, (a, b) in enumerate(zip(case["llmrec"], case[base], strict=True), start=1):
        lines.append(
            f"| {n} | {a['title']} | {a['popularity_rank']} | {', '.join(a['genres'][:4])} | "
            f"{b['title']} | {b['popularity_rank']} | {', '.join(b['genres'][:4])} |"
        )
    for name in ("llmrec", base):
        ranks = [x["popularity_rank"] for x in case[name]]
        lines.append("")
        lines.append(f"{name}: median popularity rank {int(np.median(ranks))}")
    return [*lines, ""]


def ablation_lines(records: Sequence[Mapping[str, Any]], dataset: str, protocol: str) -> list[str]:
    """NDCG@10 and MRR of each ablation relative to the full model (means over the shared seeds)."""

    def mean(model: str, metric: str) -> float | None:
        vals = [
            r["metrics"][metric]
            for r in records
            if r["dataset"] == dataset and r["protocol"] == protocol and r["model"] == model
        ]
        return statistics.fmean(vals) if vals else None

    out: list[str] = []
    full = {m: mean("llmrec", m) for m in ("ndcg@10", "mrr")}
    for name in ABLATIONS[1:]:
        parts = []
        for metric in ("ndcg@10", "mrr"):
            value, ref = mean(name, metric), full[metric]
            if value is not None and ref:
                parts.append(f"{metric} {value / ref - 1.0:+.1%}")
        if parts:
            out.append(f"- `{name}` vs `llmrec`: " + ", ".join(parts))
    return out


MODEL_SECTION = """## The model

- **User preference module**: each history item weighs its stream strength (completed: viewing 0.2 +
  completion 0.1; rating: 0.4 x (2 x (r-1)/9 - 1)), decayed by 0.95 per 30 days from the user's latest
  event; the preference vector is the normalised weighted sum of the items' vectors.
- **Branches**: collaborative = EASE over the binary history (`collab`) and over the weighted history
  (`collab_pref`); semantic = cosine of the preference vector to the item's MiniLM vector (`semantic`)
  and a learned projection of both into d dimensions (`h = A u * A v`); popularity; user activity.
- **Integration** re-ranks the union of the `n_collab` best unseen items by `collab` and the
  `n_semantic` best by `semantic` (other items follow in `collab` order): *late* = learned weighted
  sum of the branch scores (`w.x + c.sum(h)`), *early* = one MLP over the concatenated representations
  (`MLP([x, h])`), *hybrid* = both, summed. The `llmrec` model's fusion kind is one of its tuned
  parameters (hybrid by default and first trial); see Tuning for the kind TPE chose on validation.
- **Ranking**: pairwise hinge loss, margin 0.5, 4 negatives per positive drawn from the candidate set,
  trained by stacking (20 % of each user's training items held back as positives, branches fitted on the
  rest), Adam, L2 on the weights; TPE on the validation part (see Tuning).
- **Ablations** (each with `llmrec`'s tuned parameters, not tuned on their own): `llmrec-no-pref` = uniform
  history weights (no ratings, completion or decay) in the
  profile and the weighted branch; `llmrec-no-lm` = learned item ID embeddings instead of the MiniLM
  vectors, semantic cosine off; `llmrec-no-fusion` = no fusion layer and no training: the `collab_pref`
  and `semantic` z-scores added.
"""


def write_markdown(report: Mapping[str, Any], records: Sequence[Mapping[str, Any]], path: Path) -> None:
    mal, proto = MAL_COMPLETED, PROTOCOL_RANDOM
    g = report.get("gains", {})
    lines = [
        "# The llmrec model on our data",
        "",
        "Generated by `llmrec eval-report` (this file, `llmrec_model.json` and the PNGs); Tables 4, 9 and 10",
        "read `reports/eval.json` (`llmrec eval --models ...`). Protocol (a): per-user random 80/10/10,",
        "full ranking over all items, training and validation items excluded, test part. Every number",
        "here was measured on a 2-core CPU shared with other jobs.",
        "",
        MODEL_SECTION,
        "## Tuning",
        "",
        f"```\n{json.dumps(report.get('tuning', {}), indent=1)}\n```",
        "",
        "## Table 4 / 9: llmrec against the baselines (mal-completed, protocol (a), test)",
        "",
        *eval_rows(
            records, mal, proto, [*PAPER_MODELS, "pop", "itemknn", "ease", "sasrec", *LIBRARY_PAIRS.values()]
        ),
        "",
    ]
    if g:
        lines += [
            f"Best baseline by NDCG@10: **{g['best_baseline']}**. llmrec vs it: NDCG@10 "
            f"{g['ndcg@10_gain']:+.1%}, MRR {g['mrr_gain']:+.1%} (the paper claims +8.6 % and +10.5 %).",
            "",
        ]
    lines += [
        "## Every data set and protocol: llmrec against the best baseline",
        "",
        "The best baseline per row is the one with the highest mean NDCG@10 there (the sequential models",
        "only where the data has timestamps). Means over the seeds in `eval.json`.",
        "",
        *overview_lines(records),
        "",
        "## Our baselines against a library's (protocol (a), test)",
        "",
        "The same models from the `implicit` library, tuned with the same budget and evaluated by the same",
        "harness (`research/library_models.py`): a check that our implementations are not weak.",
        "",
        *library_lines(records),
        "",
        "## Table 10: ablations (mal-completed, protocol (a), test)",
        "",
        *eval_rows(records, mal, proto, ABLATIONS),
        "",
        *ablation_lines(records, mal, proto),
        "",
        "## Each branch alone (mal-completed, protocol (a), test, seed 42)",
        "",
        "Each input of the fusion layer used alone as the ranking: what each signal brings by itself.",
        "",
        *_metric_table(report["branches"], ("precision@10", "recall@10", "ndcg@10", "mrr")),
        "",
        f"## Table 3: fusion variants (mal-completed, protocol (a), test, seed {report['seed']})",
        "",
        *_metric_table(report["fusion"], ("precision@10", "recall@10", "ndcg@10", "mrr")),
        "",
        "## Static vs dynamic profiles (Figure 3; MovieLens, temporal leave-last-out, test)",
        "",
        *_metric_table(report["profiles"], [f"{m}@{k}" for m in ("precision", "ndcg") for k in KS]),
        "",
        "## User vectors (Figure 5)",
        "",
        "![t-SNE of user vectors](llmrec_tsne.png)",
        "",
        "## Inference time vs data size (Figure 7)",
        "",
        "![inference time](llmrec_inference_time.png)",
        "",
        "Each model (its tuned parameters) fitted on 25, 50, 75 and 100 % of mal-completed's users (their",
        "interactions; protocol (a)'s training part), then timed scoring 128 users over every item of that",
        "subset (best of 3; the per-request cost). One process, one thread, the models one after another.",
        "",
        "| model | users | items | interactions | fit (s) | scoring (ms per user) |",
        "|---|---|---|---|---|---|",
        *[
            f"| {r['model']} | {r['users']} | {r['items']} | {r['interactions']} | {r['fit_s']:.2f} | "
            f"{r['infer_ms_per_user']:.3f} |"
            for r in report["timing"]
        ],
        "",
        "## Case studies (mal-completed, seed 42 split, training history only)",
        "",
    ]
    for case in report["cases"]:
        lines += _case_lines(case)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write(report: Mapping[str, Any], eval_json: Path, out_dir: Path) -> None:
    records = json.loads(eval_json.read_text(encoding="utf-8")) if eval_json.is_file() else []
    full = {"gains": gains(records, MAL_COMPLETED, PROTOCOL_RANDOM), **report}
    text = json.dumps(full, indent=2, default=float) + "\n"
    (out_dir / "llmrec_model.json").write_text(text, encoding="utf-8")
    write_markdown(full, records, out_dir / "llmrec_model.md")


def run_report(
    data_dir: Path,
    index_dir: Path,
    out_dir: Path,
    eval_json: Path,
    tuned: Mapping[str, Any] | None,
    seed: int = 42,
    eval_seeds: Sequence[int] = (42, 43),
    baseline: str = "ease",
    baseline_params: Mapping[str, Any] | None = None,
    tuned_path: Path | None = None,
) -> dict[str, Any]:
    """Everything in one process so the EASE fits and stacking features are shared (``memo``); the
    report is rewritten after every stage, so an interrupted run keeps what it finished."""
    from llmrec.catalogue import build_catalogue
    from research.item_text import item_text_features
    from research.registry import MODEL_SPECS, resolved_params
    from research.runner import eval_models, single_thread_torch
    from research.tuning import load_tuned

    single_thread_torch()
    params = {**DEFAULTS, **(tuned or {})}
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "seed": seed,
        "tuning": {"llmrec_params": params, "tuned": tuned is not None},
        "fusion": {},
        "branches": {},
        "profiles": {},
        "timing": [],
        "cases": [],
    }

    mal = load_dataset(MAL_COMPLETED, data_dir)
    features = item_text_features(mal, data_dir, index_dir)
    split = random_split(mal, seed)
    # The training rows' side information, exactly as the harness builds it for the eval runs (so the
    # memoised EASE fits and stacking features are shared with them).
    mal_side = side_from_context(
        FitContext(data=mal, train_rows=split.train, item_features=features), (mal.n_users, mal.n_items)
    )

    # Tables 4, 9, 10: llmrec and its ablations through the harness, merged into eval.json.
    if eval_seeds:
        from research.evaluate import run_eval

        models = eval_models(
            list(ABLATIONS), tuned_path or Path("reports/tuned_params.json"), {MAL_COMPLETED: features}
        )
        run_eval({MAL_COMPLETED: mal}, models, eval_seeds, eval_json, item_features={MAL_COMPLETED: features})
        _write(report, eval_json, out_dir)

    catalogue = build_catalogue(data_dir)
    train = split.train_matrix()
    ctx = FitContext(data=mal, train_rows=split.train)
    ours = LLMRec(mal_side, variant("llmrec", seed, **params)).fit(train, ctx)
    base = MODEL_SPECS[baseline].factory(baseline_params)(seed).fit(train, ctx)
    report["branches"] = branch_table(ours, split)
    report["cases"] = [
        case_study(
            "Psychological-thriller fan: long-tail picks",
            ("Psychological", "Suspense"),
            train,
            mal,
            catalogue,
            ours,
            base,
            baseline,
        ),
        case_study(
            "Science fiction + romance fan: cross-genre picks",
            ("Sci-Fi", "Romance"),
            train,
            mal,
            catalogue,
            ours,
            base,
            baseline,
        ),
    ]
    report["tsne"] = tsne_plot(mal_side, train, mal, catalogue, out_dir / "llmrec_tsne.png", seed)
    _write(report, eval_json, out_dir)

    stored = load_tuned(tuned_path or Path("reports/tuned_params.json"))
    timed = {
        name: MODEL_SPECS[name].factory(resolved_params(stored, MAL_COMPLETED, name)) for name in TIMED_MODELS
    }
    report["timing"] = inference_timing(timed, mal, features, seed)
    timing_plot(report["timing"], out_dir / "llmrec_inference_time.png")
    _write(report, eval_json, out_dir)

    # Table 3: ``ours`` fills the row of its own fusion kind; the other two are fitted here.
    report["fusion"] = fusion_table(mal_side, split, params, seed, hybrid=ours)
    _write(report, eval_json, out_dir)

    ml = load_dataset(MOVIELENS, data_dir)
    ml_side = side_information(ml, item_text_features(ml, data_dir, index_dir), "minilm:movielens")
    # MovieLens's own tuned llmrec parameters when it has them (``llmrec tune --dataset movielens-small``).
    ml_params = {**DEFAULTS, **(resolved_params(stored, MOVIELENS, "llmrec") or params)}
    report["tuning"]["movielens_params"] = ml_params
    report["profiles"] = profile_study(ml_side, temporal_split(ml), ml_params, seed)
    _write(report, eval_json, out_dir)
    return report


def render_only(out_dir: Path, eval_json: Path) -> dict[str, Any]:
    """Rebuild ``llmrec_model.md`` from the saved ``llmrec_model.json`` and the current ``eval.json``
    (e.g. after more seeds were evaluated), without refitting anything."""
    report: dict[str, Any] = json.loads((out_dir / "llmrec_model.json").read_text(encoding="utf-8"))
    report.pop("gains", None)
    _write(report, eval_json, out_dir)
    return {"gains": gains(json.loads(eval_json.read_text(encoding="utf-8")), MAL_COMPLETED, PROTOCOL_RANDOM)}
