"""Headline keys and markdown of the streaming sections (ingest, freshness, scale-out) of the report."""

from __future__ import annotations

from typing import Any

from bench.common import spread

FRESHNESS_KEYS = (
    "freshness_rating_p50_s",
    "freshness_rating_p99_s",
    "freshness_review_p50_s",
    "freshness_review_p99_s",
)


def _load(section: dict[str, Any]) -> str:
    start, end = section["load_average_1m"]
    return f"{start:.1f} at the start, {end:.1f} at the end"


def freshness_headline(report: dict[str, Any], reasons: dict[str, str]) -> dict[str, Any]:
    section = report.get("freshness") or {}
    out = {key: section.get(key) for key in FRESHNESS_KEYS}
    for key, value in out.items():
        if value is None:
            reasons[key] = section.get("error", "not measured")
    return out


def ingest_lines(g: dict[str, Any]) -> list[str]:
    lines = ["## Ingest", ""]
    if g.get("error"):
        lines += [f"Not measured: {g['error']}", ""]
    w = g.get("worker")
    if not w:
        return lines
    raw = g["raw_consume_events_per_s"]
    lines += [
        f"{g['events']:,} events (3 ratings : 1 watch; {g['users']} users, {g['items']} items, "
        f"{g['partitions']} partitions per topic, keyed by user id) on a real Kafka broker and PostgreSQL "
        f"(fsync on) started for the run in {g['services_start_s']:.1f} s; published in "
        f"{g['publish_s']:.2f} s "
        f"({g['publish_events_per_s']:.0f} events/s). Worker `batch_size` {g['worker_batch_size']}, "
        f"`batch_within_s` {g['worker_batch_within_s']}.",
        "",
        "| measurement | events/s | definition |",
        "|---|---|---|",
        f"| raw consume (baseline) | {spread(raw, 0)} | plain confluent-kafka `consume(1000)` loop over the "
        "same rating and watch topics, new group, from the beginning, reading each key and value, no "
        "parsing; one warm-up pass discarded; (N−1) / (last message − first message) |",
        f"| raw consume, from assign | {spread(g['raw_consume_from_assign_events_per_s'], 0)} | the same "
        "passes, N / (last message − `assign`) |",
        f"| worker end to end | {w['ingest_events_per_s']:.0f} | `python -m stream`: N / (ledger holds N − "
        "`worker ready` in its log); ledger polled every 0.1 s |",
        f"| worker, 1-s windows | {spread(w['window_rates_per_s'], 0)} | ledger growth per ~1 s window "
        "within the same run |",
        f"| bare store (baseline) | {spread(g.get('bare_store_events_per_s', {}), 0)} | the same number of "
        "new ledger rows and profiles written by a plain psycopg loop on one connection, one transaction "
        f"per batch of {g.get('bare_store_batch_size', 'n/a')} (the worker's mean batch size): a multi-row "
        "ledger insert and a multi-row profile upsert; no Kafka, decoding, preference arithmetic or "
        "profile read |",
        "",
        _store_ratio(g) + " Worker start-up "
        f"(spawn to `worker ready`): {w['startup_s']:.1f} s, not counted; mean batch size by topic "
        f"(from `llmrec_worker_batch_size`): "
        + ", ".join(
            f"{t.rsplit('.', 2)[-2]} {v:.0f}" for t, v in w.get("mean_batch_size_by_topic", {}).items()
        )
        + ".",
    ]
    if g.get("note"):
        lines += ["", f"Note: {g['note']}."]
    if g.get("load_average_1m"):
        lines += ["", f"1-minute load average of the (shared, 2-core) machine: {_load(g)}."]
    base = g.get("baseline_source")
    if base:
        lines += [
            "",
            f"Same run, the worker code of `{base['source']}` (`batch_size` {base['batch_size']}) on its own "
            f"copy of the backlog (after the run above): {base['ingest_events_per_s']:.0f} events/s; the "
            f"current worker is {g['speedup_vs_baseline_source']:.2f}× that.",
        ]
    for size, other in g.get("batch_size_comparison", {}).items():
        lines += [
            "",
            f"Same run, `batch_size` {size} on its own copy of the backlog (after the run above): "
            f"{other['ingest_events_per_s']:.0f} events/s "
            f"({w['ingest_events_per_s'] / other['ingest_events_per_s']:.2f}× for the default).",
        ]
    return [*lines, ""]


