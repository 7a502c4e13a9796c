"""Full-ranking offline evaluation: every item is a candidate, minus what the user is already known to have.

For the test part the model is fitted on train only (hyper-parameters are chosen on validation beforehand)
and each user's train *and* validation items are removed from the ranking; for the validation part only the
train items are removed. There is no negative sampling, so the figures are comparable across models here but
not with the paper's unpublished protocol.

``run_eval`` writes ``reports/eval.json`` (a JSON list of records, one per dataset x protocol x model x seed)
and a markdown table beside it (``eval.md``). It *merges*: records already in the file with the same
(dataset, protocol, model, seed) are replaced, all others kept, so a model can be added (``llmrec eval
--models llmrec``) without rerunning the rest; the markdown is rebuilt from the merged list.

Users held out of training (protocol (d) cold, ``Split.fold_in``) are scored by ``Recommender.score_history``
from their given interactions; everyone else by ``Recommender.score``.

A split may be scored in several rankings (``splits.views``): protocol (e)'s split gives a ``cold_items``
record (every item ranked) and a ``cold_items_only`` record (only the part's cold items ranked: the other
items are removed like known ones, and ``coverage@K`` is over those items), from one fit of the model. Two
records rather than one with two sets of metrics, so that every record keeps the same metric names and the
tables, merges and gains read them unchanged. Protocol (e) runs only on data sets with item text.

Record shape::

    {"dataset": "mal-completed", "protocol": "user_random_80_10_10", "model": "ease", "seed": 42,
     "metrics": {"ndcg@10": ..., "mrr": ..., "recall@10": ..., "precision@10": ..., "hit@10": ...,
                 "map@10": ..., "mrr@10": ..., "coverage@10": ..., "long_tail@10": ..., "ild@10": ...,
                 ... the same for every K ..., "users": <users evaluated>,
                 "fit_s": <seconds to fit>, "infer_ms_per_user": <scoring time per evaluated user, ms>}}

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

from ranker.interactions import InteractionData
from ranker.model.base import FitContext, Recommender
from research import metrics as m
from research.baselines import BPRMF, EASE, BPRConfig, ItemKNN, Popularity, exclude_known
from research.splits import (
    PROTOCOL_COLD_ITEMS,
    PROTOCOL_COLD_ITEMS_ONLY,
    PROTOCOL_RANDOM,
    PROTOCOL_TEMPORAL,
    TEXT_PROTOCOLS,
    Part,
    Split,
    make_split,
    views,
)

DEFAULT_KS = (5, 10, 20)
ModelFactory = Callable[[int], Recommender]  # seed -> unfitted model
Features = npt.NDArray[np.float32]

# The original hand-tuned subset, kept for callers that want no registry; ``registry.MODEL_SPECS`` holds
# every baseline with its search space, and ``llmrec eval`` uses the tuned parameters from
# ``reports/tuned_params.json``.
DEFAULT_MODELS: dict[str, ModelFactory] = {
    "pop": lambda seed: Popularity(),
    "itemknn": lambda seed: ItemKNN(neighbours=50),
    "ease": lambda seed: EASE(reg=200.0),
    "bpr": lambda seed: BPRMF(BPRConfig(seed=seed)),
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


def fit_context(split: Split, item_features: Features | None = None) -> FitContext:
    """Everything a model may train on besides the matrix: the training rows only (never held-out ones)."""
    return FitContext(
        sequences=split.sequences(),
        item_features=item_features,
        data=split.data,
        train_rows=split.train,
    )


def fit_on_split(model: Recommender, split: Split, item_features: Features | None = None) -> Recommender:
    return model.fit(split.train_matrix(), fit_context(split, item_features))


Scorer = Callable[[npt.NDArray[np.int64]], npt.NDArray[np.float32]]


def split_scorer(model: Recommender, split: Split, part: Part | str = Part.TEST) -> Scorer:
    """Scores for a batch of user indices: ``score`` for trained users, fold-in from ``split.fold_in`` for
    users with no training rows but given ones (protocol (d) cold). A model that
    ``reads_history_at_test`` scores every user of the test part from all rows known before it."""
    if Part(part) is Part.TEST and model.reads_history_at_test:
        return history_scorer(model, split, split.known_rows(Part.TEST))
    if split.fold_in.size == 0:
        return model.score
    data = split.data
    given = data.matrix(split.fold_in)
    sequences = split.sequences(split.fold_in)
    folded = np.zeros(data.n_users, dtype=bool)
    folded[data.users[split.fold_in]] = True

    def score(users: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        out = np.empty((users.size, data.n_items), dtype=np.float32)
        cold = folded[users]
        if (~cold).any():
            out[~cold] = model.score(users[~cold])
        if cold.any():
            picked = users[cold]
            out[cold] = model.score_history(given[picked], [sequences[u] for u in picked.tolist()])
        return out

    return score


def history_scorer(model: Recommender, split: Split, rows: npt.NDArray[np.int64]) -> Scorer:
    """Scores for a batch of user indices, each user folded in from their ``rows`` (time order)."""
    history = split.data.matrix(rows)
    sequences = split.sequences(rows)

    def score(users: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        return model.score_history(history[users], [sequences[u] for u in users.tolist()])

    return score


def ranked_lists(
    model: Recommender | Scorer,
    users: npt.NDArray[np.int64],
    known: npt.NDArray[np.float32],
    batch_size: int = 512,
    timing: list[float] | None = None,
    tie_order: npt.NDArray[np.int64] | None = None,
) -> list[npt.NDArray[np.int64]]:
    """Each user's full ranking of the items not in ``known`` (best first). Ties keep item-index order
    (stable sort), or ``tie_order``'s order when given (a permutation of the items), so a model that scores
    everything equally is ranked deterministically. ``timing``, when given, receives the seconds spent in
    the model's scoring calls (not the sorting)."""
    scorer = model.score if isinstance(model, Recommender) else model
    out: list[npt.NDArray[np.int64]] = []
    for start in range(0, users.size, batch_size):
        batch = users[start : start + batch_size]
        started = time.perf_counter()
        raw = scorer(batch)
        if timing is not None:
            timing.append(time.perf_counter() - started)
        scores = exclude_known(raw, known[batch])
        if tie_order is None:
            order = np.argsort(-scores, axis=1, kind="stable")
        else:
            # Sort the columns laid out in tie order: the stable sort then keeps that order among equals.
            order = tie_order[np.argsort(-scores[:, tie_order], axis=1, kind="stable")]
        n_known = (known[batch] > 0).sum(axis=1)
        out.extend(order[r, : order.shape[1] - int(n_known[r])].astype(np.int64) for r in range(batch.size))
    return out


