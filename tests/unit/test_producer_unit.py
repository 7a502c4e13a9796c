"""EventProducer with a fake librdkafka client: topics, keys, values, delivery accounting, config."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from llmrec.events.producer import EventProducer, PublishError, producer_config, redacted, topic_for
from llmrec.events.schema import EventType, RatingEvent, ReviewEvent, WatchEvent, WatchStatus
from llmrec.events.validation import encode_event, parse_event
from llmrec.settings import KafkaSettings

WHEN = datetime(2023, 1, 2, 3, 4, 5, tzinfo=UTC)


class FakeMessage:
    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic


class FakeClient:
    """Queues messages; poll/flush call the delivery callbacks. Topics in ``fail`` get an error."""

    def __init__(self, fail: set[str] | None = None, full_times: int = 0, stuck: bool = False) -> None:
        self.messages: list[tuple[str, bytes | None, bytes | None]] = []
        self.pending: list[tuple[str, Callable[[Any, Any], None] | None]] = []
        self.fail = fail or set()
        self.full_times = full_times
        self.stuck = stuck
        self.polls = 0

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        on_delivery: Callable[[Any, Any], None] | None = None,
    ) -> None:
        if self.full_times:
            self.full_times -= 1
            raise BufferError("Local: Queue full")
        self.messages.append((topic, key, value))
        self.pending.append((topic, on_delivery))

    def _deliver(self) -> None:
        if self.stuck:
            return
        for topic, callback in self.pending:
            if callback is not None:
                callback(
                    "Broker: Topic authorization failed" if topic in self.fail else None, FakeMessage(topic)
                )
        self.pending.clear()

    def poll(self, timeout: float = 0) -> int:
        self.polls += 1
        self._deliver()
        return 0

    def flush(self, timeout: float = 0) -> int:
        self._deliver()
        return len(self.pending)


def events() -> list[RatingEvent | ReviewEvent | WatchEvent]:
    return [
        RatingEvent(event_id="r1", user_id="mal:i7Core", item_id="mal:2167", event_time=WHEN, rating=10),
        ReviewEvent(
            event_id="v1", user_id="mal:_Redo_", item_id="mal:2167", event_time=WHEN, text="Quiet and warm."
        ),
        WatchEvent(
            event_id="w1",
            user_id="mal:karthiga",
            item_id="mal:21",
            event_time=WHEN,
            status=WatchStatus.WATCHING,
            episodes_watched=586,
        ),
    ]


def test_topics_keys_and_values() -> None:
    kafka = KafkaSettings(topic_prefix="t")
    client = FakeClient()
    with EventProducer(kafka, client=client) as producer:
        topics = [producer.publish(e) for e in events()]
    assert topics == ["t.ratings.v1", "t.reviews.v1", "t.watch.v1"]
    for (_, key, value), event in zip(client.messages, events(), strict=True):
        assert key == event.user_id.encode()
        assert value == encode_event(event)
        assert parse_event(value, expected_type=event.event_type) == event
    assert (producer.sent, producer.delivered, producer.failed, producer.pending) == (3, 3, 0, 0)


def test_topic_for_every_type() -> None:
    kafka = KafkaSettings()
    assert {topic_for(kafka, t) for t in EventType} == set(kafka.event_topics)


def test_flush_raises_when_a_delivery_failed() -> None:
    kafka = KafkaSettings()
    client = FakeClient(fail={kafka.reviews_topic})
    producer = EventProducer(kafka, client=client)
    for event in events():
        producer.publish(event)
    with pytest.raises(PublishError) as caught:
        producer.flush(1.0)
    assert caught.value.failed == 1 and caught.value.delivered == 2
    assert kafka.reviews_topic in caught.value.errors[0]


def test_flush_raises_when_messages_are_still_queued() -> None:
    producer = EventProducer(KafkaSettings(), client=FakeClient(stuck=True))
    producer.publish(events()[0])
    with pytest.raises(PublishError, match="1 undelivered"):
        producer.flush(0.1)


def test_context_manager_does_not_mask_an_error() -> None:
    producer = EventProducer(KafkaSettings(), client=FakeClient(stuck=True))
    with pytest.raises(KeyError), producer:
        producer.publish(events()[0])
        raise KeyError("original")


def test_full_local_queue_is_retried() -> None:
    client = FakeClient(full_times=3)
    producer = EventProducer(KafkaSettings(), client=client)
    producer.publish_raw("llmrec.ratings.v1", None, b"\xff\xfe not utf-8")
    producer.flush()
    assert client.messages == [("llmrec.ratings.v1", None, b"\xff\xfe not utf-8")]
    assert client.polls >= 3


def test_config_is_idempotent_and_carries_security_settings() -> None:
    kafka = KafkaSettings(
        bootstrap="b:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password=SecretStr("s3cret"),
    )
    config = producer_config(kafka)
    assert config["enable.idempotence"] is True and config["acks"] == "all"
    assert config["bootstrap.servers"] == "b:9093" and config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512" and config["sasl.username"] == "svc"
    assert config["sasl.password"] == "s3cret"
    assert redacted(config)["sasl.password"] == "***"
    assert "s3cret" not in repr(redacted(config))
    assert "sasl.password" not in producer_config(KafkaSettings())


def test_real_client_reports_an_unreachable_broker() -> None:
    """The real librdkafka client accepts the config, and an undeliverable message surfaces in flush."""
    producer = EventProducer(KafkaSettings(bootstrap="127.0.0.1:9"), delivery_timeout_s=1.0)
    producer.publish(events()[0])
    with pytest.raises(PublishError):
        producer.flush(10.0)
    assert producer.failed + producer.pending == 1
