"""``llmrec encoder-report``: reports/encoder.{md,json} and PNGs from training runs and the serving bench.

Every figure is read from the run folders' ``metrics.json`` (written by ``llmrec train-encoder``) and from
``reports/encoder-bench.json`` (written by ``python -m bench.encoder``); nothing is typed in by hand. The
first run is the headline; further runs (other bases, such as ``scratch-roberta``) form a comparison table.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

PLOTS = ("mlm_loss.png", "contrastive_loss.png", "perplexity.png", "retrieval.png")


def serving_lines(section: dict[str, Any]) -> list[str]:
    lines = [
        "## Encoder serving: Triton vs in-process",
        "",
        f"Model version {section['model_version']} ({section['model']}, {section['dim']}-d), "
        f"{section['tokens']} tokens per review, 1 torch thread on each side, device {section['device']}; "
        f"median of {section['repeats']} alternating repeats. GPU: {section['gpu']}.",
        "",
        "| batch | in-process reviews/s | Triton reviews/s | overhead (medians) | overhead (minima) |",
        "|---|---|---|---|---|",
    ]
    for b, row in section["batches"].items():
        lines.append(
            f"| {b} | {row['in_process_reviews_per_s']:.1f} | {row['triton_reviews_per_s']:.1f} "
            f"| {row['overhead']:+.1%} | {row['overhead_of_minima']:+.1%} |"
        )
    if section.get("in_process_own_session") is False:
        lines += [
            "",
            "Warning: the in-process side shared a session with other jobs; Linux's autogroup scheduler then "
            "gives it a smaller CPU share than the server (which runs in a session of its own), which "
            "flatters Triton. `python -m bench.encoder` avoids this by re-running itself under `setsid`.",
        ]
    overhead = section.get("serving_overhead_b32")
    if overhead is not None:
        verdict = "within" if overhead < 0.20 else "OVER"
        lines += ["", f"serving_overhead_b32 = {overhead:.3f} ({verdict} the 20% target)."]
    return [*lines, ""]


def _load(run_dir: Path) -> dict[str, Any]:
    metrics: dict[str, Any] = json.loads((run_dir / "metrics.json").read_text())
    metrics["config"] = json.loads((run_dir / "config.json").read_text())
    metrics["run_dir"] = str(run_dir)
    return metrics


def headline(run: dict[str, Any], bench: dict[str, Any] | None) -> dict[str, Any]:
    retrieval, sentiment = run["retrieval"], run["sentiment"]
    return {
        "perplexity_base": run["mlm"]["perplexity_base"],
        "perplexity_adapted": run["mlm"]["perplexity_adapted"],
        "retrieval_base": retrieval["base"]["recall@10"],
        "retrieval_adapted": retrieval["adapted"]["recall@10"],
        "retrieval_contrastive": retrieval["contrastive"]["recall@10"],
        "retrieval_measure": retrieval["measure"],
        "sentiment_macro_f1": sentiment["test"]["macro_f1"],
        "vader_macro_f1": sentiment["vader_test"]["macro_f1"],
        "sentiment_accuracy": sentiment["test"]["accuracy"],
        "vader_accuracy": sentiment["vader_test"]["accuracy"],
        "sentiment_spearman": sentiment["test"]["spearman_vs_score"],
        "vader_spearman": sentiment["vader_test"]["spearman_vs_score"],
        "serving_overhead_b32": None if bench is None else bench.get("serving_overhead_b32"),
    }


def _run_row(run: dict[str, Any]) -> str:
    r, s, m = run["retrieval"], run["sentiment"], run["mlm"]
    return (
        f"| {run['base_description']} | {run['parameters'] / 1e6:.1f}M | {m['perplexity_base']:.1f} "
        f"| {m['perplexity_adapted']:.1f} | {r['base']['recall@10']:.3f} | {r['adapted']['recall@10']:.3f} "
        f"| {r['contrastive']['recall@10']:.3f} | {r['contrastive']['mrr']:.3f} | "
        f"{s['test']['macro_f1']:.3f} "
        f"| {s['test']['spearman_vs_score']:.3f} | {run['seconds'] / 60:.1f} |"
    )


def render(
    runs: list[dict[str, Any]], bench: dict[str, Any] | None, keys: dict[str, Any], plot_dir: str
) -> str:
    main = runs[0]
    cfg, corpus, r, s = main["config"], main["corpus"], main["retrieval"], main["sentiment"]
    lead = s["lead_over_vader"]
    lines = [
        "# Semantic encoder: domain adaptation, contrastive fine-tuning, sentiment, serving",
        "",
        "Regenerate: `llmrec train-encoder --preset cpu-small` (per base), `python -m bench.encoder`, then "
        "`llmrec encoder-report RUN_DIR [RUN_DIR ...]`. Every figure below is read from those outputs.",
        "",
        f"Headline run `{main['run_id']}`: base {main['base_description']}, preset `{cfg['preset']}`, seed "
        f"{main['seed']}, {main['torch_threads']} torch threads, {main['seconds'] / 60:.1f} min on a "
        "2-core CPU "
        "shared with other jobs. Data: "
        f"`{corpus['source']}`, split by anime title (held-out titles never reach any training stage).",
        "",
        "## Stage 1: masked language modelling (15% masking)",
        "",
        f"{corpus['mlm_train']} training texts (reviews and synopses), {cfg['mlm']['steps']} steps of "
        f"{cfg['mlm']['batch_size']} at {cfg['mlm']['max_length']} tokens, lr {cfg['mlm']['lr']}. Held-out "
        f"perplexity on {corpus['mlm_heldout']} texts of held-out titles, the same masks for both "
        "models. Base = "
        f"the frozen base encoder with its LM head fitted for {cfg['mlm']['probe_steps']} steps (MiniLM "
        "ships "
        "no MLM head).",
        "",
        "| model | held-out perplexity |",
        "|---|---|",
        f"| base | {keys['perplexity_base']:.2f} |",
        f"| adapted | {keys['perplexity_adapted']:.2f} |",
        "",
        f"![MLM loss]({plot_dir}/mlm_loss.png) ![perplexity]({plot_dir}/perplexity.png)",
        "",
        "## Stage 2: contrastive fine-tuning (SimCSE)",
        "",
        f"{main['contrastive']['steps']} steps of {cfg['contrastive']['batch_size']} training reviews at "
        f"{cfg['contrastive']['max_length']} tokens, temperature {cfg['contrastive']['temperature']}: "
        "dropout views "
        "as positives with in-batch negatives, plus supervised pairs (review -> its anime's item text"
        f"{'' if main['contrastive']['supervised_pairs'] else ': off'}).",
        "",
        f"Measure: **{r['measure']}**. {r['base']['queries']} held-out reviews against "
        f"{r['base']['candidates']} "
        "candidate items: the queries' own anime plus a seeded sample of the other reviewed anime "
        f"(chance recall@10 = {r['base']['chance_recall@10']:.3f}). A review names the "
        "show's "
        "characters, events, tone and genre without repeating its synopsis, so finding its own anime "
        "needs the "
        "item-telling semantics the recommender relies on (user vectors are built from item vectors, and the "
        "index retrieves items near them).",
        "",
        "| model | recall@1 | recall@10 | MRR | median rank |",
        "|---|---|---|---|---|",
    ]
    for stage in ("base", "adapted", "contrastive"):
        x = r[stage]
        lines.append(
            f"| {stage} | {x['recall@1']:.3f} | {x['recall@10']:.3f} | {x['mrr']:.3f} | "
            f"{x['median_rank']:.0f} |"
        )
    lines += [
        "",
        f"![contrastive loss]({plot_dir}/contrastive_loss.png) ![retrieval]({plot_dir}/retrieval.png)",
        "",
        "## Stage 3: review sentiment on the final encoder",
        "",
        f"Head on the frozen final encoder, trained on {s['sizes']['train']} reviews of training titles, "
        f"thresholds on {s['sizes']['val']} validation reviews; test = {s['sizes']['test']} reviews of "
        "held-out "
        "titles, the same split for VADER.",
        "",
        "| scorer | accuracy | macro-F1 | Spearman vs 1-10 score |",
        "|---|---|---|---|",
        f"| learned head | {keys['sentiment_accuracy']:.3f} | {keys['sentiment_macro_f1']:.3f} "
        f"| {keys['sentiment_spearman']:.3f} |",
        f"| VADER | {keys['vader_accuracy']:.3f} | {keys['vader_macro_f1']:.3f} | "
        f"{keys['vader_spearman']:.3f} |",
        "",
        f"Head minus VADER: macro-F1 {lead['macro_f1']:+.3f} (95% title-clustered bootstrap "
        f"[{lead['macro_f1_ci95'][0]:+.3f}, {lead['macro_f1_ci95'][1]:+.3f}]), Spearman "
        f"{lead['spearman_vs_score']:+.3f} [{lead['spearman_vs_score_ci95'][0]:+.3f}, "
        f"{lead['spearman_vs_score_ci95'][1]:+.3f}].",
        "",
    ]
    if len(runs) > 1:
        lines += [
            "## Bases compared (same preset, data and seed)",
            "",
            "| base | params | ppl base | ppl adapted | R@10 base | R@10 adapted | R@10 contrastive | "
            "MRR contr. "
            "| sentiment macro-F1 | Spearman | minutes |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *(_run_row(run) for run in runs),
            "",
        ]
    if bench is not None:
        lines += serving_lines(bench)
    else:
        lines += [
            "## Serving",
            "",
            "Not measured: no reports/encoder-bench.json (run `python -m bench.encoder`).",
            "",
        ]
    return "\n".join(lines)


def write_report(run_dirs: list[Path], bench_json: Path, out_dir: Path) -> Path:
    runs = [_load(d) for d in run_dirs]
    bench = json.loads(bench_json.read_text()) if bench_json.is_file() else None
    keys = headline(runs[0], bench)
    plot_dir = out_dir / "encoder"
    plot_dir.mkdir(parents=True, exist_ok=True)
    for name in PLOTS:
        source = Path(runs[0]["run_dir"]) / name
        if source.is_file():
            shutil.copy2(source, plot_dir / name)
    body = {
        **keys,
        "runs": [
            {
                k: run[k]
                for k in (
                    "run_id",
                    "base",
                    "base_description",
                    "preset",
                    "seed",
                    "parameters",
                    "corpus",
                    "mlm",
                    "contrastive",
                    "retrieval",
                    "sentiment",
                    "seconds",
                    "torch_threads",
                )
            }
            for run in runs
        ],
        "serving": bench,
    }
    (out_dir / "encoder.json").write_text(json.dumps(body, indent=2) + "\n")
    md = out_dir / "encoder.md"
    md.write_text(render(runs, bench, keys, "encoder"))
    return md
