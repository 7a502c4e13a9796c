"""Full-ranking offline evaluation: every item is a candidate, minus what the user is already known to have.

For the test part the model is fitted on train only (hyper-parameters are chosen on validation beforehand)
and each user's train *and* validation items are removed from the ranking; for the validation part only the
train items are removed. There is no negative sampling, so the figures are comparable across models here but
not with the paper's unpublished protocol.

``run_eval`` writes ``reports/eval.json`` (a JSON list of records, one per dataset x protocol x model x seed)
and a markdown table beside it (``eval.md``).

Record shape::

    {"dataset": "mal-completed", "protocol": "user_random_80_10_10", "model": "ease", "seed": 42,
     "metrics": {"ndcg@10": ..., "mrr": ..., "recall@10": ..., "precision@10": ..., "hit@10": ...,
                 "map@10": ..., "mrr@10": ..., "coverage@10": ..., "long_tail@10": ..., "ild@10": ...,
                 ... the same for every K ..., "users": <users evaluated>}}

``mrr`` is uncut (the rank of the first hit in the full ranking); ``mrr@K`` is cut at K. ``coverage@K`` and
``long_tail@K`` are over all users' top-K lists; ``ild@K`` is the mean intra-list distance using the items'
training-interaction columns as embeddings unless ``item_embeddings`` are given (e.g. the LLM vectors).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from ranker.evaluation import metrics as m
from ranker.evaluation.baselines import (
    BPRMF,
    EASE,
    BPRConfig,
    ItemKNN,
    Popularity,
    Recommender,
    exclude_known,
)
from ranker.evaluation.datasets import InteractionData
from ranker.evaluation.splits import PROTOCOL_RANDOM, PROTOCOL_TEMPORAL, Part, Split, make_split

DEFAULT_KS = (5, 10, 20)
ModelFactory = Callable[[int], Recommender]  # seed -> unfitted model

# Defaults from a light grid on the *validation* part of protocol (a), seed 42, by NDCG@10, on mal-completed
# and mal-rating23 (one setting for both): EASE reg in {50, 200, 500, 1000, 2000} -> 200 (best on completed,
# 0.004 behind 50 on rating23); ItemKNN k in {20, 50, 100, 200, 500} -> 50; BPR-MF over factors, epochs, lr
# and L2 -> 64 factors, 30 epochs, lr 5e-3, L2 1e-2. Popularity has nothing to tune.
DEFAULT_MODELS: dict[str, ModelFactory] = {
    "pop": lambda seed: Popularity(),
    "itemknn": lambda seed: ItemKNN(neighbours=50),
    "ease": lambda seed: EASE(reg=200.0),
    "bpr-mf": lambda seed: BPRMF(BPRConfig(seed=seed)),
}


@dataclass(frozen=True)
class EvalRecord:
    dataset: str
    protocol: str
    model: str
    seed: int
    metrics: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "protocol": self.protocol,
            "model": self.model,
            "seed": self.seed,
            "metrics": self.metrics,
        }


def ranked_lists(
    model: Recommender, users: npt.NDArray[np.int64], known: npt.NDArray[np.float32], batch_size: int = 512
) -> list[npt.NDArray[np.int64]]:
    """Each user's full ranking of the items not in ``known`` (best first). Ties keep item-index order
    (stable sort), so a model that scores everything equally is ranked deterministically."""
    out: list[npt.NDArray[np.int64]] = []
    for start in range(0, users.size, batch_size):
        batch = users[start : start + batch_size]
        scores = exclude_known(model.score(batch), known[batch])
        order = np.argsort(-scores, axis=1, kind="stable")
        n_known = (known[batch] > 0).sum(axis=1)
        out.extend(order[r, : order.shape[1] - int(n_known[r])].astype(np.int64) for r in range(batch.size))
    return out


def ranking_metrics(
    lists: Sequence[npt.NDArray[np.int64]],
    relevant: Sequence[set[int]],
    ks: Sequence[int],
    n_items: int,
    head: set[int],
    item_embeddings: npt.NDArray[np.floating] | None,
) -> dict[str, float]:
    """Per-user metrics averaged over users, plus list-set metrics (coverage, long tail) per K."""
    sums: dict[str, float] = {}

    def add(name: str, value: float) -> None:
        sums[name] = sums.get(name, 0.0) + value

    for ranked, rel in zip(lists, relevant, strict=True):
        add("mrr", m.reciprocal_rank(ranked, rel))
        for k in ks:
            top = ranked[:k]
            add(f"precision@{k}", m.precision_at_k(top, rel, k))
            add(f"recall@{k}", m.recall_at_k(top, rel, k))
            add(f"ndcg@{k}", m.ndcg_at_k(top, rel, k))
            add(f"hit@{k}", m.hit_at_k(top, rel, k))
            add(f"map@{k}", m.average_precision_at_k(top, rel, k))
            add(f"mrr@{k}", m.reciprocal_rank(top, rel, k))
            if item_embeddings is not None:
                add(f"ild@{k}", m.intra_list_distance(top, item_embeddings))
    n = len(lists)
    out = {name: total / n for name, total in sums.items()}
    for k in ks:
        tops = [ranked[:k] for ranked in lists]
        out[f"coverage@{k}"] = m.catalogue_coverage(tops, n_items)
        out[f"long_tail@{k}"] = m.long_tail_share(tops, head)
    out["users"] = float(n)
    return dict(sorted(out.items()))


def evaluate_model(
    model: Recommender,
    split: Split,
    *,
    part: Part | str = Part.TEST,
    ks: Sequence[int] = DEFAULT_KS,
    item_embeddings: npt.NDArray[np.floating] | None = None,
    model_name: str | None = None,
) -> EvalRecord:
    """Evaluate an already fitted ``model`` (fitted on ``split.train_matrix()``) on ``part`` of ``split``."""
    data = split.data
    known = data.matrix(split.known_rows(part))
    train = split.train_matrix()
    relevant_by_user = split.relevant(part)
    users = np.array(sorted(relevant_by_user), dtype=np.int64)
    lists = ranked_lists(model, users, known)
    # The popularity head is defined on training interactions: what the model could have seen.
    head = m.head_items(train.sum(axis=0))
    embeddings = item_embeddings if item_embeddings is not None else train.T
    metrics = ranking_metrics(
        lists, [relevant_by_user[int(u)] for u in users], ks, data.n_items, head, embeddings
    )
    return EvalRecord(data.name, split.protocol, model_name or model.name, split.seed, metrics)


def select_on_validation(
    split: Split, candidates: Mapping[str, ModelFactory], metric: str = "ndcg@10", ks: Sequence[int] = (10,)
) -> tuple[str, dict[str, float]]:
    """Fit each candidate on train, score it on validation; the best name and every candidate's score."""
    scores: dict[str, float] = {}
    for name, factory in candidates.items():
        model = factory(split.seed).fit(split.train_matrix())
        scores[name] = evaluate_model(model, split, part=Part.VALIDATION, ks=ks).metrics[metric]
    return max(scores, key=lambda name: scores[name]), scores


