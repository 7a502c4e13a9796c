"""Apache Kafka as one local process: KRaft combined mode (broker and controller), jars from Maven Central.

No Kafka tarball can be downloaded here and there may be no Docker engine, so ``deploy/kafka/pom.xml``
resolves the broker's runtime jars with Maven into a cache folder, and the broker runs exactly as Kafka's
own start scripts would run it (``kafka.tools.StorageTool format`` once, then ``kafka.Kafka``).
"""

from __future__ import annotations

import base64
import fcntl
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient

from deploy.process import ManagedProcess, ProcessError, free_port, port_free, port_open, spawn, wait_until
from llmrec.logs import get_logger
from llmrec.settings import Settings

log = get_logger(__name__)

# Keep in step with <kafka.version> in deploy/kafka/pom.xml and the image tag in deploy/compose.yaml.
KAFKA_VERSION = "4.1.1"
POM_PATH = Path(__file__).resolve().parent / "kafka" / "pom.xml"
READY_LINE = r"Kafka Server started"
# A controlled shutdown of a single combined node takes a few seconds; past this it gets SIGKILL.
STOP_GRACE_S = 30.0

LOG4J2_TEMPLATE = """\
# Written by deploy/kafka.py. Everything at INFO to one file; the client request log stays quiet.
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log_file}
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.request.additivity = false
logger.request.appenderRef.file.ref = FILE
"""


class KafkaSetupError(ProcessError):
    """Java, Maven or the broker's jars are missing or broken."""


def _require_tool(name: str, why: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise KafkaSetupError(f"`{name}` is not on PATH; it is needed to {why}")
    return path


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialise jar fetches between processes (parallel test sessions share the cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch_kafka_jars(cache_dir: Path, version: str = KAFKA_VERSION, timeout_s: float = 900.0) -> Path:
    """The folder of the broker's runtime jars, fetched with Maven on first use and reused afterwards.

    ``~/.m2`` keeps the downloads, so a missing cache folder costs a copy, not a download. The jars land in
    a temporary folder that is renamed when complete: an interrupted fetch never leaves a half folder.
    """
    # Absolute: Maven resolves a relative output folder against the pom's folder, not ours.
    cache_dir = cache_dir.resolve()
    libs = cache_dir / f"kafka-libs-{version}"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    mvn = _require_tool("mvn", "fetch Apache Kafka's jars from Maven Central")
    with _file_lock(cache_dir / ".kafka-libs.lock"):
        if marker.exists():
            return libs
        partial = cache_dir / f"kafka-libs-{version}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        began = time.monotonic()
        command = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM_PATH),
            f"-Dkafka.version={version}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={partial}",
        ]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise KafkaSetupError(f"Maven did not fetch Kafka {version} within {timeout_s:.0f}s") from exc
        if result.returncode != 0 or not (partial / f"kafka_2.13-{version}.jar").exists():
            raise KafkaSetupError(
                f"Maven could not fetch Kafka {version} (exit {result.returncode}):\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        (partial / ".complete").write_text(f"{version}\n")
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)
        log.info(
            "kafka_jars_fetched",
            version=version,
            folder=str(libs),
            seconds=round(time.monotonic() - began, 1),
        )
    return libs


