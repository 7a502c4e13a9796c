"""Scale-out: two workers in one consumer group share the partitions and reach the same final state as one
worker given the same events (``bench.scaleout`` runs the same comparison at benchmark size, with timings).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from bench.scaleout import VECTOR_RTOL, run_group
from bench.streaming import profiles_snapshot
from llmrec.events.topics import ensure_system_topics
from llmrec.settings import Settings
from llmrec.store import migrate

pytestmark = pytest.mark.integration

EVENTS = 2000


def test_two_workers_in_one_group_reach_the_state_one_worker_reaches(
    settings_factory: Callable[..., Settings],
) -> None:
    snapshots = []
    runs = []
    for workers in (1, 2):
        settings = settings_factory()
        dsn = settings.postgres.dsn.get_secret_value()
        migrate(dsn)
        ensure_system_topics(settings.kafka)
        prefix = f"so{uuid.uuid4().hex[:6]}-"
        runs.append(run_group(settings, dsn, prefix, EVENTS, workers, timeout_s=180))
        snapshots.append(profiles_snapshot(dsn, prefix))
    one, two = snapshots

    # Both members held partitions, and each applied some of the events (none applied by both: the sum).
    partitions = len(settings.kafka.consumed_topics) * settings.kafka.partitions
    assert runs[1]["partitions_per_worker"][0] and runs[1]["partitions_per_worker"][1]
    assert sum(runs[1]["partitions_per_worker"]) == partitions
    assert all(applied > 0 for applied in runs[1]["applied_by_worker"])
    assert sum(runs[1]["applied_by_worker"]) == EVENTS

    assert one.ledger_rows == two.ledger_rows == EVENTS
    assert one.profiles == two.profiles > 0
    assert one.exact_sha256 == two.exact_sha256
    assert one.max_vector_rel_diff(two) <= VECTOR_RTOL
    assert one.max_weight_rel_diff(two) <= VECTOR_RTOL
