"""The Faust application and its topics, built from ``Settings`` (no module-level app: settings are loaded
once at the entry point and passed down, and tests build apps with their own settings)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

import faust
from aiokafka.errors import KafkaError
from faust.types import TopicT

from llmrec.settings import KafkaSettings, Settings
from stream.deadletter import DeadLetter, SinkUnavailable

# Kafka's group membership: a worker that dies without leaving is noticed after the session timeout, so
# its partitions move within seconds instead of Faust's default minute. aiokafka refuses a session timeout
# longer than the request timeout (Faust raises ImproperlyConfigured), and heartbeats go every third of it.
SESSION_TIMEOUT_S = 10.0
HEARTBEAT_INTERVAL_S = 3.0
REQUEST_TIMEOUT_S = 40.0
# A partition assignment waits this long for every member to rejoin.
REBALANCE_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class WorkerTopics:
    events: tuple[TopicT, ...]
    items: TopicT
    dead_letter: TopicT


def broker_urls(bootstrap: str) -> list[str]:
    """``host:port[,host:port]`` as Faust's broker URL list."""
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """TLS for the worker's Kafka connections: the settings' CA (else the system's roots) and, when given,
    the client certificate and key, as ``llmrec.events.topics.client_config`` gives librdkafka."""
    context = ssl.create_default_context(cafile=str(kafka.ssl_ca_file) if kafka.ssl_ca_file else None)
    if kafka.ssl_cert_file is not None and kafka.ssl_key_file is not None:
        key_password = kafka.ssl_key_password_secret()
        context.load_cert_chain(
            str(kafka.ssl_cert_file),
            str(kafka.ssl_key_file),
            password=key_password.get_secret_value() if key_password is not None else None,
        )
    return context


def broker_credentials(kafka: KafkaSettings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """Faust's ``broker_credentials`` (aiokafka's security_protocol follows from their type): SASL with
    or without TLS, TLS alone, or None for PLAINTEXT. Faust's reprs of these omit the password."""
    if kafka.uses_sasl:
        password = kafka.sasl_password_secret()
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=password.get_secret_value() if password is not None else "",
            mechanism=kafka.sasl_mechanism,
            ssl_context=ssl_context(kafka) if kafka.uses_ssl else None,
        )
    if kafka.uses_ssl:
        return faust.SSLCredentials(ssl_context(kafka))
    return None


def create_app(settings: Settings, *, web_enabled: bool = False) -> faust.App:
    kafka = settings.kafka
    faust_dir = settings.state_dir / "faust"
    faust_dir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level of its datadir
    return faust.App(
        # The app id is the consumer group: every worker with the same id shares the partitions.
        kafka.consumer_group,
        broker=broker_urls(kafka.bootstrap),
        broker_credentials=broker_credentials(kafka),
        # No tables: user state lives in PostgreSQL, so no changelog topics and no RocksDB.
        store="memory://",
        # Faust still creates its table folders (empty with the memory store): keep them in the stack's
        # state folder, not in whatever directory the worker was started from.
        datadir=str(faust_dir / "{conf.id}-data"),
        autodiscover=False,
        web_enabled=web_enabled,
        web_port=settings.worker.web_port,
        web_bind="127.0.0.1",
        # The worker validates bytes itself so that a malformed message reaches the dead-letter topic
        # instead of failing inside Faust's deserialiser.
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=kafka.partitions,
        # app.leader is unused; without this Faust creates one more internal topic.
        topic_disable_leader=True,
        broker_session_timeout=SESSION_TIMEOUT_S,
        broker_heartbeat_interval=HEARTBEAT_INTERVAL_S,
        broker_request_timeout=REQUEST_TIMEOUT_S,
        broker_rebalance_timeout=REBALANCE_TIMEOUT_S,
        # A new consumer group starts at the beginning of the topics: events published before the first
        # worker started are still applied.
        consumer_auto_offset_reset="earliest",
        # A dead letter is only as durable as its acknowledgement: wait for all in-sync replicas.
        producer_acks=-1,
        # On shutdown, wait until every event taken from Kafka is applied (or dead-lettered) and acked, then
        # commit: the batch in flight finishes instead of being replayed.
        stream_wait_empty=True,
        # Messages prefetched per agent while a batch is applied: a few batches' worth, so the next batch is
        # ready when the current one commits (Faust's default 4096 is two of our batches).
        stream_buffer_maxsize=max(4096, 4 * settings.worker.batch_size),
    )


def declare_topics(app: faust.App, kafka: KafkaSettings) -> WorkerTopics:
    def topic(name: str) -> TopicT:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=kafka.partitions,
        )

    return WorkerTopics(
        events=tuple(topic(name) for name in kafka.event_topics),
        items=topic(kafka.items_topic),
        dead_letter=topic(kafka.dead_letter_topic),
    )


class TopicDeadLetterSink:
    """``DeadLetterSink`` writing to a Faust topic; returns once the broker acknowledged every letter."""

    def __init__(self, topic: TopicT) -> None:
        self._topic = topic

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        try:
            # force=True: send now. Otherwise Faust attaches the message to the current event and holds it
            # until that event is acked, while we ack only once the letters are confirmed.
            pending = [
                await self._topic.send(key=letter.key, value=letter.to_json(), force=True)
                for letter in letters
            ]
            await asyncio.gather(*pending)
        except (KafkaError, TimeoutError, OSError) as exc:
            raise SinkUnavailable(f"{type(exc).__name__}: {exc}") from exc
