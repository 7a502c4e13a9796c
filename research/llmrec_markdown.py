"""The llmrec report's markdown, ``reports/llmrec_model.md``: the model's description, the tables read from
the evaluation records (Tables 4, 9 and 10 from ``reports/eval.json``, mean ± std over its seeds; every
data set and protocol against the best baseline; our baselines against a library's) and those the report
measured itself (``llmrec_studies``: branches, fusion variants, profiles, timing, case studies).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from research.datasets import MAL_COMPLETED
from research.llmrec_studies import KS
from research.llmrec_summary import Record, gains, mean_metric, runs
from research.splits import PROTOCOL_RANDOM

HEADLINE = ("ndcg@10", "mrr", "precision@10", "recall@10", "hit@10", "map@10", "coverage@10", "long_tail@10")
PAPER_MODELS = ("mf", "ncf", "bert4rec", "lightgcn", "bpr", "vbpr_text", "llmrec")
ABLATIONS = ("llmrec", "llmrec-no-pref", "llmrec-no-lm", "llmrec-no-fusion")
# Our baseline -> the same model from an established library (``research.library_models``).
LIBRARY_PAIRS = {"bpr": "implicit-bpr", "mf": "implicit-als"}


def _mean_std(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def eval_rows(records: Sequence[Record], dataset: str, protocol: str, models: Sequence[str]) -> list[str]:
    lines = ["| model | seeds | " + " | ".join(HEADLINE) + " |", "|---" * (len(HEADLINE) + 2) + "|"]
    for model in models:
        rs = runs(records, dataset, protocol, model)
        if not rs:
            continue
        cells = [_mean_std([r["metrics"][m] for r in rs]) for m in HEADLINE]
        lines.append(f"| {model} | {','.join(str(r['seed']) for r in rs)} | " + " | ".join(cells) + " |")
    return lines


def overview_lines(records: Sequence[Record]) -> list[str]:
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
        seeds = sorted({r["seed"] for r in runs(records, dataset, protocol, "llmrec")})
        ablations = [mean_metric(records, dataset, protocol, a, "ndcg@10") for a in ABLATIONS[1:]]
        lines.append(
            f"| {dataset} | {protocol} | {','.join(map(str, seeds))} | {best} | {g[best]['ndcg@10']:.4f} | "
            f"{g['llmrec']['ndcg@10']:.4f} | {g['ndcg@10_gain']:+.1%} | {g[best]['mrr']:.4f} | "
            f"{g['llmrec']['mrr']:.4f} | {g['mrr_gain']:+.1%} | "
            + " | ".join("" if v is None else f"{v:.4f}" for v in ablations)
            + " |"
        )
    return lines


def library_lines(records: Sequence[Record], protocol: str = PROTOCOL_RANDOM) -> list[str]:
    """Per data set, each of our models with a library counterpart against it: mean NDCG@10 and MRR."""
    lines = [
        "| dataset | ours | ndcg@10 | mrr | library | ndcg@10 | mrr | ours / library (ndcg@10) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def mean(dataset: str, model: str, metric: str) -> float | None:
        return mean_metric(records, dataset, protocol, model, metric)

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


def ablation_lines(records: Sequence[Record], dataset: str, protocol: str) -> list[str]:
    """NDCG@10 and MRR of each ablation relative to the full model (means over the shared seeds)."""

    def mean(model: str, metric: str) -> float | None:
        return mean_metric(records, dataset, protocol, model, metric)

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
  (`collab_pref`), EASE's matrix kept sparse with the `neighbours` strongest inputs per item (chosen per
  data set on validation; 0 = dense); semantic = cosine of the preference vector to the item's MiniLM
  vector (`semantic`) and a learned projection of both into d dimensions (`h = A u * A v`); behaviour =
  the preference vector through the *behaviour map* `W` (`behaviour`: `(p W) . x`, a bilinear ridge
  regression fitted in closed form so that a user's text profile predicts the items they consume,
  `ranker/model/behaviour.py`); popularity; user activity. A *cold* item (no interactions) borrows its
  collaborative scores from its 10 nearest warm items under the behaviour map (`x_i' W x_j`).
- **Two stages, the function the API serves** (`ranker/model/two_stage.py`): candidates are the union of
  the `n_collab` best unseen items by the sparse `collab` score, the `n_semantic` best by ANN search with
  the preference vector, and the `n_cold` best cold items by ANN search with the behaviour query `p W`;
  the layer re-ranks them
  (other items follow in `collab` order). `llmrec-exhaustive` scores every unseen item with the same
  fitted layer: the difference is what the candidate stage loses (reports/two_stage.md). Fusion kinds:
  *late* = learned weighted sum of the branch scores (`w.x + c.sum(h)`), *early* = one MLP over the
  concatenated representations (`MLP([x, h])`), *hybrid* = both, summed. The `llmrec` model's fusion
  kind is one of its tuned parameters (hybrid by default and first trial); see Tuning for the kind TPE
  chose on validation.
- **Ranking**: pairwise hinge loss, margin 0.5, 4 negatives per positive drawn from the candidate set,
  trained by stacking (20 % of each user's training items held back as positives, branches fitted on the
  rest, 35 % of the items made cold there so the layer learns text-only items, each positive on them
  repeated 6 times and contrasted with other cold candidates; cold items have a late-fusion head of
  their own), Adam, L2 on the weights; TPE on the validation part (see Tuning).
- **Ablations** (each with `llmrec`'s tuned parameters, not tuned on their own): `llmrec-no-pref` = uniform
  history weights (no ratings, completion or decay) in the
  profile and the weighted branch; `llmrec-no-lm` = learned item ID embeddings instead of the MiniLM
  vectors, the semantic, behaviour and text-neighbour features, text candidates and borrowed scores off;
  `llmrec-no-fusion` = no fusion layer and no training: the `collab_pref` and `semantic` z-scores added;
  `llmrec-dense-ease` = EASE's dense matrix (the model before issue 14).
"""


def write_markdown(report: Mapping[str, Any], records: Sequence[Record], path: Path) -> None:
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
