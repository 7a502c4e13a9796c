"""What a candidate stage loses (issue 14): ``python -m research.candidate_study --dataset mal-completed``.

On protocol (a)'s split (the harness's own loader and split, ``--seed``, default 42), fits the candidate
generators of ``research.candidates`` on the training part and judges them on the *validation* part only
(test is never read), against two exhaustive references fitted on the same training part:

- ``ease``: the EASE baseline's dense scores (``ease_matrix`` with the tuned ``reg``);
- ``llmrec``: the trained llmrec ranker with its tuned parameters (its scores over the whole training
  universe, as evaluated today); ``--no-llmrec`` leaves it out.

Also measures the sparse replacement of the ranker's dense EASE feature: EASE pruned to m entries per row
or per column (m = 20, 50, 100, 200, 500; by value, or by magnitude keeping negative weights), its
validation NDCG@10 ranking every item and re-ranking a union candidate set (EASE alone, and the trained
llmrec ranker with the pruned matrix swapped in), and its bytes per item against the dense matrix's.

Writes ``reports/candidates.json`` (merged: one entry per dataset x seed, a rerun replaces its own) and
``reports/candidates.md`` (rebuilt from the JSON), and prints the table.
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from llmrec.settings import Settings
from ranker.model.ease import ease_matrix, prune_rows
from ranker.model.features import ItemSide
from ranker.model.recommender import LLMRec
from research.candidates import (
    CandidateGenerator,
    LowRankCandidates,
    NeighbourCandidates,
    PopularityCandidates,
    Reference,
    SemanticCandidates,
    UnionCandidates,
    candidate_study,
    exhaustive_ndcg,
    mean_ndcg,
    measure_fit,
    restricted_top_k,
    sparse_scores,
    top_k,
)
from research.datasets import LOADERS, MAL_COMPLETED, load_dataset
from research.evaluate import fit_on_split
from research.factor_models import MFConfig
from research.item_text import item_text_features
from research.registry import MODEL_SPECS, resolved_params
from research.runner import single_thread_torch
from research.splits import PROTOCOL_RANDOM, Part, make_split
from research.tuning import load_tuned

NS = (100, 200, 500)
PRUNE_MS = (20, 50, 100, 200, 500)
UNION_N = 200  # the candidate-set size the pruned-EASE re-ranking is measured at


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _params(tuned: Mapping[str, Any], dataset: str, model: str) -> dict[str, Any]:
    found = resolved_params(tuned, dataset, model)
    if found is None:
        _log(f"no tuned {model} parameters for {dataset}: defaults")
        return dict(MODEL_SPECS[model].defaults)
    return dict(found)


def pruned_ease_study(
    dense: np.ndarray,
    train: np.ndarray,
    users: np.ndarray,
    relevant: Sequence[set[int]],
    unions: Mapping[str, np.ndarray],
    llmrec_rescore: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """Validation NDCG@10 of ``history @ prune(B, m)`` ranking every unseen item and re-ranking each union
    candidate set, beside the dense matrix's. With ``llmrec_rescore`` (dense B replacement -> the trained
    llmrec's scores for ``users``), the same for the llmrec ranker whose collaborative features read the
    pruned matrix instead (its fusion layer as trained on the dense one: no retraining), for the
    ``*_magnitude`` variants. Bytes per item of each (CSR: float32 value + int32 column,
    plus the row pointer)."""
    rows = train[users]
    seen = rows > 0
    n_items = dense.shape[0]
    dense_scores = rows @ dense

    def llmrec_figures(replacement: np.ndarray) -> dict[str, float]:
        if llmrec_rescore is None:
            return {}
        scores = llmrec_rescore(replacement)
        return {
            "llmrec_ndcg@10": mean_ndcg(top_k(scores, seen), relevant),
            **{
                f"llmrec_ndcg@10_within_{k}": mean_ndcg(restricted_top_k(scores, c), relevant)
                for k, c in unions.items()
            },
        }

    out: list[dict[str, Any]] = [
        {
            "matrix": "dense",
            "m": n_items,
            "bytes_per_item": 4.0 * n_items,
            "ndcg@10": mean_ndcg(top_k(dense_scores, seen), relevant),
            **{
                f"ndcg@10_within_{k}": mean_ndcg(restricted_top_k(dense_scores, c), relevant)
                for k, c in unions.items()
            },
            **llmrec_figures(dense),
        }
    ]
    variants = [
        (f"{axis}_{kind}", kind == "magnitude", axis == "column")
        for axis in ("row", "column")
        for kind in ("value", "magnitude")
    ]
    for label, by_magnitude, by_column in variants:
        for m_keep in PRUNE_MS:
            started = time.perf_counter()
            # Rows: each item's m strongest targets (neighbours of a history item, for candidate generation);
            # columns: each target item's m strongest inputs (what re-scoring a given candidate reads).
            source = dense.T if by_column else dense
            pruned = prune_rows(source, m_keep, by_magnitude=by_magnitude)
            if by_column:
                pruned = sp.csr_matrix(pruned.T)
            prune_s = time.perf_counter() - started
            scores = sparse_scores(rows, pruned).toarray()
            nbytes = pruned.nnz * 8 + (n_items + 1) * 8
            entry = {
                "matrix": label,
                "m": m_keep,
                "bytes_per_item": nbytes / n_items,
                "prune_s": prune_s,
                "ndcg@10": mean_ndcg(top_k(scores, seen), relevant),
                **{
                    f"ndcg@10_within_{k}": mean_ndcg(restricted_top_k(scores, c), relevant)
                    for k, c in unions.items()
                },
            }
            if by_magnitude:
                entry.update(llmrec_figures(pruned.toarray()))
            _log(f"pruned EASE {entry}")
            out.append(entry)
    return out


def _swapped_scorer(model: LLMRec, users: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The fitted ranker's scores for ``users`` with its collaborative matrix replaced (research-side:
    ``ranker/`` is untouched; the original matrix is put back after each call)."""

    def score(replacement: np.ndarray) -> np.ndarray:
        original = model.item_side
        model.item_side = ItemSide.assemble(
            sp.csr_matrix(replacement, dtype=np.float32),
            original.vectors,
            original.log_popularity,
            original.constants,
            original.behaviour,
            original.text_matrix,
            (original.text_neighbours, original.text_exponent),
        )
        try:
            return model.score(users)
        finally:
            model.item_side = original

    return score


