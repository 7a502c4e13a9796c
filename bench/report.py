"""Headline keys of reports/bench.json and the markdown rendering of a whole report."""

from __future__ import annotations

from typing import Any

from bench.catalogue import catalogue_headline, catalogue_keys
from bench.catalogue import markdown_lines as catalogue_lines
from bench.common import spread
from bench.encoder import markdown_lines
from bench.learned_report import LEARNED_KEYS, learned_headline, learned_lines
from bench.streaming_report import FRESHNESS_KEYS, freshness_headline, streaming_lines

# Keys whose value is null, with the reason (filled in by ``headline``).
Reasons = dict[str, str]


def headline(report: dict[str, Any]) -> dict[str, Any]:
    sizes = report["retrieval"]["sizes"]
    ingest = report["ingest"]
    reasons: Reasons = {}
    out: dict[str, Any] = {
        "ingest_events_per_s": ingest.get("ingest_events_per_s"),
        "ingest_store_ratio": ingest.get("ingest_store_ratio"),
    }
    if out["ingest_events_per_s"] is None:
        reasons["ingest_events_per_s"] = ingest.get("error", "not measured")
    if out["ingest_store_ratio"] is None:
        reasons["ingest_store_ratio"] = ingest.get("error", "not measured")
    out.update(freshness_headline(report, reasons))
    out.update(catalogue_headline(report, reasons))

    serving = report.get("serving", {})
    api100k = serving.get("items", {}).get("100000")
    if api100k:
        index = serving["indexes"]["100000"]
        out["recommend_p99_ms_100k"] = api100k["p99_ms"]["median"]
        out["recommend_qps_100k"] = api100k["qps"]["median"]
        out["recommend_source_100k"] = (
            f"through the API: `llmrec serve` over a 100k-item {index['kind']} index (params "
            f"{index['params']}), profiles of {api100k['users_in_db']:,} users in PostgreSQL, "
            f"{serving['concurrency']} concurrent gRPC clients (grpc_api.loadtest), "
            f"Recommend k={serving['k']}; "
            f"p99 = median over {api100k['p99_ms']['n']} repeats of the per-repeat p99; qps = median "
            "requests/s over the same repeats."
        )
        for count, point in serving.get("processes", {}).items():
            # The same point with several API processes on the port (api.processes), in the same run.
            out[f"recommend_p99_ms_100k_processes{count}"] = point["p99_ms"]["median"]
            out[f"recommend_qps_100k_processes{count}"] = point["qps"]["median"]
    else:
        out["recommend_p99_ms_100k"] = out["recommend_qps_100k"] = None
        reasons["recommend_p99_ms_100k"] = reasons["recommend_qps_100k"] = serving.get(
            "error", "the serving benchmark did not run the 100k-item point"
        )

    at1m = sizes.get("1000000")
    served1m = serving.get("indexes", {}).get("1000000", {})
    if at1m:
        kind = at1m["api_index_kind"]
        out["ann_recall100_1m"] = at1m["methods"][kind]["recall100"]
        out["ann_recall100_1m_source"] = (
            f"retrieval section: {kind} at 1M items, params {at1m['methods'][kind]['params']}, "
            f"{report['retrieval']['plan']['recall_queries']} queries"
        )
    elif served1m.get("tuning"):
        out["ann_recall100_1m"] = served1m["tuning"][-1]["recall100"]
        out["ann_recall100_1m_source"] = (
            f"serving section: the API's 1M-item {served1m['kind']} index, params {served1m['params']}, "
            "200 queries (the retrieval section did not run at 1M)"
        )
    else:
        out["ann_recall100_1m"] = None
        reasons["ann_recall100_1m"] = "1M items are only run without --quick"
    api1m = serving.get("items", {}).get("1000000")
    out["api_rss_mb_1m"] = api1m["rss_mb"] if api1m else None
    if not api1m:
        reasons["api_rss_mb_1m"] = serving.get("error", "1M items are only served without --quick")
    # The served learned path (bench.learned): its keys override the index-only 1M figures above, which
    # stay in the retrieval and serving sections.
    out.update(learned_headline(report, reasons, out))
    out["null_reasons"] = reasons
    return out


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
        "ingest_store_ratio",
        *FRESHNESS_KEYS,
        "recommend_p99_ms_100k",
        "recommend_qps_100k",
        "ann_recall100_1m",
        "api_rss_mb_1m",
        *LEARNED_KEYS,
        *catalogue_keys(),
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

    if report.get("api_rss_mb_1m_source"):
        lines += ["", f"`api_rss_mb_1m`: {report['api_rss_mb_1m_source']}"]
    if report.get("ann_recall100_1m_source"):
        lines += ["", f"`ann_recall100_1m`: {report['ann_recall100_1m_source']}"]

    r = report["retrieval"]
    lines += ["", "## Retrieval", ""]
    if r.get("error"):
        lines += [f"Not run: {r['error']}", ""]
    else:
        lines += [f"Target recall@100 for tuning: {r['recall_target']}.", ""]
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
                f"| {spread(e['p50_ms'], 3)} | {spread(e['p99_ms'], 3)} | {spread(e['qps'], 0)} "
                f"| {e['p50_speedup_vs_numpy']:.2f}× | {e['qps_vs_numpy']:.2f}× |"
            )
        for name, why in size.get("skipped", {}).items():
            lines.append(f"\n{name}: skipped, {why}.")
        for name in ("ivf", "hnsw"):
            e = size["methods"].get(name)
            if e and "tuning" in e:
                trials = ", ".join(f"{next(iter(t.values()))}→{t['recall100']:.3f}" for t in e["tuning"])
                reached = "reached" if e["target_reached"] else "NOT reached (largest tried kept)"
                lines.append(f"\n{name} tuning (setting→recall@100): {trials}; target {reached}.")
        lines.append("")

    lines += learned_lines(report)
    lines += _serving_lines(report)
    lines += _encoder_lines(report)

    lines += streaming_lines(report)
    lines += catalogue_lines(report)
    lines += ["", "## Not measured", ""]
    for key, why in report["null_reasons"].items():
        lines.append(f"- `{key}`: {why}")
    return "\n".join(lines) + "\n"


