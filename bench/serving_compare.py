"""Before/after for an API optimisation: another checkout's API against this one, same load, same run.

``python -m bench.serving_compare --baseline-src DIR [--items 10000,100000] [--rounds 3]`` starts one
PostgreSQL with ``--users`` users (``bench.serving.add_users``), then for each catalogue size alternates
the API of ``DIR`` (e.g. ``git archive HEAD | tar -x -C DIR``: the code before the change) and the API of
this checkout, ``--rounds`` times each, every round one ``grpc_api.loadtest`` run of ``--requests``
requests from 8 clients. Alternating keeps both sides under the same neighbours' load on a shared machine.
Prints and writes (``--out``) per side: median and min/max over rounds of p50, p99, requests/s and the API
process's CPU milliseconds per request (the figure least moved by other jobs), and the ratios new/old.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench import serving
from bench.common import summary
from deploy.postgres import PostgresServer
from deploy.process import free_ports
from llmrec.settings import load_settings
from llmrec.store import migrate

METRICS = ("p50_ms", "p99_ms", "qps", "api_cpu_ms_per_request")


def _ratio(after: float | None, before: float | None) -> float | None:
    return None if after is None or not before else after / before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serving_compare", description=__doc__)
    parser.add_argument("--baseline-src", type=Path, required=True)
    parser.add_argument("--items", default="10000,100000")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    base = serving.load_base(load_settings().index_dir)
    root = Path(tempfile.mkdtemp(prefix="llmrec-bench-compare-"))
    root.chmod(0o755)
    (pg_port,) = free_ports(1)
    server = PostgresServer(state_dir=root / "postgres", port=pg_port)
    plan = serving.Plan(item_sizes=(), user_sizes=(), interactions=10, requests=args.requests, repeats=1)
    out: dict[str, Any] = {"baseline_src": str(args.baseline_src), "users": args.users, "sizes": {}}
    try:
        server.start()
        migrate(server.dsn)
        asyncio.run(serving.add_users(server.dsn, base, 0, args.users, plan.interactions))
        for n in (int(x) for x in args.items.split(",")):
            folder, _ = serving.index_folder(base, n)
            rounds: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
            for r in range(args.rounds):
                for side, source in (("before", args.baseline_src.resolve()), ("after", None)):
                    api = serving.Api(root, server.dsn, folder, f"{side}-{n}-{r}", source=source)
                    try:
                        rounds[side].append(serving.measure(api, args.users, plan, f"{side} n={n}"))
                    finally:
                        api.close()
            sides = {
                side: {m: summary([p[m]["median"] for p in points]) for m in METRICS}
                for side, points in rounds.items()
            }
            ratios = {m: _ratio(sides["after"][m]["median"], sides["before"][m]["median"]) for m in METRICS}
            out["sizes"][str(n)] = {**sides, "after_over_before": ratios}
            print(f"n={n}: " + json.dumps(out["sizes"][str(n)], indent=1), flush=True)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
