"""Reading the Prometheus text endpoint of one of our own processes (worker or API): for the benchmarks, the
tests and the API process group's start-up check. Only what those need: the page, and one sample's value."""

from __future__ import annotations

import urllib.request


def scrape(port: int, host: str = "127.0.0.1", timeout_s: float = 5.0) -> str:
    """The text exposition at ``http://host:port/metrics``; OSError when nothing answers."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout_s) as response:
        return str(response.read().decode("utf-8"))


def sample_value(text: str, series: str) -> float | None:
    """The value of the sample whose name and labels are exactly ``series`` (as exposed, e.g.
    ``'llmrec_worker_events_total{topic="llmrec.ratings.v1",outcome="applied"}'``), or None when absent."""
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    return None
