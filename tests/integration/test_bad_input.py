"""Bad input through the real pipeline: the malformed-event corpus, interleaved with valid events, goes
through real Kafka topics to a real worker process (``python -m stream``) and real PostgreSQL.

Nothing is lost and nothing is counted twice:
- each malformed case lands on the dead-letter topic exactly once, with its machine-readable reason and
  the topic, partition and offset it was published at;
- each valid event is applied exactly once (one ledger row), a duplicated event id included;
- published = applied + dead-lettered + duplicates ignored.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from workers import (
    Position,
    WorkerProcess,
    build_index,
    caught_up,
    publish_recorded,
    read_to_end,
    running_worker,
    wait_until,
)

from llmrec.events.schema import EventType, RatingEvent, WatchEvent, WatchStatus
from llmrec.events.topics import ensure_system_topics
from llmrec.events.validation import AnyEvent, encode_event
from llmrec.item_ids import mal_item_id
from llmrec.settings import Settings
from tests.corpus.malformed_events import KNOWN_ITEM, MALFORMED_EVENTS, UNKNOWN_ITEM

pytestmark = pytest.mark.integration


ITEM_IDS = [KNOWN_ITEM, *(mal_item_id(i) for i in (5, 6, 7, 20, 30, 5114, 9253, 1535, 11061))]
T0 = datetime(2025, 1, 1, tzinfo=UTC)
VALID_PER_CASE = 2


@pytest.fixture
def bad_input_settings(settings_factory: Callable[..., Settings]) -> Settings:
    settings = settings_factory()
    assert UNKNOWN_ITEM not in ITEM_IDS
    build_index(settings, ITEM_IDS)
    ensure_system_topics(settings.kafka)
    return settings


@pytest.fixture
def worker(bad_input_settings: Settings) -> Iterator[WorkerProcess]:
    with running_worker(bad_input_settings, "bad-input-worker") as handle:
        yield handle


def valid_event(prefix: str, i: int) -> AnyEvent:
    """Ratings and watch events only: a valid review would need Triton for its sentiment."""
    common: dict[str, Any] = {
        "event_id": f"{prefix}e{i}",
        "user_id": f"{prefix}user{i % 7}",
        "item_id": ITEM_IDS[i % len(ITEM_IDS)],
        "event_time": T0 + timedelta(minutes=i),
    }
    if i % 3 == 2:
        return WatchEvent(**common, status=WatchStatus.WATCHING, episodes_watched=i % 12, total_episodes=12)
    return RatingEvent(**common, rating=1 + i % 10)


def topic_of(settings: Settings, kind: EventType) -> str:
    return {
        EventType.RATING: settings.kafka.ratings_topic,
        EventType.REVIEW: settings.kafka.reviews_topic,
        EventType.WATCH: settings.kafka.watch_topic,
    }[kind]


def ledger(dsn: str, prefix: str) -> dict[str, tuple[str, int, int]]:
    """event_id -> (source topic, partition, offset) of this test's ledger rows."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT event_id, source_topic, source_partition, source_offset FROM interactions"
            " WHERE event_id LIKE %s",
            (f"{prefix}%",),
        ).fetchall()
    by_id = {row[0]: (row[1], row[2], row[3]) for row in rows}
    assert len(by_id) == len(rows)
    return by_id


def logged_total(log: str, field: str) -> int:
    """Sum of ``field=N`` over the worker's "batch processed" lines."""
    return sum(
        int(n)
        for line in log.splitlines()
        if "batch processed" in line
        for n in re.findall(rf"\b{field}=(\d+)", line)
    )


