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

from bench import catalogue, encoder, freshness, ingest, learned, retrieval, scaleout, serving, serving_plot
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
    parser.add_argument("--skip-serving", action="store_true", help="no Recommend-through-the-API runs")
    parser.add_argument("--skip-retrieval", action="store_true", help="no index-only search comparison")
    parser.add_argument("--skip-encoder", action="store_true", help="no Triton vs in-process encoder run")
    parser.add_argument("--skip-freshness", action="store_true", help="no publish-to-answer freshness run")
    parser.add_argument("--skip-scaleout", action="store_true", help="no 1 vs 2 workers run")
    parser.add_argument(
        "--skip-learned", action="store_true", help="no Recommend-through-the-trained-ranker runs"
    )
    parser.add_argument(
        "--skip-catalogue", action="store_true", help="no live catalogue run (item visibility, ingest, index)"
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    embeddings = load_settings().index_dir / "embeddings.npy"
    report: dict[str, Any] = {
        "command": " ".join(["python -m bench", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]),
        "mode": "quick" if args.quick else "full",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    if args.skip_retrieval:
        report["retrieval"] = {"sizes": {}, "error": "skipped (--skip-retrieval)"}
    else:
        report["retrieval"] = retrieval.run(args.quick, embeddings)
    if args.skip_ingest:
        report["ingest"] = {
            "ingest_events_per_s": None,
            "ingest_store_ratio": None,
            "error": "skipped (--skip-ingest)",
        }
    else:
        report["ingest"] = ingest.run(args.quick)
    if args.skip_freshness:
        report["freshness"] = {"error": "skipped (--skip-freshness)"}
    else:
        report["freshness"] = freshness.run(args.quick)
    if args.skip_scaleout:
        report["scaleout"] = {"error": "skipped (--skip-scaleout)"}
    else:
        report["scaleout"] = scaleout.run(args.quick)
    if args.skip_serving:
        report["serving"] = {"error": "skipped (--skip-serving)"}
    else:
        report["serving"] = serving.run(args.quick, load_settings().index_dir)
    if args.skip_learned:
        report["learned"] = {"error": "skipped (--skip-learned)"}
    else:
        report["learned"] = learned.run(args.quick)
    if args.skip_encoder:
        report["encoder"] = {"error": "skipped (--skip-encoder)"}
    else:
        report["encoder"] = encoder.run(load_settings().triton.repository, repeats=3 if args.quick else 7)
    if args.skip_catalogue:
        report["catalogue"] = {"error": "skipped (--skip-catalogue)"}
    else:
        report["catalogue"] = catalogue.run(args.quick, embeddings)
    report["wall_s"] = time.perf_counter() - started
    report.update(headline(report))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    if "growth" in report["serving"]:
        plot = args.out.with_name(args.out.stem + "_scaling.png")
        report["serving"]["plot"] = serving_plot.write(report["serving"], plot)
    args.out.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    md_path = args.out.with_suffix(".md")
    md_path.write_text(markdown(report))
    print(f"wrote {args.out} and {md_path} in {report['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
