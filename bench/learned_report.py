"""Headline keys and markdown of the served learned path (``bench.learned``)."""

from __future__ import annotations

from typing import Any

from bench.common import spread

SIZE_LABELS = {100_000: "100k", 1_000_000: "1m"}
FIT_LABELS = {0.25: "25", 0.5: "50", 0.75: "75", 1.0: "100"}
HEADLINE_CONCURRENCY = "8"

LEARNED_KEYS: tuple[str, ...] = (
    "recommend_learned_p99_ms_100k",
    "recommend_learned_qps_100k",
    "recommend_learned_p99_ms_100k_c1",
    "recommend_learned_qps_100k_c1",
    "recommend_learned_p99_ms_100k_c32",
    "recommend_learned_qps_100k_c32",
    "recommend_floor_ratio_100k",
    "recommend_learned_p99_ms_1m",
    "recommend_learned_qps_1m",
    "recommend_learned_p99_ms_1m_c1",
    "recommend_learned_qps_1m_c1",
    "recommend_learned_p99_ms_1m_c32",
    "recommend_learned_qps_1m_c32",
    "recommend_floor_ratio_1m",
    "ranker_fit_s_mal_25",
    "ranker_fit_s_mal_50",
    "ranker_fit_s_mal_75",
    "ranker_fit_s_mal_100",
    "ranker_fit_exponent",
    "ranker_fit_s_ledger_100k",
    "ranker_fit_s_ledger_1m",
    "ranker_artifact_bytes_per_item",
)


def _median(point: dict[str, Any] | None, metric: str) -> float | None:
    if not point:
        return None
    value = point.get(metric, {}).get("median")
    return None if value is None else float(value)


def learned_headline(
    report: dict[str, Any], reasons: dict[str, str], current: dict[str, Any]
) -> dict[str, Any]:
    """The learned path's headline keys (null with a reason in ``reasons`` when not measured). At 1M the
    API's RSS and the index's recall are those of the API serving the learned ranker, replacing the
    fusion-path figures in ``current`` when this section ran at 1M."""
    section = report.get("learned") or {}
    sizes = section.get("sizes", {})
    out: dict[str, Any] = {}
    why_not = section.get("error", "the learned-path section did not run")
    for n, label in SIZE_LABELS.items():
        point = sizes.get(str(n))
        missing = why_not if point is None else point.get("error")
        if point is None and n == 1_000_000 and not section.get("error"):
            missing = "1M items are only run without --quick"
        levels = (point or {}).get("concurrency", {})
        for suffix, c in (("", HEADLINE_CONCURRENCY), ("_c1", "1"), ("_c32", "32")):
            out[f"recommend_learned_p99_ms_{label}{suffix}"] = _median(levels.get(c), "p99_ms")
            out[f"recommend_learned_qps_{label}{suffix}"] = _median(levels.get(c), "qps")
        out[f"recommend_floor_ratio_{label}"] = (point or {}).get("floor_ratio")
        for key in [k for k in out if k.endswith(f"_{label}") or f"_{label}_c" in k]:
            if out[key] is None:
                reasons[key] = missing or "not measured"
        ledger_fit = (point or {}).get("training", {}).get("fit_s")
        out[f"ranker_fit_s_ledger_{label}"] = ledger_fit
        if ledger_fit is None:
            reasons[f"ranker_fit_s_ledger_{label}"] = missing or "not measured"

    at1m = sizes.get("1000000")
    if at1m and at1m.get("rss_mb") is not None:
        out["api_rss_mb_1m"] = at1m["rss_mb"]
        out["api_rss_mb_1m_source"] = (
            f"the API serving the learned ranker over the 1M-item {at1m['index']['kind']} index "
            f"({at1m['index']['params']}), VmRSS after the load (peak {at1m['peak_rss_mb']:.0f} MB)"
        )
        reasons.pop("api_rss_mb_1m", None)
        tuning = at1m["index"].get("tuning")
        if tuning:
            out["ann_recall100_1m"] = tuning[-1]["recall100"]
            out["ann_recall100_1m_source"] = (
                f"the learned API's 1M-item {at1m['index']['kind']} index, params {at1m['index']['params']}, "
                "recall@100 against exact search on 200 user-like queries (serving.index_folder tuning)"
            )
            reasons.pop("ann_recall100_1m", None)
    elif current.get("api_rss_mb_1m") is not None:
        out["api_rss_mb_1m_source"] = (
            "the serving section's fusion-path API (the learned path did not run at 1M)"
        )

    fit = section.get("fit_scaling") or {}
    points = {FIT_LABELS.get(p["fraction"], str(p["fraction"])): p["fit_s"] for p in fit.get("points", [])}
    fit_reason = fit.get("error") or (
        "mal-completed fit scaling is only run without --quick" if not section.get("error") else why_not
    )
    for label in FIT_LABELS.values():
        out[f"ranker_fit_s_mal_{label}"] = points.get(label)
        if points.get(label) is None:
            reasons[f"ranker_fit_s_mal_{label}"] = fit_reason
    out["ranker_fit_exponent"] = fit.get("exponent")
    if out["ranker_fit_exponent"] is None:
        reasons["ranker_fit_exponent"] = fit_reason
    per_item = None
    for n in sorted(SIZE_LABELS, reverse=True):
        training = sizes.get(str(n), {}).get("training")
        if training:
            per_item = training["artifact_bytes_per_item"]
            break
    out["ranker_artifact_bytes_per_item"] = per_item
    if per_item is None:
        reasons["ranker_artifact_bytes_per_item"] = why_not
    return out


