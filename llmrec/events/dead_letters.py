"""The dead-letter record, and reading and replaying the dead-letter topic.

The worker (``stream/``) writes one JSON object per rejected message on ``<prefix>.deadletter.v1``, keyed
like the original (the user id):

    {"reason": "schema_violation", "detail": "rating: ...", "topic": "llmrec.ratings.v1", "partition": 2,
     "offset": 1041, "key": "alice", "payload": "{...}", "payload_base64": "eyJ...", "failed_at": "...Z"}

``reason`` is a stable code from ``llmrec.events.validation.RejectReason``.
``payload`` is the original bytes as text (undecodable bytes replaced) for people; ``payload_base64`` is
the exact bytes, for a replay.

A replay (the admin page, ``grpc_api.admin``) republishes those exact bytes, with the original key, to the
topic they came from; the worker then handles them as any new message: applied once (the ledger is keyed
by event id) when the cause is gone (the item has arrived since), dead-lettered again otherwise.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from llmrec.events.producer import EventProducer, ProducerClient
from llmrec.events.topics import client_config
from llmrec.settings import KafkaSettings


class BadDeadLetter(ValueError):
    """A record of the dead-letter topic that is not a dead letter (or cannot be replayed)."""


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    payload: bytes | None
    failed_at: datetime

    def to_json(self) -> bytes:
        payload = self.payload
        record = {
            "reason": self.reason,
            "detail": self.detail,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": self.key.decode("utf-8", errors="replace") if self.key is not None else None,
            "payload": payload.decode("utf-8", errors="replace") if payload is not None else None,
            "payload_base64": base64.b64encode(payload).decode("ascii") if payload is not None else None,
            "failed_at": self.failed_at.isoformat().replace("+00:00", "Z"),
        }
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes, key: bytes | None = None) -> DeadLetter:
        """The inverse of ``to_json``. ``key`` is the record's own Kafka key: the original key's exact bytes
        (the JSON's ``key`` is text, with undecodable bytes replaced)."""
        try:
            record: Any = json.loads(raw)
            if not isinstance(record, dict):
                raise BadDeadLetter("not a JSON object")
            encoded = record.get("payload_base64")
            payload = base64.b64decode(encoded, validate=True) if encoded is not None else None
            text_key = record.get("key")
            return cls(
                reason=str(record["reason"]),
                detail=str(record.get("detail", "")),
                topic=str(record["topic"]),
                partition=int(record["partition"]),
                offset=int(record["offset"]),
                key=key if key is not None else (text_key.encode("utf-8") if text_key is not None else None),
                payload=payload,
                failed_at=datetime.fromisoformat(str(record["failed_at"]).replace("Z", "+00:00")),
            )
        except BadDeadLetter:
            raise
        except (ValueError, KeyError, TypeError, binascii.Error, RecursionError) as exc:
            raise BadDeadLetter(f"not a dead-letter record: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class StoredDeadLetter:
    """A dead letter and where it sits on the dead-letter topic (the id a replay names)."""

    partition: int
    offset: int
    letter: DeadLetter | None  # None: the record did not parse (``problem`` says why)
    problem: str | None = None


@dataclass(frozen=True)
class Replayed:
    topic: str
    key: str | None
    size: int  # bytes republished


def _reader(kafka: KafkaSettings) -> Consumer:
    # A group of its own that never commits: reading must not move any real group's offsets.
    return Consumer(
        {
            **client_config(kafka),
            "group.id": f"llmrec-deadletter-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )


def _stored(partition: int, offset: int, key: bytes | None, value: bytes | None) -> StoredDeadLetter:
    try:
        return StoredDeadLetter(partition, offset, DeadLetter.from_json(value or b"", key))
    except BadDeadLetter as exc:
        return StoredDeadLetter(partition, offset, None, str(exc))


def read_dead_letters(
    kafka: KafkaSettings, limit: int = 50, *, timeout_s: float = 5.0
) -> list[StoredDeadLetter]:
    """The newest ``limit`` records of the dead-letter topic (the last ``limit`` of each partition, newest
    failure first, cut to ``limit``)."""
    topic = kafka.dead_letter_topic
    consumer = _reader(kafka)
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
        if metadata.error is not None:
            raise BadDeadLetter(f"topic {topic}: {metadata.error}")
        assignment: list[TopicPartition] = []
        ends: dict[int, int] = {}
        for p in sorted(metadata.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            start = max(low, high - limit)
            if high > start:
                ends[p] = high
                assignment.append(TopicPartition(topic, p, start))
        out = _read_until(consumer, assignment, ends, timeout_s)
    finally:
        consumer.close()
    out.sort(key=lambda s: (s.letter.failed_at.timestamp() if s.letter else 0.0, s.offset), reverse=True)
    return out[:limit]


def read_dead_letter(
    kafka: KafkaSettings, partition: int, offset: int, *, timeout_s: float = 5.0
) -> StoredDeadLetter | None:
    """The record at ``partition`` / ``offset`` of the dead-letter topic; None when there is none."""
    topic = kafka.dead_letter_topic
    consumer = _reader(kafka)
    try:
        partitions = consumer.list_topics(topic, timeout=timeout_s).topics[topic].partitions
        if partition not in partitions:
            return None
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
        if not low <= offset < high:
            return None
        found = _read_until(
            consumer, [TopicPartition(topic, partition, offset)], {partition: offset + 1}, timeout_s
        )
    finally:
        consumer.close()
    return next((s for s in found if s.offset == offset), None)


def _read_until(
    consumer: Consumer, assignment: list[TopicPartition], ends: dict[int, int], timeout_s: float
) -> list[StoredDeadLetter]:
    """Records of the assigned partitions up to (not including) each one's end offset."""
    if not assignment:
        return []
    consumer.assign(assignment)
    out: list[StoredDeadLetter] = []
    pending = dict(ends)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        partition = msg.partition()
        error = msg.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF and partition is not None:
                pending.pop(partition, None)
            continue
        offset = msg.offset()
        if partition is None or offset is None or partition not in pending:
            continue
        if offset < pending[partition]:
            out.append(_stored(partition, offset, msg.key(), msg.value()))
        if offset + 1 >= pending[partition]:
            pending.pop(partition)
    return out


def replay(
    kafka: KafkaSettings, letter: DeadLetter, *, timeout_s: float = 10.0, client: ProducerClient | None = None
) -> Replayed:
    """Republish the original bytes, with the original key, to the topic they came from, and wait for
    the broker's acknowledgement (``PublishError`` otherwise). Only the topics the worker consumes are
    written: a record naming any other (another prefix's, a forged one) is refused with ``BadDeadLetter``."""
    if letter.topic not in kafka.consumed_topics:
        raise BadDeadLetter(f"{letter.topic!r} is not a topic the worker consumes; not replayed")
    if letter.payload is None:
        raise BadDeadLetter("the dead letter keeps no payload (the original message had none)")
    # A producer per replay: replays are rare operator actions, and flushing it proves delivery.
    with EventProducer(
        kafka, client_id="llmrec-admin-replay", delivery_timeout_s=timeout_s, client=client
    ) as producer:
        producer.publish_raw(letter.topic, letter.key, letter.payload)
        producer.flush(timeout_s)
    key = letter.key.decode("utf-8", errors="replace") if letter.key is not None else None
    return Replayed(topic=letter.topic, key=key, size=len(letter.payload))
