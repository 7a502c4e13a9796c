"""``llmrec eval-report``: the llmrec model's figures, ``reports/llmrec_model.{md,json}`` and PNGs.

``run_report`` runs every stage in one process and rewrites the report after each; ``render_only``
rebuilds the markdown from the saved JSON. What it measures itself (protocol (a) = per-user random
80/10/10, full ranking, test part, seed 42, with the tuned llmrec parameters from ``--tuned``, defaults
otherwise; ``llmrec_studies`` and ``llmrec_figures``):

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
(``llmrec eval --models ...``), mean ± std over the seeds there (``llmrec_summary``, ``llmrec_markdown``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llmrec.catalogue import build_catalogue
from ranker.model.base import FitContext
from ranker.model.recommender import LLMRec, variant
from ranker.model.side_info import side_from_context, side_information
from research.datasets import MAL_COMPLETED, MOVIELENS, load_dataset
from research.evaluate import run_eval
from research.item_text import item_text_features
from research.llmrec_figures import timing_plot, tsne_plot
from research.llmrec_markdown import ABLATIONS, write_markdown
from research.llmrec_specs import DEFAULTS
from research.llmrec_studies import (
    TIMED_MODELS,
    branch_table,
    case_study,
    fusion_table,
    inference_timing,
    profile_study,
)
from research.llmrec_summary import gains
from research.registry import MODEL_SPECS, resolved_params
from research.runner import eval_models, single_thread_torch
from research.splits import PROTOCOL_RANDOM, random_split, temporal_split
from research.tuning import load_tuned

# The case studies: (title, genres every picked user's history is rich in).
CASES = (
    ("Psychological-thriller fan: long-tail picks", ("Psychological", "Suspense")),
    ("Science fiction + romance fan: cross-genre picks", ("Sci-Fi", "Romance")),
)


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
        case_study(title, genres, train, mal, catalogue, ours, base, baseline) for title, genres in CASES
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