def _serving_lines(report: dict[str, Any]) -> list[str]:
    sv = report.get("serving")
    lines = ["## Serving: Recommend through the gRPC API", ""]
    if not sv:
        return [*lines, "Not run.", ""]
    if sv.get("error"):
        lines += [f"Error: {sv['error']}", ""]
    if not sv.get("items"):
        return lines
    lines += [
        f"`llmrec serve` as its own process over each index, user profiles in a real PostgreSQL (created "
        f"through `PostgresStore.apply_batch`, {sv['plan']['interactions']} ratings per user), "
        f"{sv['concurrency']} concurrent gRPC clients on separate connections (`grpc_api.loadtest`, the code "
        f"of `llmrec loadtest`) sending `Recommend(k={sv['k']})` for random users, "
        f"{sv['plan']['requests']} requests x {sv['plan']['repeats']} repeats per point. The load "
        "generator, PostgreSQL and the API share the machine's cores. Item vectors as in the retrieval "
        "section (real embeddings tiled with small Gaussian perturbations).",
        "",
        "| items | index (params) | users | p50 ms | p99 ms | req/s | errors | API RSS MB (peak) "
        "| API p50 / index-only p50 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    retrieval_sizes = report.get("retrieval", {}).get("sizes", {})
    for n, p in sv["items"].items():
        index = sv["indexes"][n]
        ratio = "—"
        r = retrieval_sizes.get(n)
        if r and index["kind"] in r["methods"]:
            ratio = f"{p['p50_ms']['median'] / r['methods'][index['kind']]['p50_ms']['median']:.1f}×"
        lines.append(
            f"| {int(n):,} | {index['kind']} {index['params']} | {p['users_in_db']:,} "
            f"| {spread(p['p50_ms'])} | {spread(p['p99_ms'])} | {spread(p['qps'], 0)} "
            f"| {p['errors'] or 0} | {p['rss_mb']:.0f} ({p['peak_rss_mb']:.0f}) | {ratio} |"
        )
    lines += [
        "",
        "Index-only p50 is the retrieval section's single-query p50 for the same kind and size (k=100; "
        "the API asks for the candidate pool, `api.candidate_pool` + the user's seen items).",
        "",
    ]
    for count, p in sv.get("processes", {}).items():
        lines += [
            f"The {int(sv['users_sweep_items']):,}-item point again with {count} API processes sharing the "
            f"port (`api.processes={count}`), same database and load: p50 {spread(p['p50_ms'])} ms, p99 "
            f"{spread(p['p99_ms'])} ms, {spread(p['qps'], 0)} req/s "
            f"({p['qps_vs_one_process']:.2f}× one process), errors {p['errors'] or 0}, RSS of all "
            f"processes {p['rss_mb']:.0f} MB.",
            "",
        ]
    lines += [
        f"Users sweep ({sv['users_sweep_items']:,} items, users grown in place in the same database, "
        "one API process):",
        "",
        "| users | p50 ms | p99 ms | req/s | errors |",
        "|---|---|---|---|---|",
    ]
    for u, p in sv["users"].items():
        lines.append(
            f"| {int(u):,} | {spread(p['p50_ms'])} | {spread(p['p99_ms'])} | {spread(p['qps'], 0)} "
            f"| {p['errors'] or 0} |"
        )
    growth = sv.get("growth", {})
    if growth:
        lines += [
            "",
            "Growth, as the least-squares exponent b of value ~ size^b over the points above "
            "(|b| < 0.1 flat, below 0.9 sub-linear, 0.9–1.1 linear; negative: decreasing):",
            "",
        ]
        for key, g in growth.items():
            b = "n/a" if g["exponent"] is None else f"{g['exponent']:.2f}"
            lines.append(f"- {key.replace('_', ' ', 1)}: b = {b}, {g['growth']}")
    if sv.get("plot"):
        lines += ["", f"![serving scaling]({sv['plot']})"]
    for n, index in sv["indexes"].items():
        if index.get("built_in_this_run"):
            built = f"built in this run in {index['build_s']:.1f} s"
        elif "build_s" in index:
            built = f"reused from the cache (built by an earlier run in {index['build_s']:.1f} s)"
        else:
            built = "reused from the cache"
        lines.append(f"\n{int(n):,}-item API index: {index['kind']} {index['params']}, {built}.")
        if "tuning" in index:
            trials = ", ".join(f"{t['nprobe']}→{t['recall100']:.3f}" for t in index["tuning"])
            lines.append(f"nprobe tuning (nprobe→recall@100): {trials}.")
    inserts = ", ".join(
        f"{i['from']:,}→{i['to']:,} at {i['users_per_s']:.0f} users/s" for i in sv["user_inserts"]
    )
    lines += ["", f"User creation through the store: {inserts}.", ""]
    return lines


def _encoder_lines(report: dict[str, Any]) -> list[str]:
    section = report.get("encoder")
    if not section:
        return []
    if section.get("error"):
        return ["## Encoder serving: Triton vs in-process", "", f"Not measured: {section['error']}", ""]
    return markdown_lines(section)