def test_every_malformed_event_is_dead_lettered_once_and_every_valid_event_applied_once(
    bad_input_settings: Settings, worker: WorkerProcess, postgres_dsn: str
) -> None:
    settings = bad_input_settings
    prefix = f"b{uuid.uuid4().hex[:6]}-"
    bad_key = f"{prefix}mallory".encode()

    # Interleaved: valid, valid, malformed, valid, valid, malformed, ...; the first valid event once more
    # at the very end (a producer retry or a replay): same event id, same bytes, another offset.
    messages: list[tuple[str, bytes | None, bytes | None]] = []
    kinds: list[str | AnyEvent] = []  # per message: the case name or the valid event
    valid: list[AnyEvent] = []
    for n, case in enumerate(MALFORMED_EVENTS):
        for j in range(VALID_PER_CASE):
            event = valid_event(prefix, n * VALID_PER_CASE + j)
            valid.append(event)
            messages.append(
                (topic_of(settings, event.event_type), event.user_id.encode(), encode_event(event))
            )
            kinds.append(event)
        messages.append((topic_of(settings, case.topic), bad_key, case.value))
        kinds.append(case.name)
    duplicate = valid[0]
    messages.append(
        (topic_of(settings, duplicate.event_type), duplicate.user_id.encode(), encode_event(duplicate))
    )
    kinds.append(duplicate)

    positions = publish_recorded(settings, messages)
    wait_until(lambda: caught_up(settings), 180, "the worker to consume and commit every message")

    # -- the dead-letter topic: each case once, with its reason and its source position ------------------
    letters = [json.loads(r.value or b"") for r in read_to_end(settings, settings.kafka.dead_letter_topic)]
    by_position = Counter(Position(r["topic"], r["partition"], r["offset"]) for r in letters)
    assert all(count == 1 for count in by_position.values()), "a message was dead-lettered twice"
    letter_at = {Position(r["topic"], r["partition"], r["offset"]): r for r in letters}
    cases = {case.name: case for case in MALFORMED_EVENTS}
    problems: list[str] = []
    for kind, position in zip(kinds, positions, strict=True):
        if not isinstance(kind, str):
            if position in letter_at:
                problems.append(
                    f"valid event {kind.event_id} was dead-lettered: {letter_at[position]['detail']}"
                )
            continue
        case, letter = cases[kind], letter_at.get(position)
        if letter is None:
            problems.append(f"{kind!r}: no dead letter (expected {case.reason.value})")
            continue
        if letter["reason"] != case.reason.value:
            problems.append(
                f"{kind!r}: reason {letter['reason']} ({letter['detail']}), not {case.reason.value}"
            )
        assert letter["detail"], kind
        assert letter["key"] == bad_key.decode()
        assert letter["failed_at"].endswith("Z")
        payload = base64.b64decode(letter["payload_base64"]) if letter["payload_base64"] is not None else b""
        if payload != case.value:
            # Only a letter that would not fit in one Kafka message carries a cut payload, and says so.
            assert case.value.startswith(payload) and "payload cut" in letter["detail"], kind
    assert not problems, "\n".join(problems)
    assert len(letters) == len(MALFORMED_EVENTS)

    # -- the ledger: each valid event once, from where it was published ------------------------------------
    rows = ledger(postgres_dsn, prefix)
    assert set(rows) == {event.event_id for event in valid}
    published_at: dict[str, set[tuple[str, int, int]]] = {}
    for kind, position in zip(kinds, positions, strict=True):
        if not isinstance(kind, str):
            published_at.setdefault(kind.event_id, set()).add(
                (position.topic, position.partition, position.offset)
            )
    assert all(rows[event_id] in published_at[event_id] for event_id in rows)
    assert len(published_at[duplicate.event_id]) == 2

    # -- accounting ---------------------------------------------------------------------------------------
    log = worker.log()
    applied, duplicates = logged_total(log, "applied"), logged_total(log, "duplicates")
    dead_lettered = logged_total(log, "dead_lettered")
    assert logged_total(log, "size") == len(messages)
    assert (applied, dead_lettered, duplicates) == (len(rows), len(letters), 1)
    assert len(messages) == applied + dead_lettered + duplicates
    assert "batch failed" not in log, "a batch raised: a message must never stall its partition"

    assert worker.stop() == 0, worker.log()[-4000:]
