"""Consumer lag: how far the worker's consumer group is behind the end of each topic.

Used by the demo and the tests to wait until everything published has been processed, and by the admin
page (``grpc_api.admin``) to show it per partition: the worker commits an offset only after the batch is
applied or dead-lettered, so zero lag means nothing is pending.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from llmrec.events.topics import client_config
from llmrec.settings import KafkaSettings


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # the group's committed offset; None before its first commit
    end: int  # the high watermark: the offset the next message will get
    lag: int  # messages not yet committed by the group


def partition_lag(
    kafka: KafkaSettings, topics: Iterable[str], group: str | None = None, *, timeout_s: float = 10.0
) -> list[PartitionLag]:
    """Committed offset against high watermark of every partition of ``topics``, for ``group`` (default:
    the worker's group). Only reads: the consumer never joins the group or commits."""
    config = {
        **client_config(kafka),
        "group.id": group or kafka.consumer_group,
        "enable.auto.commit": False,
    }
    consumer = Consumer(config)
    try:
        out: list[PartitionLag] = []
        metadata = consumer.list_topics(timeout=timeout_s)
        for topic in topics:
            partitions = [TopicPartition(topic, p) for p in sorted(metadata.topics[topic].partitions)]
            for tp in consumer.committed(partitions, timeout=timeout_s):
                low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
                # No commit yet (negative offset): everything from the log start is pending.
                position = tp.offset if tp.offset >= 0 else low
                committed = tp.offset if tp.offset >= 0 else None
                out.append(PartitionLag(topic, tp.partition, committed, high, max(0, high - position)))
        return out
    finally:
        consumer.close()


def consumer_lag(kafka: KafkaSettings, topics: Iterable[str], group: str | None = None) -> dict[str, int]:
    """Messages not yet committed by ``group`` (default: the worker's group), summed per topic."""
    names = list(topics)
    lag = dict.fromkeys(names, 0)
    for part in partition_lag(kafka, names, group):
        lag[part.topic] += part.lag
    return lag


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