def new_cluster_id() -> str:
    """A cluster id as Kafka writes them: a random UUID in URL-safe base64 without padding (22 chars)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def single_node_properties(partitions: int) -> dict[str, str]:
    """Broker settings shared by the local process and the container (deploy/compose.yaml, the tests)."""
    return {
        "process.roles": "broker,controller",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "num.partitions": str(partitions),
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        # One node: every internal topic must accept replication factor 1 or it can never be created.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.min.isr": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # 50 offsets partitions by default: creating them makes a consumer's first join slow on 2 cores.
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.num.partitions": "4",
        # A single consumer (the worker, a test) should not wait 3 s for others that never come.
        "group.initial.rebalance.delay.ms": "0",
        # A misspelt topic must fail, not appear with defaults: topics are created by ensure_topics.
        "auto.create.topics.enable": "false",
    }


def container_environment(advertised: str, partitions: int) -> dict[str, str]:
    """The ``apache/kafka`` image's environment for the same single node (``KAFKA_`` + upper snake case).

    Inside the container the broker listens on 9092 and the controller on 9093; ``advertised`` is the
    ``host:port`` clients reach the mapped 9092 at.
    """
    properties = {
        "node.id": "1",
        "controller.quorum.voters": "1@localhost:9093",
        "listeners": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "advertised.listeners": f"PLAINTEXT://{advertised}",
        **single_node_properties(partitions),
    }
    return {"KAFKA_" + key.upper().replace(".", "_"): value for key, value in properties.items()}


@dataclass
class KafkaBroker:
    """A single-node Kafka (broker + controller) with its config, data and logs under ``state_dir``."""

    state_dir: Path
    port: int
    controller_port: int
    cache_dir: Path
    partitions: int = 4
    host: str = "127.0.0.1"
    version: str = KAFKA_VERSION
    heap_max: str = "1g"
    # When set, the client listener is SASL_PLAINTEXT with the PLAIN mechanism and accepts exactly these
    # ``{username: password}``; the first user is the broker's own (inter-broker) login. Off by default.
    sasl_users: Mapping[str, str] | None = None
    # When set, the client listener speaks TLS with this PEM file (key + certificate chain); clients and
    # the broker itself (inter-broker) trust the CA certificates in ``tls_truststore``.
    tls_keystore: Path | None = None
    tls_truststore: Path | None = None
    process: ManagedProcess | None = field(default=None, init=False)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def properties_path(self) -> Path:
        return self.state_dir / "server.properties"

    @property
    def server_log(self) -> Path:
        """The broker's own log (log4j); its stdout and stderr go to ``kafka.out``."""
        return self.state_dir / "logs" / "server.log"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    def write_config(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.server_log.parent.mkdir(parents=True, exist_ok=True)
        lines = {
            "node.id": "1",
            # A static voter set: `format` needs no --standalone and a restart may change nothing else.
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "log.dirs": str(self.data_dir),
            **single_node_properties(self.partitions),
            **self._security_properties(),
        }
        self.properties_path.write_text("".join(f"{key}={value}\n" for key, value in lines.items()))
        # It may hold SASL passwords.
        self.properties_path.chmod(0o600)
        (self.state_dir / "log4j2.properties").write_text(LOG4J2_TEMPLATE.format(log_file=self.server_log))

    @property
    def client_protocol(self) -> str:
        """The client listener's security protocol: PLAINTEXT unless SASL users or TLS files are set."""
        sasl, tls = bool(self.sasl_users), self.tls_keystore is not None
        return {(False, False): "PLAINTEXT", (True, False): "SASL_PLAINTEXT", (False, True): "SSL"}.get(
            (sasl, tls), "SASL_SSL"
        )

    def _security_properties(self) -> dict[str, str]:
        """The client listener with SASL (PLAIN, inline JAAS config: no JAAS file) and/or TLS (PEM files)."""
        listener = self.client_protocol
        if listener == "PLAINTEXT":
            return {}
        properties = {
            "listeners": f"{listener}://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"{listener}://{self.host}:{self.port}",
            "listener.security.protocol.map": f"{listener}:{listener},CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": listener,
        }
        if self.sasl_users:
            broker_user, broker_password = next(iter(self.sasl_users.items()))
            users = " ".join(f'user_{name}="{password}"' for name, password in self.sasl_users.items())
            properties |= {
                "sasl.enabled.mechanisms": "PLAIN",
                "sasl.mechanism.inter.broker.protocol": "PLAIN",
                f"listener.name.{listener.lower()}.plain.sasl.jaas.config": (
                    "org.apache.kafka.common.security.plain.PlainLoginModule required "
                    f'username="{broker_user}" password="{broker_password}" {users};'
                ),
            }
        if self.tls_keystore is not None:
            properties |= {
                # One PEM file with the private key (PKCS#8, unencrypted) and the certificate chain.
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(self.tls_keystore),
            }
            if self.tls_truststore is not None:
                properties |= {
                    "ssl.truststore.type": "PEM",
                    "ssl.truststore.location": str(self.tls_truststore),
                }
        return properties

    def client_config(self) -> dict[str, str]:
        """librdkafka settings that reach this broker (as its first SASL user when SASL is on)."""
        config = {"bootstrap.servers": self.bootstrap, "security.protocol": self.client_protocol}
        if self.sasl_users:
            user, password = next(iter(self.sasl_users.items()))
            config |= {"sasl.mechanism": "PLAIN", "sasl.username": user, "sasl.password": password}
        if self.tls_truststore is not None:
            config["ssl.ca.location"] = str(self.tls_truststore)
        return config

    def _java(self, libs: Path) -> list[str]:
        java = _require_tool("java", "run the Kafka broker (Java 17 or newer)")
        return [
            java,
            "-Xms256m",
            f"-Xmx{self.heap_max}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.state_dir / 'log4j2.properties'}",
            "-cp",
            # The JVM expands this wildcard itself; no shell is involved.
            f"{libs}/*",
        ]

    def _cluster_id(self) -> str:
        path = self.state_dir / "cluster.id"
        if path.exists():
            return path.read_text().strip()
        cluster_id = new_cluster_id()
        path.write_text(cluster_id + "\n")
        return cluster_id

    def format_storage(self, libs: Path) -> None:
        """Format the log folder once; a formatted folder (meta.properties present) is kept as it is."""
        if (self.data_dir / "meta.properties").exists():
            return
        command = [
            *self._java(libs),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            self._cluster_id(),
            "-c",
            str(self.properties_path),
            "--ignore-formatted",
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise KafkaSetupError(
                f"kafka storage format failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )

    def start(self, timeout_s: float = 120.0) -> None:
        if self.process is not None and self.process.alive():
            return
        for port in (self.port, self.controller_port):
            if not port_free(self.host, port):
                raise KafkaSetupError(f"port {self.host}:{port} is taken; Kafka cannot listen there")
        libs = fetch_kafka_jars(self.cache_dir, self.version)
        self.write_config()
        self.format_storage(libs)
        # The ready line of a previous run must not satisfy this one.
        if self.server_log.exists():
            self.server_log.replace(self.server_log.with_name("server.log.1"))
        self.process = spawn(
            "kafka",
            [*self._java(libs), "kafka.Kafka", str(self.properties_path)],
            log_path=self.state_dir / "logs" / "kafka.out",
            cwd=self.state_dir,
            stop_signal=signal.SIGTERM,
            grace_s=STOP_GRACE_S,
        )
        try:
            self.process.wait_ready(
                log_pattern=READY_LINE, probe=self.answers, timeout_s=timeout_s, watch=self.server_log
            )
        except ProcessError:
            self.stop()
            raise
        log.info("kafka_ready", bootstrap=self.bootstrap, pid=self.process.pid, version=self.version)

    def answers(self) -> bool:
        return kafka_answers(self.client_config())

    def stop(self, grace_s: float | None = None) -> None:
        if self.process is not None:
            self.process.stop(grace_s)


def kafka_answers(bootstrap: str | Mapping[str, str], timeout_s: float = 3.0) -> bool:
    """True when a broker returns cluster metadata with at least one broker.

    ``bootstrap`` is ``host:port`` or a whole librdkafka config (for SASL).
    """
    config: dict[str, str | int | float | bool] = (
        {"bootstrap.servers": bootstrap} if isinstance(bootstrap, str) else dict(bootstrap)
    )
    # Nothing listening is the common "no" (before `up`): answer it at once, not after the metadata timeout.
    addresses = [split_host_port(a.strip()) for a in str(config["bootstrap.servers"]).split(",") if a.strip()]
    if not any(port_open(host, port) for host, port in addresses):
        return False
    # log_level 0: a probe of a port where nothing listens yet should not fill stderr with retries.
    config |= {"socket.connection.setup.timeout.ms": 2000, "log_level": 0}
    try:
        admin = AdminClient(config)
        return bool(admin.list_topics(timeout=timeout_s).brokers)
    except Exception:  # librdkafka raises KafkaException for every kind of unreachable broker
        return False


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    return host.strip("[]"), int(port)


def broker_for_settings(settings: Settings) -> KafkaBroker:
    """The broker ``llmrec up`` runs: the bootstrap's port, and the next one for the controller."""
    bootstrap = settings.kafka.bootstrap.split(",")[0]
    host, port = split_host_port(bootstrap)
    controller_port = port + 1
    if not port_free(host, controller_port):
        controller_port = free_port(host)
    return KafkaBroker(
        state_dir=settings.state_dir / "kafka",
        port=port,
        controller_port=controller_port,
        cache_dir=settings.state_dir,
        partitions=settings.kafka.partitions,
        host=host,
    )


def wait_for_kafka(bootstrap: str | Mapping[str, str], timeout_s: float) -> bool:
    return wait_until(lambda: kafka_answers(bootstrap), timeout_s, 0.5)


__all__ = [
    "KAFKA_VERSION",
    "KafkaBroker",
    "KafkaSetupError",
    "broker_for_settings",
    "container_environment",
    "fetch_kafka_jars",
    "kafka_answers",
    "new_cluster_id",
    "single_node_properties",
    "split_host_port",
    "wait_for_kafka",
]
