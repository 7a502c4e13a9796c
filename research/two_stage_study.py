"""What the served two-stage llmrec loses against scoring every item, and what its sparse artifact costs
(issue 14). ``python -m research.two_stage_study`` writes ``reports/two_stage.{json,md}``.

Per data set and seed, protocol (a), the **test** part (the model's parameters are the tuned ones, chosen on
validation; nothing here is tuned):

- the fitted ``llmrec`` answers through its served function (``two_stage.rank_candidates``: candidates,
  then the fusion layer on them);
- the same fitted layer scores every unseen item (``llmrec-exhaustive``'s function) for the same users;
- *candidate recall*: the share of the exhaustive top 10 (items the user does not know) inside the
  candidate set the served function re-ranked;
- NDCG@10 of both, and of ``llmrec-dense-ease`` (the collaborative branch on EASE's dense matrix: the
  model before issue 14) fitted on the same split;
- the collaborative matrix's bytes per item: pruned (CSR) against dense float32, and the fit times.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from llmrec.settings import Settings
from ranker.model.recommender import LLMRec, score_universe, variant
from ranker.model.two_stage import rank_candidates
from research import metrics as m
from research.datasets import load_dataset
from research.evaluate import fit_on_split, known_matrix
from research.item_text import item_text_features
from research.llmrec_specs import DEFAULTS
from research.registry import resolved_params
from research.runner import single_thread_torch
from research.splits import Part, make_split
from research.tuning import load_tuned

PROTOCOL = "user_random_80_10_10"
K = 10


def _ndcg(lists: list[np.ndarray], relevant: list[set[int]]) -> float:
    return float(np.mean([m.ndcg_at_k(row, rel, K) for row, rel in zip(lists, relevant, strict=True)]))


def _top(scores: np.ndarray, known: np.ndarray) -> list[np.ndarray]:
    masked = np.where(known > 0, -np.inf, scores)
    return [np.argsort(-row, kind="stable")[:K] for row in masked]


def study(dataset: str, seed: int, data_dir: Path, index_dir: Path, tuned_path: Path) -> dict[str, Any]:
    data = load_dataset(dataset, data_dir)
    split = make_split(data, PROTOCOL, seed)
    features = item_text_features(data, data_dir, index_dir)
    params = {**DEFAULTS, **(resolved_params(load_tuned(tuned_path), dataset, "llmrec") or {})}
    by_user = split.relevant(Part.TEST)
    users = np.array(sorted(by_user), dtype=np.int64)
    relevant = [by_user[int(u)] for u in users]
    known = known_matrix(split, Part.TEST)[users]

    fits: dict[str, float] = {}
    models: dict[str, LLMRec] = {}
    for name in ("llmrec", "llmrec-dense-ease"):
        started = time.perf_counter()
        # The dense ablation keeps every entry of EASE's matrix: it takes no ``neighbours``.
        own = {k: v for k, v in params.items() if name != "llmrec-dense-ease" or k != "neighbours"}
        model = LLMRec(config=variant(name, seed, **own), name=name)
        fit_on_split(model, split, features)
        fits[name] = time.perf_counter() - started
        models[name] = model
    model = models["llmrec"]
    exhaustive = replace(model.config, exhaustive=True)
    catalogue = model._catalogue()
    served_lists: list[np.ndarray] = []
    exhaustive_lists: list[np.ndarray] = []
    recall: list[float] = []
    sizes: list[int] = []
    for start in range(0, users.size, 16):
        batch = users[start : start + 16]
        inputs = model._batch_inputs(batch)
        ranked = rank_candidates(
            model.net,
            model.item_side,
            inputs,
            catalogue,
            inputs.history_binary <= 0,
            model.config.generators(),
        )
        served = score_universe(model.net, model.item_side, model.config, inputs, catalogue)
        full = score_universe(model.net, model.item_side, exhaustive, inputs, catalogue)
        rows_known = known[start : start + batch.size]
        served_lists.extend(_top(served, rows_known))
        full_top = _top(full, rows_known)
        exhaustive_lists.extend(full_top)
        for row, top in enumerate(full_top):
            candidates = set(ranked.rows[row][ranked.rows[row] >= 0].tolist())
            sizes.append(len(candidates))
            recall.append(len(candidates & set(top.tolist())) / max(1, len(top)))
    dense_lists = _top(models["llmrec-dense-ease"].score(users), known)
    pruned = model.item_side.neighbours
    n = model.item_side.n_items
    return {
        "dataset": dataset,
        "neighbours": model.config.neighbours,
        "seed": seed,
        "protocol": PROTOCOL,
        "part": "test",
        "users": int(users.size),
        "items": n,
        "params": params,
        "ndcg@10": {
            "llmrec (served two-stage)": _ndcg(served_lists, relevant),
            "llmrec-exhaustive (same layer, every item)": _ndcg(exhaustive_lists, relevant),
            "llmrec-dense-ease (before issue 14)": _ndcg(dense_lists, relevant),
        },
        "candidate_recall_of_exhaustive_top10": float(np.mean(recall)),
        "mean_candidates": float(np.mean(sizes)),
        "collab_bytes_per_item": {
            "pruned_csr": (pruned.data.nbytes + pruned.indices.nbytes + pruned.indptr.nbytes) / n,
            "dense_float32": 4.0 * n,
        },
        "fit_s": fits,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "# The served two-stage llmrec against scoring every item (issue 14)",
        "",
        "Regenerated by `python -m research.two_stage_study` (entries in two_stage.json). Protocol (a), "
        "**test** part, tuned parameters (chosen on validation). *served*: the API's function "
        "(candidates, then the fusion layer on them); *exhaustive*: the same fitted layer on every unseen "
        "item; *dense EASE*: the model before issue 14, fitted on the same split; *candidate recall*: share "
        "of the exhaustive top 10 inside the re-ranked candidates. Fit times on the shared 2-core machine.",
        "",
        "| data set | seed | users | items | NDCG@10 served | NDCG@10 exhaustive | NDCG@10 dense EASE "
        "| candidate recall | candidates | neighbours | collab bytes/item (served / dense) "
        "| fit s (served / dense) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        nd = list(r["ndcg@10"].values())
        size = r["collab_bytes_per_item"]
        fit = r["fit_s"]
        lines.append(
            f"| {r['dataset']} | {r['seed']} | {r['users']} | {r['items']} | {nd[0]:.4f} | {nd[1]:.4f} "
            f"| {nd[2]:.4f} | {r['candidate_recall_of_exhaustive_top10']:.4f} | {r['mean_candidates']:.1f} "
            f"| {r['neighbours'] or 'dense'} "
            f"| {size['pruned_csr']:.0f} / {size['dense_float32']:.0f} "
            f"| {fit['llmrec']:.1f} / {fit['llmrec-dense-ease']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dataset", action="append", default=None)
    parser.add_argument("--seed", type=int, action="append", default=None)
    parser.add_argument("--out", type=Path, default=Path("reports/two_stage.json"))
    args = parser.parse_args()
    settings = Settings()
    single_thread_torch()
    tuned = settings.reports_dir / "tuned_params.json"
    results = [
        study(dataset, seed, settings.data_dir, settings.index_dir, tuned)
        for dataset in args.dataset or ["mal-completed"]
        for seed in args.seed or [42, 43]
    ]
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(markdown(results), encoding="utf-8")
    print(markdown(results))


if __name__ == "__main__":
    main()
