"""Faults survived, continued (see test_faults.py): the Kafka broker and the gRPC server restarted under
traffic, with every client recovering on its own.

- Kafka: a broker of the test's own (the session's is shared by other tests) is stopped mid-stream and
  started again on the same port and data folder while the publisher keeps publishing and the worker
  keeps consuming. Neither is restarted: both reconnect by themselves. Every event is accounted for:
  published = applied + dead-lettered + duplicates ignored, each applied event counted once.
- gRPC: ``llmrec serve`` is stopped (SIGTERM) and started again on the same port while client threads
  call Recommend. Outcomes, not timings, are asserted: every call is answered or fails with UNAVAILABLE,
  failures only between the stop and that client's first answer after the restart, and every client is
  answered again afterwards.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from api_process import ApiProcess, publish_sample_index
from soak import UNAVAILABLE, PacedPublisher, RequestLoad, SampleStream, applied_count, profile_counter_total
from workers import caught_up, read_to_end, running_worker, wait_until

from deploy.kafka import KafkaBroker
from deploy.process import free_port, free_ports
from llmrec.data_source import SAMPLE_DIR
from llmrec.datasets.replay import collect_events
from llmrec.events.schema import EventType
from llmrec.settings import REPO_ROOT, ApiSettings, KafkaSettings, Settings
from llmrec.store import migrate
from tests.integration.tmpdirs import private_tmp

pytestmark = pytest.mark.integration

PARTITIONS = 4


def dead_letters_with_key_prefix(settings: Settings, prefix: str) -> int:
    records = read_to_end(settings, settings.kafka.dead_letter_topic)
    return sum(1 for r in records if r.key is not None and r.key.decode(errors="replace").startswith(prefix))


# --------------------------------------------------------------------------------------------------
# Kafka


@pytest.fixture
def private_kafka() -> Iterator[KafkaBroker]:
    """A broker of this test's own, to stop and start (jars shared with the session's broker)."""
    state_dir = private_tmp("llmrec-restart-kafka-")
    port, controller_port = free_ports(2)
    broker = KafkaBroker(
        state_dir=state_dir,
        port=port,
        controller_port=controller_port,
        cache_dir=REPO_ROOT / ".llmrec",
        partitions=PARTITIONS,
        heap_max="512m",
    )
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


def test_kafka_broker_restart_mid_stream_loses_nothing(
    settings_factory: Callable[..., Settings], private_kafka: KafkaBroker
) -> None:
    broker = private_kafka
    prefix = f"kr{uuid.uuid4().hex[:6]}-"
    settings = settings_factory(
        kafka=KafkaSettings(
            bootstrap=broker.bootstrap,
            topic_prefix=f"t{uuid.uuid4().hex[:10]}",
            partitions=PARTITIONS,
            consumer_group=f"llmrec-restart-{uuid.uuid4().hex[:8]}",
        )
    )
    dsn = settings.postgres.conninfo()
    publish_sample_index(settings)
    # Ratings and watch events only: no Triton in this test (the Triton outage has its own test).
    events = [e for e in collect_events(SAMPLE_DIR).events if e.event_type != EventType.REVIEW]

    with running_worker(settings, "kafka-restart-worker") as worker:
        publisher = PacedPublisher(
            settings.kafka,
            iter(SampleStream(prefix, events)),
            rate=100.0,
            malformed_every=50,
            duplicate_every=20,
            malformed_key=f"{prefix}bad",
        ).start()
        try:
            wait_until(lambda: applied_count(dsn, prefix) >= 300, 120, "the worker to apply events")
            broker.stop()
            assert not broker.answers()
            stopped_at = time.monotonic()
            time.sleep(5.0)  # the outage: the publisher's messages queue up, the worker's fetches fail
            broker.start()
            outage_s = time.monotonic() - stopped_at
            published_at_restart = publisher.published()
            wait_until(
                lambda: publisher.published() >= published_at_restart + 500,
                120,
                "the publisher to deliver again after the restart",
            )
        finally:
            account = publisher.stop()

        expected = len(account.distinct_ids)
        wait_until(lambda: applied_count(dsn, prefix) >= expected, 180, "every event to be applied")
        wait_until(
            lambda: dead_letters_with_key_prefix(settings, prefix) >= account.malformed,
            60,
            "every malformed message to be dead-lettered",
        )
        wait_until(lambda: caught_up(settings), 60, "the worker to commit its offsets")
        # The worker recovered by itself: it is the process started before the outage.
        assert worker.process.poll() is None, worker.log()[-4000:]
        log = worker.log()
        assert worker.stop() == 0, log[-4000:]

    applied = applied_count(dsn, prefix)
    dead_lettered = dead_letters_with_key_prefix(settings, prefix)
    print(
        f"\nbroker down {outage_s:.1f}s (stop to ready); {account.published} published = {applied} applied "
        f"+ {dead_lettered} dead-lettered + {account.duplicates} duplicates"
    )
    assert applied == expected
    assert dead_lettered == account.malformed
    assert account.published == applied + dead_lettered + account.duplicates
    # Each applied event counted once in its user's profile: nothing applied twice.
    assert profile_counter_total(dsn, prefix) == applied


# --------------------------------------------------------------------------------------------------
# gRPC


def test_grpc_server_restart_under_load(settings_factory: Callable[..., Settings], postgres_dsn: str) -> None:
    settings = settings_factory(
        api=ApiSettings(host="127.0.0.1", port=free_port(), metrics_port=0, grace_period_s=2.0)
    )
    publish_sample_index(settings)
    migrate(postgres_dsn)
    api = ApiProcess(settings, name="api-restart")
    api.start()
    users = [f"restart-user-{i}" for i in range(20)]
    load = RequestLoad(api.target, lambda: users, rate=40.0, threads=4, timeout_s=5.0).start()
    try:
        time.sleep(3.0)
        stop_at = time.monotonic()
        assert api.stop() == 0, api.log()[-4000:]
        time.sleep(1.0)  # nothing listens: every client meets the gap
        api.start()
        serving_at = time.monotonic()
        time.sleep(5.0)
    finally:
        calls = load.stop()
        api.stop()

    failures = [c for c in calls if c.error is not None]
    print(
        f"\n{len(calls)} calls, {len(failures)} UNAVAILABLE; server away {serving_at - stop_at:.1f}s "
        "(stop, 1 s down, start to SERVING)"
    )
    assert all(c.error.startswith(UNAVAILABLE) for c in failures if c.error), failures[:5]
    assert failures, "no client met the gap: the restart was not observed"
    assert all(c.ended >= stop_at for c in failures), "a call failed before the server was stopped"
    for client in range(4):
        mine = [c for c in calls if c.client == client]
        answered_after = [c for c in mine if c.error is None and c.started >= serving_at]
        assert len(answered_after) >= 5, f"client {client} not answered again after the restart"
        first_answer = min(c.started for c in answered_after)
        late = [c for c in mine if c.error is not None and c.started > first_answer]
        assert not late, f"client {client} failed after its first answer since the restart: {late[:3]}"
        print(f"client {client}: first answer {first_answer - serving_at:.2f}s after SERVING")
