"""Helpers for integration tests that run the worker as a process (``python -m stream``) against real Kafka
and PostgreSQL: start and stop it (``deploy.worker``, the harness ``llmrec up`` and the benchmarks use),
publish raw messages and learn where they landed, read a topic to its end, wait for the worker's group to
catch up.

The same patterns as ``test_worker.py``; new tests import them from here (``from workers import ...``:
pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from deploy import worker as harness
from deploy.worker import WorkerProcess
from llmrec.events.lag import consumer_lag
from llmrec.events.producer import producer_config
from llmrec.events.topics import client_config
from llmrec.item_ids import item_keys
from llmrec.settings import Settings
from ranker.retrieval import ItemIndex

__all__ = [
    "Position",
    "Record",
    "WorkerProcess",
    "build_index",
    "caught_up",
    "publish_recorded",
    "read_to_end",
    "running_worker",
    "wait_until",
]


def build_index(settings: Settings, item_ids: Sequence[str], dim: int = 16, seed: int = 3) -> None:
    """Publish an item index of random vectors for exactly these items (the worker's "known items")."""
    vectors = np.random.default_rng(seed).standard_normal((len(item_ids), dim)).astype(np.float32)
    ItemIndex.build(item_keys(item_ids), vectors).save(settings.index_dir)


def running_worker(settings: Settings, name: str = "worker") -> AbstractContextManager[WorkerProcess]:
    """``python -m stream`` with exactly these settings in its environment, from ``worker ready`` until the
    block ends (then killed if still running); ``stop()`` fails when the worker ignores SIGTERM."""
    return harness.running_worker(settings, name, strict_stop=True)


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def caught_up(settings: Settings) -> bool:
    """True when the worker's group has committed every event topic up to its end."""
    return not any(consumer_lag(settings.kafka, settings.kafka.consumed_topics).values())


@dataclass(frozen=True)
class Position:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Record:
    position: Position
    key: bytes | None
    value: bytes | None


def publish_recorded(
    settings: Settings, messages: Sequence[tuple[str, bytes | None, bytes | None]]
) -> list[Position]:
    """Publish ``(topic, key, value)`` in order, unvalidated; return where each one landed."""
    positions: list[Position | None] = [None] * len(messages)
    errors: list[str] = []

    def delivered(index: int) -> Callable[[Any, Any], None]:
        def report(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(f"message {index}: {err}")
            else:
                positions[index] = Position(msg.topic(), msg.partition(), msg.offset())

        return report

    producer = Producer(producer_config(settings.kafka, client_id="test-publisher"))
    for index, (topic, key, value) in enumerate(messages):
        producer.produce(topic, value=value, key=key, on_delivery=delivered(index))
        producer.poll(0)
    remaining = producer.flush(60)
    assert remaining == 0 and not errors, f"{remaining} undelivered; errors: {errors[:5]}"
    assert all(p is not None for p in positions)
    return [p for p in positions if p is not None]


def read_to_end(settings: Settings, topic: str, timeout_s: float = 60.0) -> list[Record]:
    """Every record of ``topic`` from the start up to its current end (high watermark), in no set order."""
    consumer = Consumer(
        {
            **client_config(settings.kafka),
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.message.max.bytes": 2 * 1024 * 1024,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends: dict[int, int] = {}
        assignment = []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
                assignment.append(TopicPartition(topic, p, low))
        consumer.assign(assignment)
        records: list[Record] = []
        deadline = time.monotonic() + timeout_s
        done: set[int] = set()
        while len(done) < len(ends):
            assert time.monotonic() < deadline, f"could not read {topic} to its end within {timeout_s}s"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error
                continue
            partition, offset = msg.partition(), msg.offset()
            assert partition is not None and offset is not None
            records.append(Record(Position(topic, partition, offset), msg.key(), msg.value()))
            if offset + 1 >= ends[partition]:
                done.add(partition)
        return records
    finally:
        consumer.close()
