"""Soak: the whole stack under steady mixed traffic for ``LLMREC_SOAK_SECONDS`` (default 600).

Events from the shipped sample (ratings, watch events and one in four of its reviews, in replay order,
plus a malformed message every 250 and a re-sent event id every 100) go through the real worker at
``LLMREC_SOAK_EVENTS_PER_S`` (default 100/s, about 1.3 reviews/s among them) while two clients call
Recommend through the real gRPC server (``llmrec serve``, its own process) at ``LLMREC_SOAK_REQUESTS_PER_S``
(default 20/s in total). Reviews are scored by the session's Triton.

Asserted: no failed request; no event lost (published = applied + dead-lettered + duplicates, each applied
event counted once in the profiles); the RSS of the worker, the API server and Triton (with its Python
backend's stub) flat within 10% between the end of warm-up (the first 2 minutes; a fifth of a shorter run)
and the end. The figures go to ``reports/soak.json`` (``LLMREC_SOAK_REPORT`` overrides the path).

Marked ``soak`` so it can be chosen (``pytest -m soak``) or left out locally (``-m 'not soak'``); CI runs it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from api_process import ApiProcess, publish_sample_index
from soak import SoakConfig, run_soak
from workers import caught_up, read_to_end, running_worker

from deploy.process import free_port
from deploy.triton import TritonServer
from llmrec.settings import REPO_ROOT, ApiSettings, Settings, TritonSettings
from llmrec.store import migrate

CONFIG = SoakConfig.from_env()
REPORT = Path(os.environ.get("LLMREC_SOAK_REPORT", REPO_ROOT / "reports" / "soak.json"))
RSS_TOLERANCE_PCT = 10.0

pytestmark = [pytest.mark.integration, pytest.mark.soak]


# Start-up and the drain at the end come on top of the traffic itself.
@pytest.mark.timeout(int(CONFIG.duration_s) + 900)
def test_soak_mixed_traffic(
    settings_factory: Callable[..., Settings],
    postgres_dsn: str,
    triton_server: TritonServer,
    triton_settings: TritonSettings,
) -> None:
    settings = settings_factory(
        triton=triton_settings,
        api=ApiSettings(host="127.0.0.1", port=free_port(), metrics_port=0),
    )
    publish_sample_index(settings)
    migrate(postgres_dsn)
    prefix = f"soak{uuid.uuid4().hex[:6]}-"

    def dead_lettered() -> int:
        records = read_to_end(settings, settings.kafka.dead_letter_topic)
        return sum(1 for r in records if r.key is not None and r.key.startswith(prefix.encode()))

    api = ApiProcess(settings, name="soak-api")
    with running_worker(settings, "soak-worker") as worker:
        api.start()
        try:
            assert triton_server.pid is not None
            report = run_soak(
                CONFIG,
                settings,
                postgres_dsn,
                {"worker": worker.process.pid, "api": api.pid, "triton": triton_server.pid},
                prefix,
                dead_lettered=dead_lettered,
                caught_up=lambda: caught_up(settings),
            )
        finally:
            api.stop()
        assert worker.process.poll() is None, worker.log()[-4000:]
        assert worker.stop() == 0, worker.log()[-4000:]
    report.write(REPORT)
    print(f"\nsoak report ({REPORT}):\n{REPORT.read_text()}")

    assert report.requests > 0 and report.failed_requests == 0, report.first_errors
    assert report.events_lost == 0
    assert (
        report.events_applied
        == report.events_published - report.events_dead_lettered - report.events_duplicates
    )
    assert report.profile_counter_total == report.events_applied
    assert report.events_dead_lettered > 0 and report.events_duplicates > 0
    for process, growth in report.rss_growth_pct.items():
        assert abs(growth) <= RSS_TOLERANCE_PCT, f"{process} RSS changed {growth:+.1f}% after warm-up"
