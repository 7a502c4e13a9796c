"""The Grafana dashboard and the Prometheus alert rules in deploy/observability, without services: they
parse, have what an operator relies on (descriptions, severities), and query only metric names the code
defines (grpc_api/metrics.py, stream/metrics.py, prometheus_client's process_* series). The live scrape is
tests/integration/test_ops_assets.py."""

from __future__ import annotations

import pytest

from tools.ops_assets import (
    PROMETHEUS_SERIES,
    code_registries,
    dashboard_exprs,
    defined_series,
    load_dashboard,
    load_rules,
    metric_names,
    referenced_metrics,
    rule_exprs,
    structure_problems,
)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            "histogram_quantile(0.99, sum by (le, grpc_method) "
            '(rate(grpc_server_handling_seconds_bucket{grpc_code="OK"}[5m])))',
            {"grpc_server_handling_seconds_bucket"},
        ),
        (
            "sum by (topic) (rate(a_total[10m])) / sum by (topic) (rate(b_total[$__rate_interval])) > 0.01",
            {"a_total", "b_total"},
        ),
        ("time() - loaded_seconds > 7 * 86400 and items > 0", {"loaded_seconds", "items"}),
        ('count(count by (version) (x_info{version=~"a|b(c)"}))', {"x_info"}),
        ("x > 0 and on (instance) y offset 5m unless z", {"x", "y", "z"}),
        ('up{job="llmrec-api"} == 0', {"up"}),
        ("foo:recorded_rule:rate5m", {"foo:recorded_rule:rate5m"}),
    ],
)
def test_metric_names_finds_the_selected_metrics_only(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_the_files_parse_and_have_what_operators_need() -> None:
    dashboard, rules = load_dashboard(), load_rules()
    assert structure_problems(dashboard, rules) == []
    assert len(dashboard_exprs(dashboard)) >= 15
    assert all(panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24 for panel in dashboard["panels"])


def test_structure_problems_are_found() -> None:
    broken = {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "x > 0", "labels": {}}]}]}
    problems = structure_problems({"panels": [{"id": 1, "type": "timeseries", "title": "t"}]}, broken)
    assert "dashboard: no 'uid'" in problems
    assert "dashboard panel 't': no targets" in problems
    assert "alert A: severity label must be critical, warning or info" in problems
    assert "alert A: no summary annotation" in problems


def test_alerts_cover_the_operational_concerns() -> None:
    rules = load_rules()
    alerts = {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}
    concerns = {
        "consumer lag": "llmrec_worker_consumer_lag",
        "dead letters": "llmrec_worker_dead_letters_total",
        "p99 latency": "grpc_server_handling_seconds_bucket",
        "errors": "grpc_server_handled_total",
        "index age": "llmrec_api_index_loaded_timestamp_seconds",
    }
    for concern, metric in concerns.items():
        assert any(metric in metric_names(expr) for expr in alerts.values()), f"no alert on {concern}"
    assert len(rule_exprs(rules)) == len(alerts)


def test_every_referenced_metric_is_defined_by_the_code() -> None:
    defined = defined_series(code_registries())
    # The registries themselves, so that the comparison below means something.
    for name in (
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "llmrec_api_index_info",
        "llmrec_worker_consumer_lag",
        "llmrec_worker_batch_size_sum",
        "process_resident_memory_bytes",
    ):
        assert name in defined
    assert "llmrec_worker_consumer_lag_total" not in defined
    used = referenced_metrics()
    assert len(used) >= 12
    undefined = {name: sorted(where) for name, where in used.items() if name not in defined}
    assert undefined == {}, f"queried but not exported by the code: {undefined}"
    assert not (set(used) & PROMETHEUS_SERIES)
    # Both assets query the worker and the API.
    assert any(n.startswith("llmrec_worker_") and "dashboard" in w for n, w in used.items())
    assert any(n.startswith("grpc_server_") and "alerts" in w for n, w in used.items())