def known_matrix(split: Split, part: Part | str) -> npt.NDArray[np.float32]:
    """Users x items, 1 where an item is out of ``part``'s ranking: the user already knows it (``known_rows``)
    or it is not among the split's candidates for the part (protocol (e)'s cold-only ranking)."""
    known = split.data.matrix(split.known_rows(part))
    pool = split.candidate_items(part)
    if pool is not None:
        outside = np.ones(split.data.n_items, dtype=bool)
        outside[pool] = False
        known[:, outside] = 1.0
    return known


def split_rankings(
    model: Recommender,
    split: Split,
    part: Part | str,
    users: npt.NDArray[np.int64],
    timing: list[float] | None = None,
) -> list[npt.NDArray[np.int64]]:
    """Each of ``users``' ranking for ``part`` of ``split``: the items it ranks (``known_matrix``), best
    first, equal scores in the split's ``tie_order``."""
    known = known_matrix(split, part)
    scorer = split_scorer(model, split, part)
    if model.ranks_within_allowed and scorer == model.score:
        # The items of this ranking are what the model may rank, as a filtered request online.

        def scorer(batch: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
            return model.score_within(batch, known[batch] <= 0)

    return ranked_lists(scorer, users, known, timing=timing, tie_order=split.tie_order)


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
    diversity: bool = True,
) -> EvalRecord:
    """Evaluate an already fitted ``model`` (fitted on ``split.train_matrix()``) on ``part`` of ``split``.
    The metrics include ``infer_ms_per_user`` (scoring time only); ``diversity=False`` skips ILD (tuning
    needs only the accuracy metric)."""
    data = split.data
    train = split.train_matrix()
    relevant_by_user = split.relevant(part)
    users = np.array(sorted(relevant_by_user), dtype=np.int64)
    timing: list[float] = []
    lists = split_rankings(model, split, part, users, timing=timing)
    # The popularity head is defined on training interactions: what the model could have seen.
    head = m.head_items(train.sum(axis=0))
    base = item_embeddings if item_embeddings is not None else train.T
    embeddings = np.ascontiguousarray(base) if diversity else None
    pool = split.candidate_items(part)
    n_ranked = data.n_items if pool is None else int(pool.size)
    metrics = ranking_metrics(
        lists, [relevant_by_user[int(u)] for u in users], ks, n_ranked, head, embeddings
    )
    metrics["infer_ms_per_user"] = 1000.0 * sum(timing) / max(1, users.size)
    return EvalRecord(data.name, split.protocol, model_name or model.name, split.seed, metrics)