def run_study(
    dataset: str, seed: int, data_dir: Path, index_dir: Path, tuned_path: Path, *, with_llmrec: bool
) -> dict[str, Any]:
    single_thread_torch()
    started = time.perf_counter()
    data = load_dataset(dataset, data_dir)
    split = make_split(data, PROTOCOL_RANDOM, seed)
    train = split.train_matrix()
    by_user = split.relevant(Part.VALIDATION)
    users = np.array(sorted(by_user), dtype=np.int64)
    relevant = [by_user[int(u)] for u in users]
    _log(
        f"{dataset}: {data.n_users} users, {data.n_items} items; {users.size} validation users "
        f"({time.perf_counter() - started:.1f} s)"
    )
    tuned = load_tuned(tuned_path)
    ease_reg = float(_params(tuned, dataset, "ease")["reg"])
    mf_params = _params(tuned, dataset, "mf")

    features = None
    notes: list[str] = []
    try:
        features = item_text_features(data, data_dir, index_dir)
    except (OSError, ValueError, ImportError) as exc:
        notes.append(f"no item text features ({exc}): no semantic generator, no llmrec reference")
        _log(notes[-1])

    started = time.perf_counter()
    tracemalloc.start()
    dense = ease_matrix(train, ease_reg)
    ease_fit_s = time.perf_counter() - started
    ease_peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    _log(
        f"dense EASE reg={ease_reg}: {ease_fit_s:.1f} s, {dense.nbytes / 2**20:.0f} MB, "
        f"peak {ease_peak_mb:.0f} MB"
    )
    references = [Reference("ease", (train[users] @ dense).astype(np.float32))]
    llmrec_fit_s = float("nan")
    rescore: Callable[[np.ndarray], np.ndarray] | None = None
    if with_llmrec and features is not None:
        params = _params(tuned, dataset, "llmrec")
        started = time.perf_counter()
        model = fit_on_split(MODEL_SPECS["llmrec"].factory(params)(seed), split, features)
        llmrec_fit_s = time.perf_counter() - started
        references.append(Reference("llmrec", model.score(users)))
        if isinstance(model, LLMRec):
            rescore = _swapped_scorer(model, users)
        _log(f"llmrec fitted in {llmrec_fit_s:.1f} s ({params})")
    exhaustive = exhaustive_ndcg(references, train, users, relevant)
    _log(f"exhaustive validation NDCG@10: {exhaustive}")

    mf_config = MFConfig(**mf_params, seed=seed)
    lowrank = LowRankCandidates(mf_config)
    neighbours = NeighbourCandidates("ease", 100, ease_reg, full=dense)
    singles: list[CandidateGenerator] = [
        PopularityCandidates(),
        lowrank,
        LowRankCandidates(mf_config, hnsw=True),
        neighbours,
        NeighbourCandidates("ease", 50, ease_reg, full=dense),
        NeighbourCandidates("cosine", 100),
    ]
    semantic = SemanticCandidates(features) if features is not None else None
    if semantic is not None:
        singles.append(semantic)
    fit_stats: dict[str, dict[str, float]] = {}
    for generator in singles:
        fit_stats[generator.name] = measure_fit(generator, train)
        _log(f"fitted {generator.name}: {fit_stats[generator.name]}")
    unions: list[CandidateGenerator] = [
        UnionCandidates("union_ease100+ials", {"ease": (neighbours, 0.5), "ials": (lowrank, 0.5)}),
        UnionCandidates("union_ease100+ials_75_25", {"ease": (neighbours, 0.75), "ials": (lowrank, 0.25)}),
    ]
    if semantic is not None:
        unions.append(
            UnionCandidates(
                "union_ease100+ials+semantic",
                {"ease": (neighbours, 0.45), "ials": (lowrank, 0.45), "semantic": (semantic, 0.1)},
            )
        )
    for generator in unions:
        fit_stats[generator.name] = measure_fit(generator, train)  # parts already fitted: the fill only
    records = candidate_study(
        [*singles, *unions], train, users, relevant, references, NS, fit_stats=fit_stats, log=_log
    )

    union_sets = {u.name: u.candidates(train[users], UNION_N) for u in unions[:1]}
    pruned = pruned_ease_study(dense, train, users, relevant, union_sets, rescore)
    return {
        "dataset": dataset,
        "protocol": PROTOCOL_RANDOM,
        "seed": seed,
        "part": "validation",
        "users": int(users.size),
        "n_items": int(data.n_items),
        "ease_reg": ease_reg,
        "ease_dense_fit_s": ease_fit_s,
        "ease_dense_fit_peak_mb": ease_peak_mb,
        "llmrec_fit_s": llmrec_fit_s,
        "mf_params": mf_params,
        "exhaustive_ndcg@10": exhaustive,
        "records": [r.as_dict() for r in records],
        "pruned_ease": pruned,
        "pruned_ease_union": f"{unions[0].name} at n={UNION_N}",
        "notes": notes,
    }


