"""Consumer lag: how far the worker's consumer group is behind the end of each topic.

Used by the demo and the tests to wait until everything published has been processed: the worker commits
an offset only after the batch is applied or dead-lettered, so zero lag means nothing is pending.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from confluent_kafka import Consumer, TopicPartition

from llmrec.events.topics import client_config
from llmrec.settings import KafkaSettings


def consumer_lag(kafka: KafkaSettings, topics: Iterable[str], group: str | None = None) -> dict[str, int]:
    """Messages not yet committed by ``group`` (default: the worker's group), summed per topic."""
    config = {
        **client_config(kafka),
        "group.id": group or kafka.consumer_group,
        "enable.auto.commit": False,
    }
    consumer = Consumer(config)
    try:
        lag: dict[str, int] = {}
        metadata = consumer.list_topics(timeout=10)
        for topic in topics:
            partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
            committed = consumer.committed(partitions, timeout=10)
            total = 0
            for tp in committed:
                low, high = consumer.get_watermark_offsets(tp, timeout=10)
                # No commit yet (negative offset): everything from the log start is pending.
                position = tp.offset if tp.offset >= 0 else low
                total += max(0, high - position)
            lag[topic] = total
        return lag
    finally:
        consumer.close()


def wait_until_consumed(
    kafka: KafkaSettings,
    topics: Iterable[str] | None = None,
    timeout_s: float = 300.0,
    poll_s: float = 0.5,
) -> float:
    """Block until the worker's lag is zero on ``topics`` (default: every topic the worker consumes).
    Returns the seconds waited.

    Raises ``TimeoutError`` with the remaining lag if the worker does not catch up in time.
    """
    names = tuple(topics) if topics is not None else kafka.consumed_topics
    started = time.monotonic()
    while True:
        lag = consumer_lag(kafka, names)
        if not any(lag.values()):
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"worker still behind after {timeout_s:.0f}s: {lag}")
        time.sleep(poll_s)
