"""The worker's Prometheus metrics: batch sizes, dead letters by topic and consumer lag."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import faust

from stream import metrics
from stream.main import lag_reporter
from stream.processing import BatchResult


def value(name: str, labels: dict[str, str]) -> float:
    found = metrics.REGISTRY.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_a_batch_counts_its_size_and_outcomes_by_topic() -> None:
    topic = "unit-metrics.ratings.v1"
    before = value("llmrec_worker_batch_size_count", {"topic": topic})
    metrics.observe(
        topic,
        BatchResult(received=7, applied=4, duplicates=1, dead_lettered=2, reasons={"invalid_json": 2}),
    )
    assert value("llmrec_worker_batch_size_count", {"topic": topic}) == before + 1
    assert value("llmrec_worker_batch_size_sum", {"topic": topic}) >= 7
    assert value("llmrec_worker_events_total", {"topic": topic, "outcome": "applied"}) >= 4
    assert value("llmrec_worker_events_total", {"topic": topic, "outcome": "dead_lettered"}) >= 2
    assert value("llmrec_worker_dead_letters_total", {"topic": topic, "reason": "invalid_json"}) >= 2


def event(topic: str, partition: int, offset: int) -> Any:
    return SimpleNamespace(message=SimpleNamespace(topic=topic, partition=partition, offset=offset))


def test_lag_is_the_high_watermark_minus_the_offset_after_the_batch() -> None:
    topic = "unit-lag.watch.v1"
    highwaters = {(topic, 0): 100, (topic, 1): 11}

    def highwater(tp: Any) -> int:
        return highwaters[(tp.topic, tp.partition)]

    app = cast(faust.App, SimpleNamespace(consumer=SimpleNamespace(highwater=highwater)))
    report = lag_reporter(app)
    report([event(topic, 0, 40), event(topic, 0, 41), event(topic, 1, 10)])
    assert value("llmrec_worker_consumer_lag", {"topic": topic, "partition": "0"}) == 100 - 42
    assert value("llmrec_worker_consumer_lag", {"topic": topic, "partition": "1"}) == 0


def test_a_consumer_without_an_assignment_leaves_the_lag_alone() -> None:
    def highwater(tp: Any) -> int:
        raise AssertionError("no assignment")

    app = cast(faust.App, SimpleNamespace(consumer=SimpleNamespace(highwater=highwater)))
    lag_reporter(app)([event("unit-lag-none.ratings.v1", 0, 5)])  # does not raise
    assert (
        metrics.REGISTRY.get_sample_value(
            "llmrec_worker_consumer_lag", {"topic": "unit-lag-none.ratings.v1", "partition": "0"}
        )
        is None
    )
