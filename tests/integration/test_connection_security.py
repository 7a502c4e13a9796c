"""Connection security against real servers: PostgreSQL with password (SCRAM) authentication and Kafka
with a SASL_SSL listener (PLAIN over TLS, a throw-away CA), each refusing wrong credentials (and Kafka a
client that does not trust its CA) and accepting the ones given through the settings (passwords in files,
as a deployment would mount them). Then the worker and the API run as processes with those settings at
DEBUG level and JSON logs, and no secret appears in what they logged from start-up to shutdown.

Not run against real servers: PostgreSQL over TLS (sslmode and its files; the mapping is unit-tested in
tests/unit/test_connection_security.py), Kafka client certificates (mTLS) and SCRAM mechanisms.
"""

from __future__ import annotations

import secrets
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from api_process import ApiProcess, publish_sample_index
from pki import LOCALHOST_SERVER, make_ca, make_leaf
from pydantic import SecretStr
from soak import applied_count
from workers import caught_up, running_worker, wait_until

from deploy.kafka import KafkaBroker, kafka_answers
from deploy.postgres import PostgresServer
from deploy.process import free_port, free_ports
from llmrec.data_source import SAMPLE_DIR
from llmrec.datasets.replay import collect_events
from llmrec.events.producer import EventProducer, PublishError
from llmrec.events.schema import EventType
from llmrec.events.topics import client_config, ensure_system_topics
from llmrec.settings import REPO_ROOT, ApiSettings, KafkaSettings, PostgresSettings, Settings
from llmrec.store import migrate
from llmrec.store.interface import StoreUnavailable
from llmrec.store.postgres import PostgresStore
from llmrec_client.client import RecommenderClient
from tests.integration.tmpdirs import private_tmp

pytestmark = pytest.mark.integration

PARTITIONS = 2


@dataclass(frozen=True)
class Secured:
    postgres: PostgresServer
    kafka: KafkaBroker
    pg_password: str
    kafka_password: str
    secrets_dir: Path
    kafka_ca: Path


def write_secret(folder: Path, name: str, value: str) -> Path:
    path = folder / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def secured() -> Iterator[Secured]:
    """A PostgreSQL with a random password and a SASL broker with random passwords, both private."""
    root = private_tmp("llmrec-secured-")
    tls_dir = root / "tls"
    tls_dir.mkdir()
    ca = make_ca(tls_dir, "kafka-ca")
    cert, key = make_leaf(tls_dir, "kafka-broker", ca, LOCALHOST_SERVER)
    keystore = tls_dir / "broker-keystore.pem"
    keystore.write_text(key.read_text() + cert.read_text())
    pg_password = secrets.token_hex(16)
    kafka_password = secrets.token_hex(16)
    port, controller_port = free_ports(2)
    postgres = PostgresServer(
        state_dir=root / "postgres", port=free_port(), password=pg_password, durable=False
    )
    kafka = KafkaBroker(
        state_dir=root / "kafka",
        port=port,
        controller_port=controller_port,
        cache_dir=REPO_ROOT / ".llmrec",
        partitions=PARTITIONS,
        heap_max="512m",
        sasl_users={"admin": secrets.token_hex(16), "llmrec": kafka_password},
        tls_keystore=keystore,
        tls_truststore=ca[0],
    )
    try:
        postgres.start()
        kafka.start()
        secrets_dir = root / "secrets"
        secrets_dir.mkdir()
        yield Secured(postgres, kafka, pg_password, kafka_password, secrets_dir, ca[0])
    finally:
        kafka.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


def pg_settings(secured: Secured, password_file: Path | None) -> PostgresSettings:
    pg = secured.postgres
    # The DSN carries no password: it comes from the file.
    return PostgresSettings(
        dsn=SecretStr(f"postgresql://{pg.user}@{pg.host}:{pg.port}/{pg.database}"),
        password_file=password_file,
        reconnect_max_wait_s=1.0,
    )


def kafka_settings(
    secured: Secured, password_file: Path, username: str = "llmrec", *, trust_ca: bool = True
) -> KafkaSettings:
    return KafkaSettings(
        bootstrap=secured.kafka.bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}",
        partitions=PARTITIONS,
        consumer_group=f"llmrec-sasl-{uuid.uuid4().hex[:8]}",
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username=username,
        sasl_password_file=password_file,
        # Without the test CA the client trusts only the system's roots, which did not sign the broker.
        ssl_ca_file=secured.kafka_ca if trust_ca else None,
    )