def _store_ratio(g: dict[str, Any]) -> str:
    ratio = g.get("ingest_store_ratio")
    if ratio is None:
        return "ingest_store_ratio: not measured."
    consume = g.get("worker_vs_raw_consume_ratio")
    tail = "" if consume is None else f"; worker / raw consume = {consume:.4f}"
    return f"ingest_store_ratio = {ratio:.4f} (worker / median bare store{tail})."


def freshness_lines(f: dict[str, Any]) -> list[str]:
    lines = ["## Freshness", ""]
    if f.get("error"):
        lines += [f"Not measured: {f['error']}", ""]
    if "rating" not in f:
        return lines
    lines += [
        "Publish-to-answer time: a probe event (a rating, or a review scored through Triton) about the "
        "first item of the probe user's current `Recommend` answer; the clock stops at the first "
        f"`Recommend` answer (polled every {f['poll_interval_s'] * 1000:.0f} ms) that no longer lists the "
        "item (seen items come from the ledger, committed with the profile). Real Kafka, PostgreSQL, Triton, "
        "`llmrec worker` and `llmrec serve`; sample catalogue of "
        f"{f['catalogue_items']:,} items. Background: {f['background_events_per_s']:.0f} events/s achieved "
        f"(target {f['background_target_events_per_s']:.0f}, 3 ratings : 1 watch); worker consumer lag "
        f"at the end: {f['worker_consumer_lag_at_end']}.",
        "",
        "| probe | n | p50 s | p99 s | min s | max s |",
        "|---|---|---|---|---|---|",
    ]
    for kind in ("rating", "review"):
        s = f[kind]
        lines.append(
            f"| {kind} | {s['n']} | {s['p50']:.3f} | {s['p99']:.3f} | {s['min']:.3f} | {s['max']:.3f} |"
        )
    lines += [
        "",
        f"With n={f['rating']['n']} probes per kind, p99 is close to the largest sample. 1-minute load "
        f"average of the (shared, 2-core) machine: {_load(f) if f.get('load_average_1m') else 'n/a'}.",
        "",
    ]
    return lines


def scaleout_lines(s: dict[str, Any]) -> list[str]:
    lines = ["## Scale-out: 1 vs 2 workers in one consumer group", ""]
    if s.get("error"):
        lines += [f"Not measured: {s['error']}", ""]
    if "workers_1" not in s:
        return lines
    one, two, state = s["workers_1"], s["workers_2"], s["final_state"]
    lines += [
        f"The same {one['events']:,} events (users {s['users']}, {s['partitions_per_topic']} partitions per "
        "topic, keyed by user id) through one worker, then through two workers of one group started "
        "before publishing (partitions split first); clock from the first publish to the ledger holding all "
        "events. The 1-worker run goes first. Both workers share the 2 cores with Kafka and PostgreSQL.",
        "",
        "| workers | partitions each | events/s (all) | events/s by worker |",
        "|---|---|---|---|",
    ]
    for run in (one, two):
        by_worker = ", ".join(f"{v:.0f}" for v in run["events_per_s_by_worker"])
        lines.append(
            f"| {run['workers']} | {run['partitions_per_worker']} | {run['events_per_s']:.0f} | {by_worker} |"
        )
    lines += [
        "",
        f"2 vs 1 workers: {s['speedup_2_vs_1']:.2f}×. Final state "
        f"{'IDENTICAL' if state['identical'] else 'DIFFERENT'}: {state['profiles'][0]} vs "
        f"{state['profiles'][1]} profiles, {state['ledger_rows'][0]} vs {state['ledger_rows'][1]} ledger "
        f"rows; hash of the exact columns {state['exact_sha256'][0][:16]}… vs "
        f"{state['exact_sha256'][1][:16]}…; "
        f"largest relative difference of the decayed vector sums {state['max_vector_rel_diff']:.2e}, of the "
        f"weight sums {state['max_weight_rel_diff']:.2e} (float32 rounding of a different batch split). "
        f"1-minute load average: {_load(s) if s.get('load_average_1m') else 'n/a'}.",
        "",
    ]
    return lines


def streaming_lines(report: dict[str, Any]) -> list[str]:
    lines = ingest_lines(report.get("ingest") or {})
    if "freshness" in report:
        lines += freshness_lines(report["freshness"])
    if "scaleout" in report:
        lines += scaleout_lines(report["scaleout"])
    return lines
