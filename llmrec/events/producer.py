"""Publish events to Kafka: one topic per event type, keyed by user id (item events: the items topic, keyed
by item id), idempotent, with delivery accounting.

Keying by user id sends all of a user's events to one partition, so the worker sees them in publish order.
The idempotent producer (``enable.idempotence``, which implies ``acks=all``) keeps retries from writing
duplicates or reordering within a partition.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Protocol, Self

from confluent_kafka import Producer

from llmrec import tracing
from llmrec.events.schema import AnyItemEvent, EventType
from llmrec.events.topics import client_config
from llmrec.events.validation import AnyEvent, encode_event
from llmrec.logs import get_logger
from llmrec.settings import KafkaSettings

log = get_logger(__name__)

_SECRET_KEYS = frozenset({"sasl.password", "ssl.key.password", "ssl.keystore.password"})
_MAX_KEPT_ERRORS = 20


class ProducerClient(Protocol):
    """The part of ``confluent_kafka.Producer`` this module uses (a fake implements it in unit tests)."""

    def produce(
        self,
        topic: str,
        *,
        value: bytes | None = ...,
        key: bytes | None = ...,
        on_delivery: Callable[[Any, Any], None] | None = ...,
        headers: list[tuple[str, str | bytes | None]] | None = ...,
    ) -> None: ...

    def poll(self, timeout: float = ...) -> int: ...

    def flush(self, timeout: float = ...) -> int: ...


class PublishError(RuntimeError):
    """Some messages were not acknowledged by the brokers. ``summary`` is set by the publishing commands."""

    def __init__(self, message: str, *, delivered: int, failed: int, pending: int, errors: list[str]) -> None:
        super().__init__(message)
        self.delivered = delivered
        self.failed = failed
        self.pending = pending
        self.errors = errors
        self.summary: object | None = None


def producer_config(
    kafka: KafkaSettings,
    *,
    client_id: str = "llmrec-producer",
    delivery_timeout_s: float = 60.0,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """librdkafka settings from ``KafkaSettings``. Holds the SASL password: log only ``redacted(config)``."""
    config: dict[str, Any] = {
        **client_config(kafka),  # bootstrap and security settings, shared with the admin client
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        # A few ms of batching multiplies throughput on replays and costs nothing noticeable interactively.
        "linger.ms": 10,
        # Give up on a message after this long instead of librdkafka's 5 minutes, so a dead broker surfaces.
        "message.timeout.ms": int(delivery_timeout_s * 1000),
    }
    if extra:
        config.update(extra)
    return config


def redacted(config: Mapping[str, Any]) -> dict[str, Any]:
    return {key: ("***" if key in _SECRET_KEYS else value) for key, value in config.items()}


def topic_for(kafka: KafkaSettings, event_type: EventType | str) -> str:
    topics = {
        EventType.RATING: kafka.ratings_topic,
        EventType.REVIEW: kafka.reviews_topic,
        EventType.WATCH: kafka.watch_topic,
    }
    return topics[EventType(event_type)]


def _as_bytes(value: bytes | str | None) -> bytes | None:
    return value.encode("utf-8") if isinstance(value, str) else value


class EventProducer:
    """Context manager around a confluent-kafka producer. ``flush`` raises ``PublishError`` on any failure."""

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        client_id: str = "llmrec-producer",
        delivery_timeout_s: float = 60.0,
        extra_config: Mapping[str, Any] | None = None,
        client: ProducerClient | None = None,
    ) -> None:
        self.kafka = kafka
        self._client: ProducerClient = (
            client
            if client is not None
            else self._real_client(
                producer_config(
                    kafka, client_id=client_id, delivery_timeout_s=delivery_timeout_s, extra=extra_config
                )
            )
        )
        self.sent = 0
        self.delivered = 0
        self.failed = 0
        self.errors: list[str] = []

    @staticmethod
    def _real_client(config: dict[str, Any]) -> ProducerClient:
        log.debug("kafka_producer_config", config=redacted(config))
        producer: ProducerClient = Producer(config)
        return producer

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.flush()
        else:
            # Already failing: deliver what we can, but do not mask the original error with a flush error.
            self._client.flush(5.0)

    @property
    def pending(self) -> int:
        return self.sent - self.delivered - self.failed

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is None:
            self.delivered += 1
            return
        self.failed += 1
        if len(self.errors) < _MAX_KEPT_ERRORS:
            topic = msg.topic() if msg is not None else "?"
            self.errors.append(f"{topic}: {err}")

    def publish(self, event: AnyEvent) -> str:
        """Queue one event on its type's topic, keyed by user id. Returns the topic."""
        topic = topic_for(self.kafka, event.event_type)
        self.publish_raw(topic, event.user_id, encode_event(event))
        return topic

    def publish_item(self, event: AnyItemEvent) -> str:
        """Queue one item event on the items topic, keyed by item id (an item's events stay in order).
        Returns the topic."""
        topic = self.kafka.items_topic
        self.publish_raw(topic, event.item_id, encode_event(event))
        return topic

    def publish_raw(self, topic: str, key: bytes | str | None, value: bytes | None) -> None:
        """Queue arbitrary bytes, unvalidated (tests use it to send malformed messages). With tracing on,
        each message gets a producer span whose context travels in its headers (``llmrec.tracing``)."""
        if not tracing.enabled():
            self._produce(topic, key, value, None)
            return
        with tracing.producer_span(topic):
            self._produce(topic, key, value, tracing.kafka_headers())

    def _produce(
        self,
        topic: str,
        key: bytes | str | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None,
    ) -> None:
        # Headers only when there are some: an untraced publish is exactly what it was before tracing.
        extra: dict[str, list[tuple[str, str | bytes | None]]] = {"headers": list(headers)} if headers else {}
        while True:
            try:
                self._client.produce(
                    topic, value=value, key=_as_bytes(key), on_delivery=self._on_delivery, **extra
                )
                break
            except BufferError:
                # The local queue is full: serve delivery reports until librdkafka has room again.
                self._client.poll(0.5)
        self.sent += 1
        self._client.poll(0)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait for every queued message; raise ``PublishError`` if any failed or is still pending."""
        remaining = self._client.flush(timeout)
        pending = max(remaining, self.pending)
        if self.failed or pending:
            log.error(
                "kafka_publish_failed",
                delivered=self.delivered,
                failed=self.failed,
                pending=pending,
                first_error=self.errors[0] if self.errors else None,
            )
            raise PublishError(
                f"{self.failed} message(s) failed and {pending} undelivered after {timeout:.0f}s"
                + (f"; first error: {self.errors[0]}" if self.errors else ""),
                delivered=self.delivered,
                failed=self.failed,
                pending=pending,
                errors=list(self.errors),
            )
