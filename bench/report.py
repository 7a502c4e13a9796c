"""Headline keys of reports/bench.json and the markdown rendering of a whole report."""

from __future__ import annotations

from typing import Any

# Keys whose value is null, with the reason (filled in by ``headline``).
Reasons = dict[str, str]


def headline(report: dict[str, Any]) -> dict[str, Any]:
    sizes = report["retrieval"]["sizes"]
    ingest = report["ingest"]
    reasons: Reasons = {}
    out: dict[str, Any] = {
        "ingest_events_per_s": ingest.get("ingest_events_per_s"),
        "ingest_vs_raw_ratio": ingest.get("ingest_vs_raw_ratio"),
    }
    if out["ingest_events_per_s"] is None:
        reasons["ingest_events_per_s"] = reasons["ingest_vs_raw_ratio"] = ingest.get("error", "not measured")

    at100k = sizes.get("100000")
    if at100k:
        kind = at100k["api_index_kind"]
        entry = at100k["methods"][kind]
        out["recommend_p99_ms_100k"] = entry["p99_ms"]["median"]
        out["recommend_qps_100k"] = entry["qps"]["median"]
        out["recommend_source_100k"] = (
            f"proxy: ItemIndex search only ({kind}, the kind llmrec.index_build.choose_kind picks for 100k "
            f"items, params {entry['params']}, k={at100k['k']}, one OpenMP thread per call as in the API); "
            "p99 = median over repeats of per-repeat single-query p99; qps = median with 8 client threads. "
            "Excludes gRPC, PostgreSQL profile reads and fusion re-ranking: the real ApiServer was not run."
        )
    else:
        out["recommend_p99_ms_100k"] = out["recommend_qps_100k"] = None
        reasons["recommend_p99_ms_100k"] = reasons["recommend_qps_100k"] = "100k size not run"

    at1m = sizes.get("1000000")
    if at1m:
        out["ann_recall100_1m"] = at1m["methods"][at1m["api_index_kind"]]["recall100"]
    else:
        out["ann_recall100_1m"] = None
        reasons["ann_recall100_1m"] = "1M items are only run without --quick"
    out["api_rss_mb_1m"] = None
    reasons["api_rss_mb_1m"] = (
        "not implemented yet: needs the API process serving a 1M-item index and its RSS sampled; the "
        "retrieval section reports the index's own memory instead"
    )
    out["null_reasons"] = reasons
    return out


def _spread(s: dict[str, Any], digits: int = 2) -> str:
    if not s or s.get("median") is None:
        return "n/a"
    f = f"{{:.{digits}f}}"
    return f"{f.format(s['median'])} [{f.format(s['min'])}–{f.format(s['max'])}] (n={s['n']})"


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# llmrec benchmark report",
        "",
        f"Command: `{report['command']}` ({report['mode']} mode), started {report['started_at']}, "
        f"took {report['wall_s']:.0f} s.",
        "",
        "Medians are given as `median [min–max] (n=repeats)`; every comparison is against a baseline "
        "measured in this same run.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu_model']}, {m['logical_cores']} logical cores ({m['usable_cores']} usable)",
        f"- memory: {m['memory_gib']} GiB; OS: {m['os']}; Python {m['python']}",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()),
        "",
        "## Headline",
        "",
        "| key | value |",
        "|---|---|",
    ]
    for key in (
        "ingest_events_per_s",
        "ingest_vs_raw_ratio",
        "recommend_p99_ms_100k",
        "recommend_qps_100k",
        "ann_recall100_1m",
        "api_rss_mb_1m",
    ):
        value = report.get(key)
        text = (
            f"{value:.4g}"
            if isinstance(value, float)
            else ("null — " + report["null_reasons"].get(key, "") if value is None else str(value))
        )
        lines.append(f"| `{key}` | {text} |")
    if report.get("recommend_source_100k"):
        lines += ["", f"`recommend_*_100k`: {report['recommend_source_100k']}"]

    r = report["retrieval"]
    lines += ["", "## Retrieval", "", f"Target recall@100 for tuning: {r['recall_target']}.", ""]
    for n, size in r["sizes"].items():
        lines += [
            f"### {int(n):,} items × {size['dim']}-d "
            f"(k={size['k']}; API would use `{size['api_index_kind']}`)",
            "",
            f"- item vectors: {size['vectors']}",
            f"- queries: {size['queries']}",
            "",
            "| method | params | build s | memory MB | recall@100 | recall@100 (ItemIndex defaults) "
            "| p50 ms | p99 ms | qps (8 threads) | p50 speed-up vs numpy | qps vs numpy |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, e in size["methods"].items():
            default_recall = e.get("recall100_default_params")
            default_cell = "—" if default_recall is None else f"{default_recall:.4f} at {e['default_params']}"
            lines.append(
                f"| {name}{' (baseline)' if e.get('role') == 'baseline' else ''} | {e['params'] or '—'} "
                f"| {e['build_s']:.2f} | {e['memory_mb']:.0f} | {e['recall100']:.4f} "
                f"| {default_cell} "
                f"| {_spread(e['p50_ms'], 3)} | {_spread(e['p99_ms'], 3)} | {_spread(e['qps'], 0)} "
                f"| {e['p50_speedup_vs_numpy']:.2f}× | {e['qps_vs_numpy']:.2f}× |"
            )
        for name in ("ivf", "hnsw"):
            e = size["methods"].get(name)
            if e and "tuning" in e:
                trials = ", ".join(f"{next(iter(t.values()))}→{t['recall100']:.3f}" for t in e["tuning"])
                reached = "reached" if e["target_reached"] else "NOT reached (largest tried kept)"
                lines.append(f"\n{name} tuning (setting→recall@100): {trials}; target {reached}.")
        lines.append("")

    g = report["ingest"]
    lines += ["## Ingest", ""]
    if g.get("error"):
        lines.append(f"Not measured: {g['error']}")
    if g.get("worker"):
        w = g["worker"]
        lines += [
            f"{g['events']:,} events (3 ratings : 1 watch; {g['users']} users, {g['items']} items, "
            f"{g['partitions']} partitions per topic) on a real Kafka broker and PostgreSQL (fsync on) "
            "started "
            f"for the run in {g['services_start_s']:.1f} s; published in {g['publish_s']:.2f} s "
            f"({g['publish_events_per_s']:.0f} events/s).",
            "",
            "| measurement | events/s | definition |",
            "|---|---|---|",
            f"| raw consume (baseline) | {_spread(g['raw_consume_events_per_s'], 0)} | plain confluent-kafka "
            "`consume` loop, new group, from the beginning, no parsing: N / (last message − assign) |",
            f"| worker end to end | {w['ingest_events_per_s']:.0f} | `python -m stream`: N / (ledger holds N "
            "− `worker ready` in its log); ledger polled every 0.2 s |",
            f"| worker, 1-s windows | {_spread(w['window_rates_per_s'], 0)} | ledger growth per ~1 s window "
            "within the same run (spread of the single run) |",
            "",
            f"Worker start-up (spawn to `worker ready`): {w['startup_s']:.1f} s, not counted above; "
            f"apply time {w['apply_s']:.2f} s; {w['batches_logged']} `batch processed` log lines. "
            f"ingest_vs_raw_ratio = {g['ingest_vs_raw_ratio']:.4f}. One worker run per invocation: the "
            "whole-run rate has no repeat spread.",
        ]
    lines += ["", "## Not measured", ""]
    for key, why in report["null_reasons"].items():
        lines.append(f"- `{key}`: {why}")
    return "\n".join(lines) + "\n"