def _size_lines(n: str, p: dict[str, Any], report: dict[str, Any]) -> list[str]:
    t, idx = p["training"], p["index"]
    floor = p["floor"]
    floor_qps = floor["qps"]["median"]
    check = p["check"]
    lines = [
        f"### {int(n):,} items: {idx['kind']} index {idx['params']}",
        "",
        f"Ledger: {p['ledger_interactions']:,} ratings by users of structured tastes over "
        f"{p['distinct_items_touched']:,} distinct catalogue items, written through the store in "
        f"{p['user_write_s']:.1f} s. Ranker trained from it (`train_ranker_from_ledger`, 2-core filter): "
        f"{t['users']:,} users x {t['items']:,} items ({t['interactions']:,} interactions) in "
        f"{t['fit_s']:.1f} s (ledger read + fit + save); artifact {t['artifact_bytes'] / 2**20:.1f} MB = "
        f"{t['artifact_bytes_per_item']:.0f} bytes per universe item. API start-up "
        f"{p['api_startup_s']:.1f} s, `api.scoring_threads` = {p['scoring_threads']}.",
        "",
        f"Answers checked one by one: {check['model_version_matches']}/{check['checked']} name the "
        f"ranker's version in `model_version` (e.g. `{check['example_model_version']}`), "
        f"{check['personalized']}/{check['checked']} `personalized`, {check['k_items']}/{check['checked']} "
        f"with k items. During the load the API counted "
        + ", ".join(f"{k} {v:.0f}" for k, v in p.get("answers_during_load", {}).items())
        + f" answers (ranker/strategy): learned share {p.get('learned_share_during_load') or 0:.3f}.",
        "",
        "| served learned path, connections | p50 ms | p99 ms | req/s | req/s / floor at 8 | errors |",
        "|---|---|---|---|---|---|",
    ]
    for c, point in p["concurrency"].items():
        lines.append(
            f"| {c} | {spread(point['p50_ms'])} | {spread(point['p99_ms'])} | {spread(point['qps'], 0)} "
            f"| {point['qps']['median'] / floor_qps:.3f} | {point['errors'] or 0} |"
        )
    lines.append(
        f"| floor (bare `grpc.aio`, fixed 10 items), {floor['concurrency']} | {spread(floor['p50_ms'])} "
        f"| {spread(floor['p99_ms'])} | {spread(floor['qps'], 0)} | 1 (baseline) "
        f"| {floor['errors'] or 0} |"
    )
    fusion = (report.get("serving") or {}).get("items", {}).get(n)
    served = p["concurrency"].get(HEADLINE_CONCURRENCY)
    if fusion and served and fusion.get("qps", {}).get("median"):
        lines += [
            "",
            f"Against the fusion path of the same run (serving section, {int(n):,} items, "
            f"{fusion.get('concurrency', '?')} connections, no trained ranker): "
            f"{served['qps']['median'] / fusion['qps']['median']:.3f}x its requests/s "
            f"({fusion['qps']['median']:.0f}), p99 {served['p99_ms']['median']:.1f} ms vs "
            f"{fusion['p99_ms']['median']:.1f} ms.",
        ]
    cpu = p.get("api_cpu_ms_per_request")
    lines += [
        "",
        f"API CPU time per request over the load: {cpu:.1f} ms. API RSS after the load "
        f"{p['rss_mb']:.0f} MB (peak {p['peak_rss_mb']:.0f} MB)."
        if cpu is not None
        else f"API RSS after the load {p['rss_mb']:.0f} MB (peak {p['peak_rss_mb']:.0f} MB).",
    ]
    variant = p.get("variant")
    if variant:
        lines += [
            "",
            f"Diagnostic, same run: the same API started with {variant['env']} at "
            f"{variant['concurrency']} connections: p99 {spread(variant['p99_ms'])} ms, "
            f"{spread(variant['qps'], 0)} req/s ({variant['qps']['median'] / floor_qps:.3f} of the floor).",
        ]
    memory = p.get("memory_breakdown")
    if memory and not memory.get("error"):
        lines += ["", "Where the memory goes (RSS growth of a fresh process loading what the API loads):", ""]
        lines += [f"- {name}: {mb:.0f} MB" for name, mb in memory["steps_mb"].items()]
        lines.append(
            f"- total {memory['total_mb']:.0f} MB; of which the float32 embeddings array "
            f"{memory['embeddings_array_mb']:.0f} MB, the FAISS file {memory['faiss_file_mb']:.0f} MB "
            f"(IVF-flat holds another float32 copy of every vector), the ranker's own item vectors "
            f"{memory['ranker_vectors_mb']:.0f} MB."
        )
    quantised = p.get("quantised")
    if quantised and not quantised.get("error"):
        lines += [
            "",
            f"Prototype (bench code only) of quantised IVF codes on the same coarse quantiser "
            f"(nlist {quantised['nlist']}, nprobe {quantised['nprobe']}), {quantised['queries']} queries:",
            "",
            "| codes | recall@100 | recall@100 at larger nprobe | code MB |",
            "|---|---|---|---|",
        ]
        if quantised.get("note"):
            lines[-4] += f" ({quantised['note']})"
        for name, m in quantised["methods"].items():
            deeper = ", ".join(f"{p}→{r:.4f}" for p, r in m.get("recall100_by_nprobe", {}).items())
            lines.append(f"| {name} | {m['recall100']:.4f} | {deeper or '—'} | {m['code_mb']:.0f} |")
    return [*lines, ""]