def select_on_validation(
    split: Split, candidates: Mapping[str, ModelFactory], metric: str = "ndcg@10", ks: Sequence[int] = (10,)
) -> tuple[str, dict[str, float]]:
    """Fit each candidate on train, score it on validation; the best name and every candidate's score."""
    scores: dict[str, float] = {}
    for name, factory in candidates.items():
        model = fit_on_split(factory(split.seed), split)
        scores[name] = evaluate_model(model, split, part=Part.VALIDATION, ks=ks).metrics[metric]
    return max(scores, key=lambda name: scores[name]), scores


def _protocols_for(data: InteractionData, protocols: Sequence[str], has_text: bool) -> list[str]:
    """The requested protocols that apply to ``data``: the temporal one needs real timestamps (the MAL sets
    have none), the cold-item ones item text. ``cold_items`` already scores the cold-only ranking, so a
    separate ``cold_items_only`` request beside it is dropped rather than fitted twice."""
    out = [
        p
        for p in protocols
        if (p != PROTOCOL_TEMPORAL or data.has_timestamps) and (p not in TEXT_PROTOCOLS or has_text)
    ]
    if PROTOCOL_COLD_ITEMS in out:
        out = [p for p in out if p != PROTOCOL_COLD_ITEMS_ONLY]
    return list(dict.fromkeys(out))


ModelsFor = Callable[[InteractionData], Mapping[str, ModelFactory]]


def run_eval(
    datasets: Mapping[str, InteractionData],
    models: Mapping[str, ModelFactory] | ModelsFor,
    seeds: Sequence[int],
    out_path: Path,
    *,
    protocols: Sequence[str] = (PROTOCOL_RANDOM,),
    ks: Sequence[int] = DEFAULT_KS,
    progress: bool = True,
    item_features: Mapping[str, Features] | None = None,
    seeds_for: Callable[[str], Sequence[int]] | None = None,
) -> list[EvalRecord]:
    """Evaluate every model on every dataset x protocol x seed; merge the records into ``out_path`` (JSON
    list, rewritten after every run) and rebuild ``out_path.with_suffix('.md')`` from the merged list.
    Returns this run's records; a split with several rankings (``splits.views``) gives one record per
    ranking, each from the same fit.

    ``models`` may depend on the data set (a callable), e.g. tuned parameters per data set or sequential
    models only where timestamps exist. ``seeds_for(protocol)`` overrides ``seeds`` per protocol."""
    features = item_features or {}
    jobs: list[tuple[str, str, int, str, ModelFactory]] = []
    for name, data in datasets.items():
        chosen = models(data) if callable(models) else models
        for protocol in _protocols_for(data, protocols, name in features):
            for seed in seeds_for(protocol) if seeds_for else seeds:
                jobs.extend((name, protocol, seed, model_name, chosen[model_name]) for model_name in chosen)
    records: list[EvalRecord] = []
    merged = read_records(out_path)
    splits: dict[tuple[str, str, int], Split] = {}
    with tqdm(total=len(jobs), desc="eval", unit="run", disable=not progress) as bar:
        for name, protocol, seed, model_name, factory in jobs:
            bar.set_postfix_str(f"{name} {protocol} {model_name} seed={seed}")
            key = (name, protocol, seed)
            if key not in splits:
                splits.clear()  # one split in memory at a time
                splits[key] = make_split(datasets[name], protocol, seed)
            split = splits[key]
            started = time.perf_counter()
            model = fit_on_split(factory(seed), split, features.get(name))
            fit_s = time.perf_counter() - started
            fresh: list[EvalRecord] = []
            for view in views(split):
                record = evaluate_model(model, view, ks=ks, model_name=model_name)
                metrics = dict(sorted({**record.metrics, "fit_s": fit_s}.items()))
                fresh.append(EvalRecord(name, view.protocol, model_name, seed, metrics))
            records.extend(fresh)
            # Written after every run, so an interrupted evaluation keeps what it finished.
            merged = merge_records(merged, fresh)
            write_reports(merged, datasets, out_path)
            bar.update()
    return records


