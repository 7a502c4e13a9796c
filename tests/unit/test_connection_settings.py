"""Kafka and PostgreSQL connection security settings: validation, secrets from the environment or files,
and their mapping onto every client (librdkafka, Faust/aiokafka, psycopg). The real servers refusing and
accepting credentials are in tests/integration/test_connection_security.py."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import certifi
import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from psycopg.conninfo import conninfo_to_dict
from pydantic import SecretStr, ValidationError

from llmrec.events.topics import client_config
from llmrec.logs import configure_logging
from llmrec.settings import KafkaSettings, PostgresSettings, Settings
from llmrec.store.pool import CappedAttempt
from stream.app import broker_credentials

SECRET = "s3cret-Zq9!"


def secret_file(tmp_path: Path, name: str, content: str = SECRET + "\n") -> Path:
    path = tmp_path / name
    path.write_text(content)
    return path


# -- Kafka ----------------------------------------------------------------------------------------------


def test_plaintext_sends_no_credentials() -> None:
    config = client_config(KafkaSettings(bootstrap="b:9092"))
    assert config == {"bootstrap.servers": "b:9092", "security.protocol": "PLAINTEXT"}
    assert broker_credentials(KafkaSettings()) is None


def test_sasl_password_from_a_file_reaches_librdkafka_and_faust(tmp_path: Path) -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="svc",
        sasl_password_file=secret_file(tmp_path, "kafka-password"),
    )
    config = client_config(kafka)
    assert config["security.protocol"] == "SASL_PLAINTEXT"
    assert (config["sasl.mechanism"], config["sasl.username"], config["sasl.password"]) == (
        "SCRAM-SHA-256",
        "svc",
        SECRET,
    )
    assert not any(key.startswith("ssl.") for key in config)
    credentials = broker_credentials(kafka)
    assert isinstance(credentials, faust.SASLCredentials)
    auth = credentials_to_aiokafka_auth(credentials)
    assert auth["security_protocol"] == "SASL_PLAINTEXT" and auth["sasl_mechanism"] == "SCRAM-SHA-256"
    assert auth["sasl_plain_username"] == "svc" and auth["sasl_plain_password"] == SECRET
    assert SECRET not in repr(credentials) and SECRET not in repr(kafka)


def test_sasl_ssl_maps_the_ca_to_both_clients(tmp_path: Path) -> None:
    ca = Path(certifi.where())
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_username="svc",
        sasl_password=SecretStr(SECRET),
        ssl_ca_file=ca,
    )
    config = client_config(kafka)
    assert config["security.protocol"] == "SASL_SSL" and config["sasl.mechanism"] == "PLAIN"
    assert config["ssl.ca.location"] == str(ca)
    auth = credentials_to_aiokafka_auth(broker_credentials(kafka))
    assert auth["security_protocol"] == "SASL_SSL"
    context = auth["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    assert context.cert_store_stats()["x509_ca"] > 0


def test_ssl_alone_maps_files_and_key_password(tmp_path: Path) -> None:
    kafka = KafkaSettings(
        security_protocol="SSL",
        ssl_ca_file=Path(certifi.where()),
        ssl_cert_file=tmp_path / "client.pem",
        ssl_key_file=tmp_path / "client.key",
        ssl_key_password_file=secret_file(tmp_path, "key-password"),
    )
    config = client_config(kafka)
    assert config["ssl.certificate.location"] == str(tmp_path / "client.pem")
    assert config["ssl.key.location"] == str(tmp_path / "client.key")
    assert config["ssl.key.password"] == SECRET
    assert "sasl.password" not in config


def test_ssl_without_a_client_certificate_gives_faust_ssl_credentials() -> None:
    credentials = broker_credentials(KafkaSettings(security_protocol="SSL"))
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials_to_aiokafka_auth(credentials)["security_protocol"] == "SSL"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"security_protocol": "SASL_PLAINTEXT"}, "needs kafka.sasl_username"),
        ({"security_protocol": "SASL_SSL", "sasl_username": "svc"}, "needs kafka.sasl_username"),
        ({"sasl_username": "svc", "sasl_password": "x"}, "need security_protocol SASL"),
        ({"ssl_ca_file": "/ca.pem"}, "need security_protocol SSL"),
        ({"security_protocol": "SSL", "ssl_cert_file": "/c.pem"}, "set together"),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_username": "svc",
                "sasl_password": "x",
                "sasl_password_file": "/p",
            },
            "alternatives",
        ),
        ({"security_protocol": "TLS"}, "security_protocol"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "GSSAPI"}, "sasl_mechanism"),
    ],
)
def test_inconsistent_kafka_security_is_refused(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        KafkaSettings.model_validate(fields)


def test_an_unreadable_secret_file_names_the_file_not_the_secret(tmp_path: Path) -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_PLAINTEXT", sasl_username="svc", sasl_password_file=tmp_path / "missing"
    )
    with pytest.raises(ValueError, match="missing"):
        client_config(kafka)


# -- PostgreSQL -----------------------------------------------------------------------------------------


def test_postgres_password_file_and_tls_settings_shape_the_conninfo(tmp_path: Path) -> None:
    pg = PostgresSettings(
        dsn=SecretStr("postgresql://app@db.example:5432/llmrec"),
        password_file=secret_file(tmp_path, "pg-password", SECRET + "\r\n"),
        sslmode="verify-full",
        sslrootcert=tmp_path / "ca.pem",
        sslcert=tmp_path / "client.pem",
        sslkey=tmp_path / "client.key",
    )
    parts = conninfo_to_dict(pg.conninfo())
    assert parts["password"] == SECRET and parts["user"] == "app" and parts["host"] == "db.example"
    assert parts["sslmode"] == "verify-full" and parts["sslrootcert"] == str(tmp_path / "ca.pem")
    assert parts["sslcert"] == str(tmp_path / "client.pem")
    assert parts["sslkey"] == str(tmp_path / "client.key")
    assert SECRET not in repr(pg) and SECRET not in str(pg)


def test_postgres_defaults_leave_the_dsn_as_it_is() -> None:
    pg = PostgresSettings()
    assert pg.conninfo() == pg.dsn.get_secret_value()


def test_postgres_settings_refuse_contradictions(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="alternatives"):
        PostgresSettings(password=SecretStr("a"), password_file=tmp_path / "p")
    with pytest.raises(ValidationError, match="set together"):
        PostgresSettings(sslcert=tmp_path / "c.pem")
    with pytest.raises(ValidationError, match="sslmode"):
        PostgresSettings.model_validate({"sslmode": "sometimes"})


def test_secrets_from_the_environment_stay_out_of_reprs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LLMREC_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("LLMREC_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("LLMREC_KAFKA__SASL_PASSWORD", SECRET)
    monkeypatch.setenv("LLMREC_KAFKA__SSL_KEY_PASSWORD", SECRET + "k")
    monkeypatch.setenv("LLMREC_POSTGRES__PASSWORD", SECRET + "p")
    monkeypatch.setenv("LLMREC_POSTGRES__DSN", f"postgresql://app:{SECRET}d@db:5432/llmrec")
    settings = Settings()
    assert client_config(settings.kafka)["sasl.password"] == SECRET
    assert conninfo_to_dict(settings.postgres.conninfo())["password"] == SECRET + "p"
    for text in (repr(settings), str(settings), repr(settings.model_dump())):
        assert SECRET not in text


# -- PostgreSQL pool reconnects ---------------------------------------------------------------------------


def test_reconnect_delay_is_capped() -> None:
    attempt = CappedAttempt(timeout=300.0, max_delay_s=5.0)
    delays = []
    for step in range(10):
        attempt.update_delay(now=float(step))
        delays.append(attempt.delay)
    assert max(delays) == 5.0
    assert delays[0] < 2.0 and delays == sorted(delays)


# -- logs ----------------------------------------------------------------------------------------------------


def test_the_sasl_handshake_logger_stays_above_debug() -> None:
    """aiokafka.conn logs the SASL handshake bytes (the password) at DEBUG; found by the secured worker
    test in tests/integration/test_connection_security.py."""
    configure_logging("DEBUG")
    try:
        assert not logging.getLogger("aiokafka.conn").isEnabledFor(logging.DEBUG)
        assert logging.getLogger("aiokafka.conn").isEnabledFor(logging.INFO)
    finally:
        configure_logging("INFO")