def learned_lines(report: dict[str, Any]) -> list[str]:
    section = report.get("learned")
    lines = ["## Served learned path: Recommend through the API with the trained two-stage ranker", ""]
    if not section:
        return [*lines, "Not run.", ""]
    if section.get("error"):
        lines += [f"Not measured: {section['error']}", ""]
    plan = section.get("plan", {})
    if section.get("sizes"):
        lines += [
            "Every figure here is the served learned path: `llmrec serve` as its own process with a ranker "
            "trained from the PostgreSQL ledger in `CURRENT`, answering `Recommend(k=10)` through "
            "`RecommendationService._learned_items` (two-stage: sparse-EASE and ANN candidates re-scored by "
            "the fusion network). Load: `grpc_api.loadtest`, one client per connection, back to back, "
            f"random users; {plan.get('requests')} requests x {plan.get('repeats')} repeat(s) per "
            "connection count. Baseline of the same run: `bench.floor_server`, a bare `grpc.aio` server "
            "answering a fixed 10-item `RecommendResponse`, same proto, load generator, users and machine, "
            "repeats interleaved with the API's. The load generator, PostgreSQL and the API share the "
            "machine's cores.",
            "",
        ]
    for n, point in section.get("sizes", {}).items():
        if point.get("error"):
            lines += [f"### {int(n):,} items", "", f"Not measured: {point['error']}", ""]
        else:
            lines += _size_lines(n, point, report)
    fit = section.get("fit_scaling")
    if fit and not fit.get("error"):
        lines += [
            "### Ranker fit time (`LLMRec.fit`, as `train_ranker` builds the served ranker; "
            f"{fit['source']})",
            "",
            "| share of mal-completed | users | items | interactions | fit s |",
            "|---|---|---|---|---|",
        ]
        for p in fit["points"]:
            lines.append(
                f"| {p['fraction']:.0%} | {p['users']:,} | {p['items']:,} | {p['interactions']:,} "
                f"| {p['fit_s']:.1f} |"
            )
        b = fit["exponent"]
        lines += [
            "",
            f"Fit time ~ interactions^b: b = {'n/a' if b is None else f'{b:.2f}'} ({fit['growth']}).",
            "",
        ]
    elif fit:
        lines += [f"Fit scaling not measured: {fit['error']}", ""]
    load = section.get("load_average")
    if load:
        start, end = load["start"], load["end"]
        lines += [
            "Machine load (1/5/15-minute load averages) at the section's start "
            f"{start[0]:.2f}/{start[1]:.2f}/{start[2]:.2f} and end {end[0]:.2f}/{end[1]:.2f}/{end[2]:.2f} on "
            f"{report.get('machine', {}).get('usable_cores', '?')} usable cores: other sessions' evaluations "
            "shared the machine, so absolute rates move with them; the ratios are against the floor measured "
            "alongside.",
            "",
        ]
    if section.get("code_state"):
        lines += [f"Code measured: {section['code_state']}.", ""]
    return lines