def read_records(path: Path) -> list[EvalRecord]:
    if not path.is_file():
        return []
    raw = json.loads(path.read_text(encoding="utf-8"))
    return [EvalRecord(r["dataset"], r["protocol"], r["model"], int(r["seed"]), r["metrics"]) for r in raw]


def merge_records(old: Sequence[EvalRecord], new: Sequence[EvalRecord]) -> list[EvalRecord]:
    """``old`` with every record that ``new`` re-measures (same dataset, protocol, model, seed) replaced,
    in place; records new to the file are appended in their order."""

    def key(r: EvalRecord) -> tuple[str, str, str, int]:
        return (r.dataset, r.protocol, r.model, r.seed)

    fresh = {key(r): r for r in new}
    out = [fresh.pop(key(r), r) for r in old]
    out.extend(r for r in new if key(r) in fresh)
    return out


def write_reports(
    records: Sequence[EvalRecord],
    datasets: Mapping[str, InteractionData],
    out_path: Path,
) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps([r.as_dict() for r in records], indent=2) + "\n", encoding="utf-8")
    out_path.with_suffix(".md").write_text(markdown_report(records, datasets), encoding="utf-8")


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


def markdown_report(records: Sequence[EvalRecord], datasets: Mapping[str, InteractionData]) -> str:
    """Mean (± sample std over seeds when there are several) of the headline metrics per dataset x protocol x
    model, plus the data sets' sizes and each model's mean fit time and scoring time per user."""
    lines = [
        "# Offline ranking evaluation",
        "",
        "Regenerated by `llmrec eval` (records in eval.json; this run's data sets below). Protocols: "
        "user_random_80_10_10 = (a), item_stratified_80_20 = (b), temporal_leave_last_out = (c), "
        "sparse_users_1_5 and cold_users_fold_in = (d), cold_items (every item ranked) and cold_items_only "
        "(the held-out items ranked among themselves) = (e); definitions in research/splits.py.",
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
        "| dataset | protocol | model | seeds | "
        + " | ".join(_TABLE_METRICS)
        + " | fit (s) | infer (ms/user) |",
        "|---" * (len(_TABLE_METRICS) + 6) + "|",
    ]
    groups: dict[tuple[str, str, str], list[EvalRecord]] = {}
    for r in records:
        groups.setdefault((r.dataset, r.protocol, r.model), []).append(r)
    for (dataset, protocol, model), rs in sorted(groups.items()):
        cells = [_cell([r.metrics[name] for r in rs]) for name in _TABLE_METRICS]
        timings = [
            f"{statistics.fmean(values):.2f}" if values else ""
            for values in (
                [r.metrics[t] for r in rs if t in r.metrics] for t in ("fit_s", "infer_ms_per_user")
            )
        ]
        lines.append(
            f"| {dataset} | {protocol} | {model} | {','.join(str(r.seed) for r in rs)} | "
            + " | ".join(cells + timings)
            + " |"
        )
    return "\n".join(lines + _cold_item_lines(groups)) + "\n"


# Protocol (e) is read at K = 20 (a cold item competes with the whole warm catalogue in its first ranking).
_COLD_METRICS = ("ndcg@20", "recall@20", "hit@20", "mrr", "coverage@20")


def _cold_item_lines(groups: Mapping[tuple[str, str, str], Sequence[EvalRecord]]) -> list[str]:
    """A table of protocol (e)'s records at K = 20; nothing when there are none."""
    cold = {key: rs for key, rs in groups.items() if key[1].startswith(PROTOCOL_COLD_ITEMS)}
    if not cold:
        return []
    lines = [
        "",
        "## Cold items (protocol (e), test part, K = 20)",
        "",
        "| dataset | protocol | model | seeds | " + " | ".join(_COLD_METRICS) + " |",
        "|---" * (len(_COLD_METRICS) + 4) + "|",
    ]
    for (dataset, protocol, model), rs in sorted(cold.items()):
        cells = [
            _cell([r.metrics[name] for r in rs]) if all(name in r.metrics for r in rs) else ""
            for name in _COLD_METRICS
        ]
        seeds = ",".join(str(r.seed) for r in rs)
        lines.append(f"| {dataset} | {protocol} | {model} | {seeds} | " + " | ".join(cells) + " |")
    return lines