def merge_entry(path: Path, entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    old: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    key = (entry["dataset"], entry["seed"])
    kept = [e for e in old if (e["dataset"], e["seed"]) != key]
    return sorted([*kept, dict(entry)], key=lambda e: (e["dataset"], e["seed"]))


def _f(value: Any, digits: int = 4) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def entry_table(entry: Mapping[str, Any]) -> list[str]:
    refs = list(entry["exhaustive_ndcg@10"])
    header = ["generator", "n"]
    header += [f"recall of {r} top-10" for r in refs]
    header += ["recall@n (val)"]
    header += [f"NDCG@10 {r} within" for r in refs]
    header += ["filled", "ms/user", "fit s", "artifact MB", "bytes/item"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for record in entry["records"]:
        mt = record["metrics"]
        cells = [record["generator"], str(record["n"])]
        cells += [_f(mt.get(f"recall_ref_{r}@10")) for r in refs]
        cells += [_f(mt.get("recall@n"))]
        cells += [_f(mt.get(f"ndcg@10_{r}_within")) for r in refs]
        cells += [
            _f(mt.get("filled"), 1),
            _f(mt.get("ms_per_user"), 2),
            _f(mt.get("fit_s"), 2),
            _f(mt.get("artifact_mb"), 2),
            _f(mt.get("artifact_bytes_per_item"), 0),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def pruned_table(entry: Mapping[str, Any]) -> list[str]:
    first = entry["pruned_ease"][0]
    within = [k for k in first if k.startswith("ndcg@10_within_")]
    llmrec = [k for k in first if k.startswith("llmrec_ndcg@10")]
    header = ["matrix", "m", "bytes/item", "EASE NDCG@10 (all items)"]
    header += [f"EASE NDCG@10 within {k[len('ndcg@10_within_') :]} n={UNION_N}" for k in within]
    header += [
        "llmrec NDCG@10 (all items)" if k == "llmrec_ndcg@10" else f"llmrec NDCG@10 within n={UNION_N}"
        for k in llmrec
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in entry["pruned_ease"]:
        cells = [row["matrix"], str(row["m"]), _f(row["bytes_per_item"], 0), _f(row["ndcg@10"])]
        cells += [_f(row.get(k)) for k in (*within, *llmrec)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(entries: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        "# Candidate generation study (issue 14)",
        "",
        "Regenerated by `python -m research.candidate_study` (entries in candidates.json). Protocol (a), "
        "**validation part only** (test never read). References: `ease` = dense EASE (tuned reg), `llmrec` = "
        "the trained llmrec ranker (tuned parameters), each ranking every unseen item. Columns: *recall of X "
        "top-10* = share of X's exhaustive unseen top 10 inside the n candidates (what the candidate stage "
        "loses); *recall@n* = held-out validation items inside the candidates; *NDCG@10 X within* = X "
        "re-ranking only the candidates (two-stage quality with X as the re-ranker); *filled* = mean real "
        "candidates (a neighbour generator finds only items reached from the history); *ms/user* = candidate "
        "generation per user (batch of all validation users, 1 thread, shared 2-core machine); *fit s* and "
        "*artifact* = fit time and served bytes of the generator (a union's: its parts' bytes, its fit = the "
        "popularity fill only; `neighbours_ease_*` prune a dense EASE fitted once, its time in the header).",
        "",
    ]
    for entry in entries:
        exhaustive = ", ".join(f"{k} {v:.4f}" for k, v in entry["exhaustive_ndcg@10"].items())
        lines += [
            f"## {entry['dataset']}, seed {entry['seed']} "
            f"({entry['users']} validation users, {entry['n_items']} items)",
            "",
            f"Exhaustive validation NDCG@10: {exhaustive}. Dense EASE (reg {entry['ease_reg']:g}) fit "
            f"{entry['ease_dense_fit_s']:.1f} s (peak {_f(entry.get('ease_dense_fit_peak_mb'), 0)} MB of "
            f"NumPy allocations); llmrec fit {_f(entry['llmrec_fit_s'], 1) or 'n/a'} s; "
            f"iALS {entry['mf_params']}.",
            *[f"\n**Note:** {note}" for note in entry.get("notes", [])],
            "",
            *entry_table(entry),
            "",
            f"### Pruned EASE as the ranker's collaborative feature ({entry['pruned_ease_union']})",
            "",
            "EASE's B pruned to m entries per row (`row_*`: each item's m strongest targets, what candidate "
            "generation from the history reads) or per column (`column_*`: each target's m strongest inputs, "
            "what re-scoring a given candidate reads); `*_value`: the m largest positive entries, "
            "`*_magnitude`: the m largest by absolute value (negative weights kept). Score = history @ "
            "pruned B. Bytes per item in CSR/CSC (float32 value + int32 index per entry, int64 pointer) "
            "against the dense float32 row. *llmrec* columns: the trained llmrec ranker with its "
            "collaborative matrix swapped for the pruned one at scoring time (fusion layer trained on the "
            "dense matrix, not retrained: a lower bound for a ranker trained on the pruned feature).",
            "",
            *pruned_table(entry),
            "",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dataset", default=MAL_COMPLETED, choices=sorted(LOADERS))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--tuned", type=Path, default=None, help="default: <reports>/tuned_params.json")
    parser.add_argument("--out", type=Path, default=None, help="default: <reports>/candidates.json")
    parser.add_argument("--no-llmrec", action="store_true", help="EASE as the only reference")
    args = parser.parse_args(argv)
    settings = Settings()
    reports = settings.reports_dir
    out = args.out or reports / "candidates.json"
    entry = run_study(
        args.dataset,
        args.seed,
        args.data_dir or settings.data_dir,
        settings.index_dir,
        args.tuned or reports / "tuned_params.json",
        with_llmrec=not args.no_llmrec,
    )
    entries = merge_entry(out, entry)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(entries, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(entries), encoding="utf-8")
    print("\n".join(entry_table(entry)))
    print()
    print("\n".join(pruned_table(entry)))


if __name__ == "__main__":
    main()
