"""`llmrec up` / `llmrec status` tables: every endpoint in full at any width (folded in a narrow terminal,
on one line into a pipe), and the API's HTTP and metrics endpoints beside its gRPC address."""

from __future__ import annotations

import io

from rich.console import Console

from deploy.stack import COMPONENTS, ComponentStatus, _print
from llmrec.settings import ApiSettings, Settings, WorkerSettings

LONG_LOG = "/srv/deployments/llmrec/production-eu-west/state/.llmrec/logs/api.log"


def endpoints(settings: Settings) -> dict[str, str]:
    return {c.name: c.endpoint(settings) for c in COMPONENTS}


def test_the_api_endpoint_names_its_metrics() -> None:
    shown = endpoints(Settings(api=ApiSettings(host="10.0.0.7", port=50051, metrics_port=19102)))
    assert shown["api"] == (
        "grpc 10.0.0.7:50051, http http://10.0.0.7:8080, metrics http://10.0.0.7:19102/metrics"
    )
    shown = endpoints(Settings(api=ApiSettings(port=50051, metrics_port=19102, processes=3)))
    assert shown["api"].endswith("metrics http://127.0.0.1:19102..19104/metrics")
    shown = endpoints(Settings(api=ApiSettings(metrics_port=0), worker=WorkerSettings(metrics_port=0)))
    assert shown["api"] == "grpc 127.0.0.1:50051, http http://127.0.0.1:8080"
    assert shown["worker"] == "metrics off"
    shown = endpoints(Settings(api=ApiSettings(metrics_port=0, http_enabled=False)))
    assert shown["api"] == "grpc 127.0.0.1:50051"


def rows() -> list[ComponentStatus]:
    api = endpoints(Settings())["api"]
    return [ComponentStatus("api", "running", api, 4242, LONG_LOG)]


def column_text(rendered: str, column: int) -> str:
    """The text of one column of a one-row table, its folded lines joined again."""
    body = rendered.split("┡")[1].splitlines()[1:-1]  # below the header, above the bottom border
    return "".join(line.split("│")[column + 1].strip() for line in body)


def test_a_narrow_terminal_folds_endpoints_instead_of_cutting_them() -> None:
    console = Console(file=io.StringIO(), width=60, force_terminal=True, color_system=None)
    _print(rows(), "llmrec status", console)
    rendered = console.file.getvalue()  # type: ignore[attr-defined]
    assert "…" not in rendered
    assert max(len(line) for line in rendered.splitlines()) <= 60
    assert column_text(rendered, 2).replace(" ", "") == rows()[0].endpoint.replace(" ", "")
    assert column_text(rendered, 4) == LONG_LOG


def test_into_a_pipe_every_row_is_one_whole_line() -> None:
    console = Console(file=io.StringIO(), width=80)  # not a terminal: rich assumes 80 columns
    _print(rows(), "llmrec up", console)
    rendered = console.file.getvalue()  # type: ignore[attr-defined]
    (row,) = [line for line in rendered.splitlines() if "4242" in line]
    assert rows()[0].endpoint in row and LONG_LOG in row
