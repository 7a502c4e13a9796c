"""``python -m bench.catalogue_index [--poll-only] [--sizes 100000,1000000] [--update PATH]``: the live-index
section of ``bench.catalogue`` alone (no Kafka, PostgreSQL or Triton), printed or put into a saved report
(``python -m bench`` output, e.g. reports/bench-catalogue.json) whose markdown is then rendered again."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import catalogue
from bench.report import headline, markdown
from llmrec.settings import load_settings


def update_index_report(report_path: Path, index: dict[str, Any], poll_only: bool) -> None:
    """Put a live-index run into a saved report (``python -m bench`` output) and render it again.

    A full run replaces its sizes' entries; a ``poll_only`` run replaces only the poll figures of an entry
    (the recall, memory and latency comparison stay from the report's run, said so in the markdown). The
    replaced poll figures are kept as ``poll_before``."""
    report = json.loads(report_path.read_text())
    sizes = report.setdefault("catalogue", {}).setdefault("index", {}).setdefault("sizes", {})
    measured_at = datetime.now(UTC).isoformat(timespec="seconds")
    for n, entry in index["sizes"].items():
        old = sizes.get(n) or {}
        before = {key: old[key] for key in catalogue.POLL_KEYS if key in old}
        if poll_only and not old.get("error") and "live" in old:
            fresh = entry
            entry = {
                **old,
                **{key: fresh[key] for key in (*catalogue.POLL_KEYS, "merge_s", "poll_delta_rows")},
            }
            entry["poll_remeasured"] = {
                "at": measured_at,
                **{key: fresh[key] for key in ("snapshot_s", "apply_10pct_s", "wall_s", "load_average_1m")},
            }
        else:
            entry = {**entry, "measured_at": measured_at}
        if before:
            entry["poll_before"] = old.get("poll_before", before)
        sizes[n] = entry
    report.update(headline(report))
    report_path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    report_path.with_suffix(".md").write_text(markdown(report))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.catalogue_index", description=__doc__)
    parser.add_argument("--poll-only", action="store_true", help="up to the poll cost (no recall/rebuild)")
    parser.add_argument("--sizes", default="100000", help="comma-separated item counts")
    parser.add_argument("--update", type=Path, help="a saved report to put the figures into")
    args = parser.parse_args(argv)
    plan = dataclasses.replace(catalogue.FULL, index_sizes=tuple(int(n) for n in args.sizes.split(",")))
    index = catalogue.run_index(plan, load_settings().index_dir / "embeddings.npy", poll_only=args.poll_only)
    print(json.dumps(index, indent=1))
    if args.update is not None:
        update_index_report(args.update, index, args.poll_only)


if __name__ == "__main__":
    main()
