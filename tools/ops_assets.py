"""The operations assets in ``deploy/observability`` (Grafana dashboard, Prometheus alert rules) read for
their PromQL, and the metric names those queries select: for ``make ops-check`` and the tests that hold the
assets to what the API and the worker really export (tests/unit/test_ops_files.py against the metric
definitions, tests/integration/test_ops_assets.py against a live scrape).

``python -m tools.ops_assets`` checks the files' structure and that every metric name they use is defined
in ``grpc_api/metrics.py`` or ``stream/metrics.py``; exit status 1 with the problems listed otherwise.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parent.parent
OBSERVABILITY = REPO_ROOT / "deploy" / "observability"
DASHBOARD = OBSERVABILITY / "grafana" / "llmrec.json"
ALERTS = OBSERVABILITY / "prometheus" / "alerts.yml"

# Series Prometheus writes itself for every target (never in a scrape): allowed in queries.
PROMETHEUS_SERIES: frozenset[str] = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

# Words of PromQL that look like metric names but are not.
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
# Label lists of aggregations and vector matching: ``sum by (le, topic)``, ``on (instance)``.
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
# Grafana's variables ($__rate_interval, ${datasource}); only inside ranges and matchers in our queries.
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_IDENTIFIER = re.compile(r"(?<![\w.:])[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not its functions, keywords or label names).

    A small lexer rather than a PromQL parser: enough for the queries of these assets, and the tests pin
    what it must find.
    """
    text = _GRAFANA_VARIABLE.sub("1m", _STRING.sub('""', expr))
    text = _RANGE.sub(" ", _MATCHERS.sub(" ", text))
    text = _GROUPING.sub(" ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group(0)
        rest = text[match.end() :].lstrip()
        if name in _KEYWORDS or rest.startswith("("):  # a function or an aggregation
            continue
        names.add(name)
    return names


def _panels(panels: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", ()))  # collapsed rows hold their panels


def dashboard_exprs(dashboard: Mapping[str, Any]) -> list[str]:
    """Every PromQL target of the dashboard's panels, nested ones too."""
    return [
        str(target["expr"])
        for panel in _panels(dashboard.get("panels", ()))
        for target in panel.get("targets", ())
        if target.get("expr")
    ]


def rule_exprs(rules: Mapping[str, Any]) -> list[str]:
    """Every ``expr`` of a Prometheus rule file (alerting and recording rules)."""
    return [str(rule["expr"]) for group in rules.get("groups", ()) for rule in group.get("rules", ())]


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def load_rules(path: Path = ALERTS) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a YAML mapping")
    return data


def referenced_metrics(dashboard: Path = DASHBOARD, alerts: Path = ALERTS) -> dict[str, set[str]]:
    """Metric name -> where it is used (``dashboard`` / ``alerts``), Prometheus' own series left out."""
    used: dict[str, set[str]] = {}
    sources = (
        ("dashboard", dashboard_exprs(load_dashboard(dashboard))),
        ("alerts", rule_exprs(load_rules(alerts))),
    )
    for source, exprs in sources:
        for expr in exprs:
            for name in metric_names(expr) - PROMETHEUS_SERIES:
                used.setdefault(name, set()).add(source)
    return used


# The sample names each kind of metric family exposes (prometheus_client's family names drop ``_total``
# and ``_info``; histograms add their three series).
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
    "unknown": ("",),
}


def defined_series(registries: Iterable[CollectorRegistry]) -> set[str]:
    """The sample names these registries can expose, whether or not a labelled metric has a child yet."""
    names: set[str] = set()
    for registry in registries:
        for family in registry.collect():
            names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
            names.update(sample.name for sample in family.samples)
    return names


def scraped_series(text: str) -> set[str]:
    """The sample names in one Prometheus text exposition (a live ``/metrics`` page)."""
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def code_registries() -> list[CollectorRegistry]:
    """The registries of the API (prometheus_client's default, with grpc_api.metrics) and the worker."""
    import prometheus_client

    import grpc_api.metrics  # noqa: F401  registers the API's metrics in the default registry
    import stream.metrics

    return [prometheus_client.REGISTRY, stream.metrics.REGISTRY]


def structure_problems(dashboard: Mapping[str, Any], rules: Mapping[str, Any]) -> list[str]:
    """What Grafana's import or an operator would trip over; promtool checks the rules' PromQL itself."""
    problems: list[str] = []
    for key in ("uid", "title", "panels", "schemaVersion"):
        if key not in dashboard:
            problems.append(f"dashboard: no {key!r}")
    ids = [panel.get("id") for panel in _panels(dashboard.get("panels", ()))]
    if len(ids) != len(set(ids)) or None in ids:
        problems.append("dashboard: panel ids must be present and unique")
    for panel in _panels(dashboard.get("panels", ())):
        if panel.get("type") == "row":
            continue
        if not panel.get("targets"):
            problems.append(f"dashboard panel {panel.get('title')!r}: no targets")
        if not panel.get("description"):
            problems.append(f"dashboard panel {panel.get('title')!r}: no description")
    alerts = [rule for group in rules.get("groups", ()) for rule in group.get("rules", ())]
    if not alerts:
        problems.append("alerts: no rules")
    for rule in alerts:
        name = rule.get("alert") or rule.get("record")
        if not name or not rule.get("expr"):
            problems.append(f"alerts: a rule without a name or expr: {rule}")
            continue
        if "alert" in rule:
            if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                problems.append(f"alert {name}: severity label must be critical, warning or info")
            for key in ("summary", "description"):
                if not rule.get("annotations", {}).get(key):
                    problems.append(f"alert {name}: no {key} annotation")
    return problems


def main() -> int:
    dashboard, rules = load_dashboard(), load_rules()
    problems = structure_problems(dashboard, rules)
    defined = defined_series(code_registries())
    for name, where in sorted(referenced_metrics().items()):
        if name not in defined:
            problems.append(f"{name} (used in {', '.join(sorted(where))}) is not defined by the code")
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"ops assets: {len(referenced_metrics())} metric names, all defined by the code")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
