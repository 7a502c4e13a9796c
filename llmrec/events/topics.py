"""Create the Kafka topics the system reads and writes, idempotently.

The broker runs with ``auto.create.topics.enable=false``: a typo in a topic name must fail loudly rather
than create a stray topic with default settings. So topics are created here, before the worker starts,
with the partition count from the settings (events are keyed by user id; partitions bound parallelism).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from llmrec.logs import get_logger
from llmrec.settings import KafkaSettings

log = get_logger(__name__)


def client_config(kafka: KafkaSettings) -> dict[str, str]:
    """librdkafka connection settings (bootstrap and security) derived from the settings: the one mapping
    every confluent-kafka client (producers, admin, consumers) uses. Holds secrets: log only
    ``llmrec.events.producer.redacted(config)``."""
    config = {"bootstrap.servers": kafka.bootstrap, "security.protocol": kafka.security_protocol}
    if kafka.uses_sasl:
        password = kafka.sasl_password_secret()
        config["sasl.mechanism"] = kafka.sasl_mechanism
        config["sasl.username"] = kafka.sasl_username or ""
        config["sasl.password"] = password.get_secret_value() if password is not None else ""
    if kafka.uses_ssl:
        files = {
            "ssl.ca.location": kafka.ssl_ca_file,
            "ssl.certificate.location": kafka.ssl_cert_file,
            "ssl.key.location": kafka.ssl_key_file,
        }
        config.update({key: str(path) for key, path in files.items() if path is not None})
        key_password = kafka.ssl_key_password_secret()
        if key_password is not None:
            config["ssl.key.password"] = key_password.get_secret_value()
    return config


def system_topics(kafka: KafkaSettings) -> tuple[str, ...]:
    """The three event topics, the items topic and the dead-letter topic."""
    return (*kafka.event_topics, kafka.items_topic, kafka.dead_letter_topic)


def ensure_topics(
    bootstrap: str | Mapping[str, str],
    names: Iterable[str],
    partitions: int,
    *,
    replication_factor: int = 1,
    topic_config: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet and wait until every one has a leader for each partition.

    ``bootstrap`` is a ``host:port`` list or a full librdkafka config (for SASL). Existing topics are left
    as they are, whatever their partition count. Returns the names this call created.
    """
    config: dict[str, str | int | float | bool] = (
        {"bootstrap.servers": bootstrap} if isinstance(bootstrap, str) else dict(bootstrap)
    )
    wanted = list(dict.fromkeys(names))
    admin = AdminClient(config)
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [name for name in wanted if name not in existing]
    created: list[str] = []
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=partitions,
                    replication_factor=replication_factor,
                    config=dict(topic_config or {}),
                )
                for name in missing
            ],
            operation_timeout=timeout_s,
            request_timeout=timeout_s,
        )
        for name, future in futures.items():
            try:
                future.result()
                created.append(name)
            except KafkaException as exc:
                # Another process may have created it between our listing and our request.
                if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                raise
    _wait_for_leaders(admin, wanted, timeout_s)
    if created:
        log.info("topics_created", topics=created, partitions=partitions)
    return created


def ensure_system_topics(kafka: KafkaSettings, timeout_s: float = 30.0) -> list[str]:
    """Create the event, items and dead-letter topics named by the settings."""
    return ensure_topics(client_config(kafka), system_topics(kafka), kafka.partitions, timeout_s=timeout_s)


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout_s: float) -> None:
    """A just-created topic is not usable until its partitions have leaders; producers would error first."""
    deadline = time.monotonic() + timeout_s
    while True:
        metadata = admin.list_topics(timeout=timeout_s).topics
        pending = [
            name
            for name in names
            if name not in metadata
            or metadata[name].error is not None
            or not metadata[name].partitions
            or any(p.leader < 0 for p in metadata[name].partitions.values())
        ]
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"topics without leaders after {timeout_s:.0f}s: {pending}")
        time.sleep(0.1)