async def test_postgres_refuses_a_wrong_password_and_accepts_the_settings_one(secured: Secured) -> None:
    wrong = pg_settings(secured, write_secret(secured.secrets_dir, "pg-wrong", secrets.token_hex(16)))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed") as refused:
        psycopg.connect(wrong.conninfo(), connect_timeout=10).close()
    assert secured.pg_password not in str(refused.value)
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(pg_settings(secured, None).conninfo(), connect_timeout=10).close()
    store = PostgresStore.from_settings(wrong, name="wrong-password")
    with pytest.raises(StoreUnavailable):
        await store.open(timeout=5.0)
    await store.close()

    right = pg_settings(secured, write_secret(secured.secrets_dir, "pg-password", secured.pg_password))
    migrate(right.conninfo())
    async with PostgresStore.from_settings(right, name="right-password") as store:
        await store.ping()


def test_kafka_sasl_ssl_refuses_bad_credentials_and_accepts_the_settings_ones(secured: Secured) -> None:
    wrong = kafka_settings(secured, write_secret(secured.secrets_dir, "kafka-wrong", secrets.token_hex(16)))
    assert not kafka_answers(secured.kafka.bootstrap), "a PLAINTEXT client was let in"
    untrusting = kafka_settings(
        secured, write_secret(secured.secrets_dir, "kafka-password", secured.kafka_password), trust_ca=False
    )
    assert not kafka_answers(client_config(untrusting)), "a broker certificate from an unknown CA was trusted"
    assert not kafka_answers(client_config(wrong)), "a wrong password was accepted"
    unknown = kafka_settings(secured, write_secret(secured.secrets_dir, "kafka-x", "x"), username="mallory")
    assert not kafka_answers(client_config(unknown)), "an unknown user was accepted"

    right = kafka_settings(
        secured, write_secret(secured.secrets_dir, "kafka-password", secured.kafka_password)
    )
    assert kafka_answers(client_config(right))
    ensure_system_topics(right)
    event = next(e for e in collect_events(SAMPLE_DIR).events if e.event_type == EventType.RATING)
    with EventProducer(right) as producer:
        producer.publish(event)
    assert producer.delivered == 1

    producer = EventProducer(wrong, delivery_timeout_s=5.0)
    producer.publish(event)
    with pytest.raises(PublishError):
        producer.flush(15.0)


def test_worker_and_api_run_with_secured_connections_and_never_log_a_secret(
    secured: Secured, settings_factory: Callable[..., Settings]
) -> None:
    pg_file = write_secret(secured.secrets_dir, "pg-password", secured.pg_password)
    kafka_file = write_secret(secured.secrets_dir, "kafka-password", secured.kafka_password)
    settings = settings_factory(
        kafka=kafka_settings(secured, kafka_file),
        postgres=pg_settings(secured, pg_file),
        api=ApiSettings(host="127.0.0.1", port=free_port(), metrics_port=0, grace_period_s=1.0),
        log_level="DEBUG",
        log_json=True,
    )
    publish_sample_index(settings)
    prefix = f"sec{uuid.uuid4().hex[:6]}-"
    events = [
        e.model_copy(update={"event_id": f"{prefix}{e.event_id}", "user_id": f"{prefix}{e.user_id}"})
        for e in collect_events(SAMPLE_DIR).events
        if e.event_type != EventType.REVIEW
    ][:200]
    dsn = settings.postgres.conninfo()

    with running_worker(settings, "secured-worker") as worker:
        with EventProducer(settings.kafka) as producer:
            for event in events:
                producer.publish(event)
        wait_until(lambda: applied_count(dsn, prefix) == len(events), 120, "the events over SASL")
        wait_until(lambda: caught_up(settings), 60, "the worker to commit over SASL")
        assert worker.stop() == 0, worker.log()[-4000:]
        worker_log = worker.log()

    api = ApiProcess(settings, name="secured-api")
    api.start()
    try:
        with RecommenderClient(api.target, timeout_s=10.0) as client:
            answer = client.recommend(events[0].user_id, k=5)
    finally:
        api.stop()
    api_log = api.log()

    assert answer.strategy == "personalized" and answer.items
    assert "worker ready" in worker_log and "debug" in worker_log.lower()
    for name, log in (("worker", worker_log), ("api", api_log)):
        for secret in (secured.pg_password, secured.kafka_password):
            assert secret not in log, f"a secret appears in the {name} log"
