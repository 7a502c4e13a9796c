"""deploy/ against the real servers: Kafka round trip, PostgreSQL with pgvector, stack up/status/down."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from deploy import stack
from deploy.kafka import KAFKA_VERSION
from deploy.postgres import PostgresServer, dsn_answers
from deploy.process import free_port, free_ports, group_members, pid_alive
from llmrec.events.topics import ensure_system_topics, ensure_topics, system_topics
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

pytestmark = pytest.mark.integration

JAR_CACHE = REPO_ROOT / ".llmrec"


def test_kafka_produce_and_consume_round_trip(kafka_bootstrap: str) -> None:
    topic = f"deploy-roundtrip-{uuid.uuid4().hex[:8]}"
    assert ensure_topics(kafka_bootstrap, [topic], partitions=2) == [topic]

    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    delivered: list[str] = []
    producer.produce(
        topic, key=b"user-1", value=b'{"hello": "kafka"}', on_delivery=lambda e, m: delivered.append(str(e))
    )
    assert producer.flush(30) == 0
    assert delivered == ["None"]

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"deploy-test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        message = None
        for _ in range(60):
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                break
        assert message is not None and message.error() is None
        assert message.key() == b"user-1"
        assert json.loads(message.value() or b"") == {"hello": "kafka"}
    finally:
        consumer.close()


def test_auto_topic_creation_is_off(kafka_bootstrap: str) -> None:
    topic = f"never-created-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "message.timeout.ms": 3000})
    errors: list[object] = []
    producer.produce(topic, value=b"x", on_delivery=lambda e, m: errors.append(e))
    producer.flush(10)
    assert errors and errors[0] is not None
    assert topic not in AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics


def test_ensure_system_topics_is_idempotent(settings: Settings) -> None:
    names = system_topics(settings.kafka)
    # The three interaction topics, the items topic and the dead-letter topic.
    assert set(names) == {
        *settings.kafka.event_topics,
        settings.kafka.items_topic,
        settings.kafka.dead_letter_topic,
    }
    assert len(names) == 5
    assert sorted(ensure_system_topics(settings.kafka)) == sorted(names)
    assert ensure_system_topics(settings.kafka) == []
    metadata = AdminClient({"bootstrap.servers": settings.kafka.bootstrap}).list_topics(timeout=10).topics
    for name in names:
        assert len(metadata[name].partitions) == settings.kafka.partitions


def test_postgres_answers_and_has_pgvector(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        conn.execute("create extension if not exists vector")
        row = conn.execute("select '[3,4]'::vector <-> '[0,0]'::vector").fetchone()
        assert row is not None and row[0] == pytest.approx(5.0)
        assert conn.execute("select current_user, current_database()").fetchone() == ("llmrec", "llmrec")


def test_postgres_server_restart_keeps_data(private_dir: Path) -> None:
    server = PostgresServer(state_dir=private_dir / "pg", port=free_port(), durable=False)
    server.start()
    try:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute("create table kept (id int)")
            conn.execute("insert into kept values (42)")
        first_pid = server.pid
        assert first_pid is not None
        server.stop()
        assert not pid_alive(first_pid) and group_members(first_pid) == []
        assert not dsn_answers(server.dsn)
        server.start()
        with psycopg.connect(server.dsn) as conn:
            assert conn.execute("select id from kept").fetchall() == [(42,)]
    finally:
        server.stop()


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """Outside pytest's temp tree: see ``private_tmp`` in conftest.py (PostgreSQL runs as another user)."""
    path = Path(tempfile.mkdtemp(prefix="llmrec-test-deploy-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _local_settings(state_dir: Path) -> Settings:
    """Settings for a private stack on free ports, built without the environment."""
    kafka_port, pg_port, api_port, http_port, *metrics = free_ports(7)
    return Settings(
        state_dir=state_dir,
        artifacts_dir=state_dir / "artifacts",
        data_dir=state_dir / "data",
        log_level="INFO",
        log_json=False,
        kafka=KafkaSettings(bootstrap=f"127.0.0.1:{kafka_port}", topic_prefix="stacktest", partitions=2),
        postgres=PostgresSettings(dsn=SecretStr(f"postgresql://llmrec:llmrec@127.0.0.1:{pg_port}/llmrec")),
        triton=TritonSettings(http_port=metrics[0], grpc_port=metrics[1], metrics_port=metrics[2]),
        worker=WorkerSettings(),
        api=ApiSettings(port=api_port, http_port=http_port),
        preferences=PreferenceSettings(),
    )


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and pid_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def _children_of(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (PostgreSQL's backends each lead their own group)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid and pid_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def test_stack_up_status_down_leaves_no_process(private_dir: Path) -> None:
    settings = _local_settings(private_dir / "state")
    # The stack keeps Kafka's jars in its state folder; borrow the session's copy instead of a 5 s Maven run.
    cached = JAR_CACHE / f"kafka-libs-{KAFKA_VERSION}"
    if (cached / ".complete").exists():
        settings.state_dir.mkdir(parents=True)
        (settings.state_dir / cached.name).symlink_to(cached)
    try:
        started = stack.up(settings, only=("kafka", "postgres"), quiet=True)
        assert [(s.name, s.state) for s in started] == [("kafka", "running"), ("postgres", "running")]
        records = json.loads(stack.state_path(settings).read_text())["components"]
        pids = {name: record["pid"] for name, record in records.items()}
        assert set(pids) == {"kafka", "postgres"} and all(pid_alive(pid) for pid in pids.values())
        assert _children_of(pids["postgres"])  # the checkpointer, walwriter, ... the check below must see go

        # Kafka's `after` step made the topics; PostgreSQL's ran the migrations on the settings' DSN.
        topics = AdminClient({"bootstrap.servers": settings.kafka.bootstrap}).list_topics(timeout=10).topics
        assert set(system_topics(settings.kafka)) <= set(topics)
        assert dsn_answers(settings.postgres.dsn.get_secret_value())

        # A second `up` finds both running and starts nothing.
        again = stack.up(settings, only=("kafka", "postgres"), quiet=True)
        assert [s.pid for s in again] == [pids["kafka"], pids["postgres"]]

        states = {s.name: s.state for s in stack.status(settings, quiet=True)}
        assert states["kafka"] == "running" and states["postgres"] == "running"
        assert states["worker"] == "stopped" and states["api"] == "stopped"
    finally:
        stopped = stack.down(settings, quiet=True)
    assert stopped == ["postgres", "kafka"]  # reverse start order
    for pid in pids.values():
        assert not pid_alive(pid)
        assert group_members(pid) == []
        assert _children_of(pid) == []
    assert _processes_mentioning(str(settings.state_dir)) == []
    assert json.loads(stack.state_path(settings).read_text())["components"] == {}
    states = {s.name: s.state for s in stack.status(settings, quiet=True)}
    assert states["kafka"] == "stopped" and states["postgres"] == "stopped"


def test_stack_uses_servers_that_already_answer(settings: Settings) -> None:
    statuses = stack.up(settings, only=("kafka", "postgres"), quiet=True)
    assert [(s.name, s.state) for s in statuses] == [("kafka", "external"), ("postgres", "external")]
    assert stack.down(settings, quiet=True) == []
    # Never stopped: they belong to the test session.
    assert dsn_answers(settings.postgres.dsn.get_secret_value())
    assert AdminClient({"bootstrap.servers": settings.kafka.bootstrap}).list_topics(timeout=10).brokers


def test_unknown_component_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(stack.StackError, match="unknown components"):
        stack.up(_local_settings(tmp_path), only=("zookeeper",), quiet=True)