def _protocols_for(data: InteractionData, protocols: Sequence[str]) -> list[str]:
    # The temporal protocol needs real timestamps; the MAL sets have none, so it is skipped for them.
    return [p for p in protocols if p != PROTOCOL_TEMPORAL or data.has_timestamps]


def run_eval(
    datasets: Mapping[str, InteractionData],
    models: Mapping[str, ModelFactory],
    seeds: Sequence[int],
    out_path: Path,
    *,
    protocols: Sequence[str] = (PROTOCOL_RANDOM,),
    ks: Sequence[int] = DEFAULT_KS,
    progress: bool = True,
) -> list[EvalRecord]:
    """Evaluate every model on every dataset x protocol x seed; write ``out_path`` (JSON list of records)
    and ``out_path.with_suffix('.md')`` (a markdown summary table). Returns the records."""
    jobs = [
        (name, protocol, seed, model_name)
        for name, data in datasets.items()
        for protocol in _protocols_for(data, protocols)
        for seed in seeds
        for model_name in models
    ]
    records: list[EvalRecord] = []
    seconds: dict[tuple[str, str], float] = {}
    splits: dict[tuple[str, str, int], Split] = {}
    with tqdm(total=len(jobs), desc="eval", unit="run", disable=not progress) as bar:
        for name, protocol, seed, model_name in jobs:
            bar.set_postfix_str(f"{name} {model_name} seed={seed}")
            key = (name, protocol, seed)
            if key not in splits:
                splits.clear()  # one split in memory at a time
                splits[key] = make_split(datasets[name], protocol, seed)
            split = splits[key]
            started = time.perf_counter()
            model = models[model_name](seed).fit(split.train_matrix())
            record = evaluate_model(model, split, ks=ks, model_name=model_name)
            seconds[(name, model_name)] = seconds.get((name, model_name), 0.0) + time.perf_counter() - started
            records.append(EvalRecord(name, protocol, model_name, seed, record.metrics))
            bar.update()
    write_reports(records, datasets, seconds, out_path)
    return records


def write_reports(
    records: Sequence[EvalRecord],
    datasets: Mapping[str, InteractionData],
    seconds: Mapping[tuple[str, str], float],
    out_path: Path,
) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps([r.as_dict() for r in records], indent=2) + "\n", encoding="utf-8")
    out_path.with_suffix(".md").write_text(markdown_report(records, datasets, seconds), encoding="utf-8")


_TABLE_METRICS = (
    "ndcg@10",
    "mrr",
    "recall@10",
    "precision@10",
    "hit@10",
    "map@10",
    "coverage@10",
    "long_tail@10",
)


def _cell(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def markdown_report(
    records: Sequence[EvalRecord],
    datasets: Mapping[str, InteractionData],
    seconds: Mapping[tuple[str, str], float] | None = None,
) -> str:
    """Mean (± sample std over seeds when there are several) of the headline metrics per dataset x protocol x
    model, plus the data sets' sizes and the fit+evaluate time per model summed over seeds."""
    lines = [
        "# Offline ranking evaluation",
        "",
        "## Data (5-core)",
        "",
        "| dataset | users | items | interactions | density |",
        "|---|---|---|---|---|",
    ]
    for name, data in datasets.items():
        s = data.stats()
        lines.append(f"| {name} | {s.users} | {s.items} | {s.interactions} | {s.density:.4f} |")
    lines += [
        "",
        "## Results (test part, full ranking, known items excluded)",
        "",
        "| dataset | protocol | model | seeds | " + " | ".join(_TABLE_METRICS) + " | time (s) |",
        "|---" * (len(_TABLE_METRICS) + 5) + "|",
    ]
    groups: dict[tuple[str, str, str], list[EvalRecord]] = {}
    for r in records:
        groups.setdefault((r.dataset, r.protocol, r.model), []).append(r)
    for (dataset, protocol, model), rs in groups.items():
        cells = [_cell([r.metrics[name] for r in rs]) for name in _TABLE_METRICS]
        took = (seconds or {}).get((dataset, model))
        lines.append(
            f"| {dataset} | {protocol} | {model} | {','.join(str(r.seed) for r in rs)} | "
            + " | ".join(cells)
            + f" | {'' if took is None else f'{took:.1f}'} |"
        )
    return "\n".join(lines) + "\n"
