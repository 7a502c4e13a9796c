"""Every metric the Grafana dashboard and the Prometheus alert rules (deploy/observability) query is in a
live scrape of the real processes: ``llmrec serve`` and the worker (``python -m stream``) against this
session's Kafka and PostgreSQL, after the traffic that creates their labelled series (a Recommend, an
applied event, a dead-lettered one). The unit test (tests/unit/test_ops_files.py) checks the same names
against the metric definitions; this one catches a definition that never reaches the endpoint."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import grpc
import pytest
from api_process import ApiProcess, publish_sample_index
from prometheus_client.parser import text_string_to_metric_families

from llmrec.events.producer import EventProducer
from llmrec.events.schema import RatingEvent
from llmrec.metrics_http import scrape
from llmrec.settings import Settings
from llmrec_client.v1 import recommender_pb2, recommender_pb2_grpc
from tests.integration.workers import caught_up, running_worker, wait_until
from tools.ops_assets import referenced_metrics, scraped_series

pytestmark = pytest.mark.integration


def _recommend(settings: Settings, user_id: str) -> None:
    with grpc.insecure_channel(settings.api.target) as channel:
        stub = recommender_pb2_grpc.RecommenderStub(channel)  # type: ignore[no-untyped-call]
        answer = stub.Recommend(recommender_pb2.RecommendRequest(user_id=user_id, k=5), timeout=30.0)
        assert len(answer.items) == 5
        # A refused request too, so an error code is exported beside OK (InvalidArgument: k above max_k).
        too_many = settings.api.max_k + 1
        with pytest.raises(grpc.RpcError) as refused:
            stub.Recommend(recommender_pb2.RecommendRequest(user_id=user_id, k=too_many), timeout=30.0)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _sample(page: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels`` (0 when none)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def test_every_metric_of_the_dashboard_and_alerts_is_in_a_live_scrape(
    settings_factory: Callable[..., Settings],
) -> None:
    used = referenced_metrics()
    # The assets cover the list: lag, dead letters, latency, errors, index age, throughput.
    for name in (
        "llmrec_worker_consumer_lag",
        "llmrec_worker_dead_letters_total",
        "grpc_server_handling_seconds_bucket",
        "grpc_server_handled_total",
        "llmrec_api_index_loaded_timestamp_seconds",
        "llmrec_worker_events_total",
    ):
        assert name in used, f"{name} is used by neither the dashboard nor the alerts"

    settings = settings_factory()  # free ports for both metrics endpoints
    catalogue = publish_sample_index(settings)  # the API serves it; the worker reads its item vectors
    user = f"ops-{uuid.uuid4().hex[:8]}"
    item = next(iter(catalogue))
    with running_worker(settings, name="worker-ops") as worker:  # it migrates the database at start
        with EventProducer(settings.kafka) as producer:
            producer.publish(
                RatingEvent(
                    event_id=f"{user}-1",
                    user_id=user,
                    item_id=item.external_id,
                    event_time=datetime(2025, 1, 1, tzinfo=UTC),
                    rating=9,
                )
            )
            producer.publish_raw(settings.kafka.ratings_topic, user, b"{not json")
        wait_until(lambda: caught_up(settings), 120, "the worker to consume both events")
        worker_page = scrape(settings.worker.metrics_port)

        api = ApiProcess(settings, name="api-ops")
        api.start()
        try:
            _recommend(settings, user)
            api_page = scrape(settings.api.metrics_port)
        finally:
            assert api.stop() == 0, api.log()[-4000:]
        assert worker.stop() == 0, worker.log()[-4000:]

    api_series, worker_series = scraped_series(api_page), scraped_series(worker_page)
    # Each name where the process that owns it exports it; process_* from both.
    missing: list[str] = []
    for name, where in sorted(used.items()):
        if name.startswith(("grpc_server_", "llmrec_api_")):
            owners = {"API": api_series}
        elif name.startswith("llmrec_worker_"):
            owners = {"worker": worker_series}
        else:
            owners = {"API": api_series, "worker": worker_series}
        missing += [
            f"{name} ({', '.join(sorted(where))}) not in the {owner}'s scrape"
            for owner, series in owners.items()
            if name not in series
        ]
    assert not missing, "\n".join(missing)
    # The traffic reached the series the alerts divide by (a 0-valued scrape would hide a broken label).
    ratings = settings.kafka.ratings_topic
    assert _sample(worker_page, "llmrec_worker_dead_letters_total", topic=ratings, reason="invalid_json") == 1
    assert _sample(worker_page, "llmrec_worker_events_total", topic=ratings, outcome="applied") == 1
    assert _sample(api_page, "grpc_server_handled_total", grpc_method="Recommend", grpc_code="OK") == 1
    assert _sample(api_page, "grpc_server_handled_total", grpc_code="InvalidArgument") == 1
