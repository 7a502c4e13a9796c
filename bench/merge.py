"""``python -m bench.merge OUT BASE --section NAME=FILE ...``: one report from sections of several runs.

A full ``make bench`` takes most of an hour on 2 cores; a change to one part of the system is measured by
re-running that part's section alone. This puts such sections together into one ``reports/bench.json``
(and its ``.md``): ``BASE`` is a report, each ``--section`` replaces one of its sections by the same
section of another report, the headline keys are recomputed from the merged sections, and every
replaced section records which run it came from (``sections_from``, also listed in the markdown), so no
figure loses its provenance.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.report import headline, markdown


def merge(base: dict[str, Any], sections: dict[str, tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    out = dict(base)
    origin: dict[str, Any] = dict(base.get("sections_from", {}))
    for name, (path, source) in sections.items():
        if name not in source:
            raise ValueError(f"{path} has no section {name!r}")
        out[name] = source[name]
        origin[name] = {
            "file": str(path),
            "command": source.get("command"),
            "mode": source.get("mode"),
            "started_at": source.get("started_at"),
        }
    out["sections_from"] = origin
    out.update(headline(out))
    return out


def provenance_lines(report: dict[str, Any]) -> list[str]:
    origin = report.get("sections_from") or {}
    if not origin:
        return []
    lines = ["", "Sections measured by other runs (`python -m bench.merge`):", ""]
    for name, run in origin.items():
        started, file = run["started_at"], run["file"]
        lines.append(f"- `{name}`: `{run['command']}` ({run['mode']} mode), started {started} ({file})")
    return [*lines, ""]


def render(report: dict[str, Any]) -> str:
    text = markdown(report)
    head, sep, rest = text.partition("\n\n")
    body = rest.partition("\n\n")
    # After the report's title and its command line: which sections came from which run.
    return head + sep + body[0] + "\n" + "\n".join(provenance_lines(report)) + "\n" + body[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("base", type=Path)
    parser.add_argument("--section", action="append", default=[], help="NAME=FILE")
    args = parser.parse_args(argv)
    sections: dict[str, tuple[Path, dict[str, Any]]] = {}
    for spec in args.section:
        name, _, file = spec.partition("=")
        path = Path(file)
        sections[name] = (path, json.loads(path.read_text(encoding="utf-8")))
    report = merge(json.loads(args.base.read_text(encoding="utf-8")), sections)
    args.out.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(render(report), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
