"""``python -m bench [--quick] [--out reports/bench.json]``: run the suite, write JSON and markdown."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import ingest, retrieval
from bench.common import machine
from bench.report import headline, markdown
from llmrec.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="10k/100k items and 20k events (under 5 minutes)"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/bench.json"))
    parser.add_argument("--skip-ingest", action="store_true", help="retrieval only (no Kafka/PostgreSQL)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    embeddings = load_settings().index_dir / "embeddings.npy"
    report: dict[str, Any] = {
        "command": " ".join(["python -m bench", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]),
        "mode": "quick" if args.quick else "full",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    report["retrieval"] = retrieval.run(args.quick, embeddings)
    if args.skip_ingest:
        report["ingest"] = {
            "ingest_events_per_s": None,
            "ingest_vs_raw_ratio": None,
            "error": "skipped (--skip-ingest)",
        }
    else:
        report["ingest"] = ingest.run(args.quick)
    report["wall_s"] = time.perf_counter() - started
    report.update(headline(report))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    md_path = args.out.with_suffix(".md")
    md_path.write_text(markdown(report))
    print(f"wrote {args.out} and {md_path} in {report['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
