"""Properties that must hold for every input, not just the examples we thought of (hypothesis).

- Parsing: ``parse_event`` returns an event or raises ``InvalidEvent``, whatever the bytes; valid events
  survive ``encode_event`` -> ``parse_event`` unchanged; every case of the malformed-event corpus is
  rejected with its stated reason.
- Dead letters: whatever a rejected message holds, its dead letter fits in one Kafka message.
- Preference math: the state stays finite and the served vector inside the unit ball; the decay factor
  lies in (0, 1] and never grows with age; the order of events does not matter; replaying events through
  a ledger (apply each event id once) gives the state of applying each event once.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmrec.events.schema import (
    MAX_TEXT_CHARS,
    MIN_EVENT_TIME,
    EventType,
    RatingEvent,
    ReviewEvent,
    ReviewTag,
    WatchEvent,
    WatchStatus,
)
from llmrec.events.validation import (
    AnyEvent,
    InvalidEvent,
    RejectReason,
    check_item_vector,
    encode_event,
    parse_event,
    parse_item_event,
)
from llmrec.item_ids import mal_item_id
from llmrec.preference_state import PreferenceState
from llmrec.settings import KafkaSettings
from ranker.preferences import (
    Contribution,
    DecayPolicy,
    SignalWeights,
    apply_contributions,
    event_strength,
    user_vector,
)
from stream.deadletter import DeadLetter
from stream.item_vectors import ArrayItemVectors
from stream.processing import MAX_DEAD_LETTER_BYTES, BatchProcessor, RawMessage, topic_event_types
from tests.corpus.malformed_events import (
    ITEM_VECTOR_DIM,
    KNOWN_ITEM,
    KNOWN_ITEM_KEY,
    MALFORMED_EVENTS,
    MALFORMED_ITEM_EVENTS,
    UNKNOWN_ITEM,
    MalformedCase,
    MalformedItemCase,
)

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DIM = 8
DECAY = DecayPolicy()
WEIGHTS = SignalWeights()
# Event times lie between MIN_EVENT_TIME and now (+1 day of skew): no two are further apart than this.
MAX_AGE_S = 200 * 365 * 24 * 3600.0
EVENT_TYPES = st.sampled_from(list(EventType))


def parse_or_reject(raw: bytes, expected: EventType | None) -> AnyEvent | RejectReason:
    """The event, or the reason it was rejected; any other exception fails the calling test."""
    try:
        return parse_event(raw, expected)
    except InvalidEvent as exc:
        assert isinstance(exc.reason, RejectReason) and exc.detail
        return exc.reason


# -- parsing never fails with anything but InvalidEvent ------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
FIELDS = [
    "event_type", "schema_version", "event_id", "user_id", "item_id", "event_time", "source", "rating",
    "text", "tag", "status", "episodes_watched", "total_episodes",
]  # fmt: skip
# Values a real field might hold, plus the wrong types: more of the validator is reached than with
# arbitrary dictionaries alone.
field_values = (
    json_values
    | st.sampled_from(
        [*(t.value for t in EventType), *(s.value for s in WatchStatus), "recommended", "mal:5114"]
    )
    | st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.one_of(st.none(), st.timezones()),
    ).map(lambda d: d.isoformat())
    | st.integers(min_value=-3, max_value=100_002)
    | st.floats(min_value=-1, max_value=12)
)
event_like_objects = st.fixed_dictionaries(
    {"event_type": st.sampled_from([t.value for t in EventType])},
    optional={name: field_values for name in FIELDS if name != "event_type"},
) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), field_values, max_size=8)


@PROPERTY
@given(raw=st.binary(max_size=512), expected=st.none() | EVENT_TYPES)
def test_arbitrary_bytes_parse_or_are_rejected_with_a_reason(raw: bytes, expected: EventType | None) -> None:
    parse_or_reject(raw, expected)


@PROPERTY
@given(value=json_values, expected=st.none() | EVENT_TYPES)
def test_arbitrary_json_parses_or_is_rejected_with_a_reason(value: Any, expected: EventType | None) -> None:
    parse_or_reject(json.dumps(value).encode(), expected)


@PROPERTY
@given(body=event_like_objects, expected=st.none() | EVENT_TYPES)
def test_event_like_objects_parse_or_are_rejected_with_a_reason(
    body: dict[str, Any], expected: EventType | None
) -> None:
    result = parse_or_reject(json.dumps(body).encode(), expected)
    if not isinstance(result, RejectReason):
        assert expected is None or result.event_type == expected


@PROPERTY
@given(body=event_like_objects, cut=st.integers(min_value=0, max_value=400))
def test_truncated_and_corrupted_events_are_rejected_with_a_reason(body: dict[str, Any], cut: int) -> None:
    raw = json.dumps(body).encode()
    parse_or_reject(raw[:cut], None)
    parse_or_reject(raw[:cut] + b"\xff" + raw[cut:], None)


@pytest.mark.parametrize("case", MALFORMED_EVENTS, ids=[c.name for c in MALFORMED_EVENTS])
def test_each_corpus_case_is_rejected_for_its_stated_reason(case: MalformedCase) -> None:
    """The same cases go through Kafka and a worker in tests/integration/test_bad_input.py. ``unknown_item``
    is the worker's check (against its item index): to the parser those events are valid."""
    result = parse_or_reject(case.value, case.topic)
    if case.reason is RejectReason.UNKNOWN_ITEM:
        assert not isinstance(result, RejectReason) and result.item_id == UNKNOWN_ITEM != KNOWN_ITEM
    else:
        assert result == case.reason


@pytest.mark.parametrize("case", MALFORMED_ITEM_EVENTS, ids=[c.name for c in MALFORMED_ITEM_EVENTS])
def test_each_item_corpus_case_is_rejected_for_its_stated_reason(case: MalformedItemCase) -> None:
    """Items topic: ``parse_item_event``, then the worker's dimension check (``vector_dimension_mismatch``
    events are valid on the wire). Not yet through a worker: it does not consume the items topic."""
    try:
        event = parse_item_event(case.value)
    except InvalidEvent as exc:
        assert exc.reason == case.reason, exc.detail
        return
    rejected = check_item_vector(event, ITEM_VECTOR_DIM)
    assert rejected is not None and rejected.reason == case.reason


# -- valid events round-trip ---------------------------------------------------------------------------------

identifiers = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:@\-]{0,40}\Z")
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
event_times = st.datetimes(
    min_value=datetime(1970, 1, 3), max_value=datetime(2025, 12, 31), timezones=st.just(UTC) | offsets
)
scores = st.floats(min_value=1.0, max_value=10.0, allow_nan=False)
# The catalogue's string ids: "mal:5114", or any printable text without whitespace at either end.
item_ids = st.integers(min_value=1, max_value=2**53).map(mal_item_id) | st.text(
    st.characters(categories=["L", "M", "N", "P", "S", "Zs"]), min_size=1, max_size=256
).filter(lambda s: not s[0].isspace() and not s[-1].isspace())
review_texts = (
    st.text(
        st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\t\n\r"),
        min_size=1,
        max_size=300,
    )
    .filter(lambda s: s.strip() != "")
    .map(lambda s: s[:MAX_TEXT_CHARS])
)
common = {
    "event_id": identifiers,
    "user_id": identifiers,
    "item_id": item_ids,
    "event_time": event_times,
    "source": st.none() | st.text(max_size=64),
}
valid_events: st.SearchStrategy[AnyEvent] = st.one_of(
    st.builds(RatingEvent, rating=scores, **common),
    st.builds(
        ReviewEvent,
        text=review_texts,
        rating=st.none() | scores,
        tag=st.none() | st.sampled_from(ReviewTag),
        **common,
    ),
    st.builds(
        WatchEvent,
        status=st.sampled_from(WatchStatus),
        episodes_watched=st.integers(min_value=0, max_value=100_000),
        total_episodes=st.none() | st.integers(min_value=1, max_value=100_000),
        **common,
    ),
)


@PROPERTY
@given(event=valid_events)
def test_valid_events_round_trip_through_the_wire_form(event: AnyEvent) -> None:
    parsed = parse_event(encode_event(event), event.event_type)
    assert parsed == event
    assert parsed.event_time.utcoffset() == timedelta(0) and parsed.event_time >= MIN_EVENT_TIME


@PROPERTY
@given(event=valid_events, sentiment=st.floats(allow_nan=True, allow_infinity=True))
def test_every_valid_event_has_a_finite_bounded_strength(event: AnyEvent, sentiment: float) -> None:
    strength = event_strength(event, WEIGHTS, sentiment)
    bound = WEIGHTS.rating + WEIGHTS.review + WEIGHTS.viewing + WEIGHTS.completion
    assert math.isfinite(strength) and abs(strength) <= bound


# -- dead letters -------------------------------------------------------------------------------------------


class CollectingSink:
    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)


@settings(max_examples=25, deadline=None)
@given(
    fill=st.sampled_from([b"a", b"\x00", b"\x7f", b"\xff", "é".encode(), b'"']),
    size=st.integers(min_value=1, max_value=1_200_000),
    key_size=st.integers(min_value=0, max_value=300_000),
)
def test_a_dead_letter_always_fits_in_one_kafka_message(fill: bytes, size: int, key_size: int) -> None:
    """Escaping (a control byte is 6 bytes of JSON) and base64 grow a payload up to 7x: a letter must still
    be sendable, or the sink fails on every retry and the partition stalls behind it."""
    kafka = KafkaSettings()
    sink = CollectingSink()
    processor = BatchProcessor(
        store=None,  # type: ignore[arg-type]  # not reached: nothing in the batch is valid
        encoder=None,  # type: ignore[arg-type]
        dead_letters=sink,
        item_vectors=ArrayItemVectors([KNOWN_ITEM_KEY], np.ones((1, DIM), np.float32)),
        topic_types=topic_event_types(kafka),
        weights=WEIGHTS,
        decay=DECAY,
    )
    value, key = (fill * size)[:size], b"k" * key_size
    result = asyncio.run(processor.process([RawMessage(kafka.reviews_topic, 3, 41, key, value)]))
    assert result.dead_lettered == 1 and len(sink.letters) == 1
    record = sink.letters[0].to_json()
    assert len(record) <= MAX_DEAD_LETTER_BYTES
    letter = json.loads(record)
    assert (letter["topic"], letter["partition"], letter["offset"]) == (kafka.reviews_topic, 3, 41)
    kept = base64.b64decode(letter["payload_base64"])
    assert kept == value or (value.startswith(kept) and "payload cut" in letter["detail"])


# -- preference math -----------------------------------------------------------------------------------------

item_vectors = st.lists(
    st.floats(min_value=-1.0, max_value=1.0, allow_nan=False, width=32), min_size=DIM, max_size=DIM
).map(lambda xs: np.asarray(xs, dtype=np.float32))
contributions = st.builds(
    Contribution,
    vector=item_vectors,
    strength=st.floats(min_value=-1.0, max_value=1.0, allow_nan=False),
    time_s=st.floats(min_value=86_400.0, max_value=86_400.0 + MAX_AGE_S, allow_nan=False),
)


def fold(items: Iterable[Contribution], state: PreferenceState | None = None) -> PreferenceState:
    return apply_contributions(state or PreferenceState.empty(DIM), items, DECAY)


def assert_same_state(a: PreferenceState, b: PreferenceState) -> None:
    # Components may cancel out, so the tolerance is relative to the total weight, not to each component.
    scale = max(1.0, a.weight_sum, b.weight_sum)
    assert a.ref_time_s == b.ref_time_s
    assert math.isclose(a.weight_sum, b.weight_sum, rel_tol=1e-9, abs_tol=1e-9 * scale)
    np.testing.assert_allclose(a.vector_sum, b.vector_sum, rtol=0, atol=1e-5 * scale)


@PROPERTY
@given(items=st.lists(contributions, max_size=30))
def test_state_stays_finite_and_the_user_vector_inside_the_unit_ball(items: list[Contribution]) -> None:
    state = fold(items)
    assert np.all(np.isfinite(state.vector_sum)) and math.isfinite(state.weight_sum)
    assert state.weight_sum >= 0.0
    # A weighted sum of vectors no longer than sqrt(DIM), with weights summing to weight_sum.
    longest = max((float(np.linalg.norm(c.vector)) for c in items), default=0.0)
    assert float(np.linalg.norm(state.vector_sum)) <= state.weight_sum * longest * (1 + 1e-5) + 1e-6
    vector = user_vector(state)
    assert np.all(np.isfinite(vector)) and float(np.linalg.norm(vector)) <= 1.0 + 1e-6


@PROPERTY
@given(ages=st.lists(st.floats(min_value=-1e6, max_value=MAX_AGE_S), min_size=2, max_size=10))
def test_decay_factor_is_in_0_1_and_never_grows_with_age(ages: list[float]) -> None:
    factors = [DECAY.factor(age) for age in sorted(ages)]
    assert all(0.0 < f <= 1.0 for f in factors)
    assert all(older <= newer for newer, older in itertools.pairwise(factors))
    assert all(f == 1.0 for age, f in zip(sorted(ages), factors, strict=True) if age <= 0)


@PROPERTY
@given(
    alpha=st.floats(min_value=1e-3, max_value=1.0),
    unit_s=st.floats(min_value=1.0, max_value=1e9),
    ages=st.lists(st.floats(min_value=0.0, max_value=1e12), min_size=2, max_size=10),
)
def test_decay_is_monotone_for_any_policy(alpha: float, unit_s: float, ages: list[float]) -> None:
    policy = DecayPolicy(alpha=alpha, unit_s=unit_s)
    factors = [policy.factor(age) for age in sorted(ages)]
    assert all(0.0 <= f <= 1.0 for f in factors)  # 0.0 only by underflow, for ages no event can have
    assert all(older <= newer for newer, older in itertools.pairwise(factors))


@PROPERTY
@given(items=st.lists(contributions, max_size=20), data=st.data())
def test_the_order_of_events_does_not_change_the_state(
    items: list[Contribution], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(items))
    assert_same_state(fold(items), fold(shuffled))
    # One at a time (a state stored in float32 between batches, as the database does) changes nothing more
    # than rounding.
    state = PreferenceState.empty(DIM)
    for c in shuffled:
        state = fold([c], state)
    assert_same_state(fold(items), state)


@dataclass
class Ledger:
    """The store's contract in miniature: an event id is applied at most once, however often it comes."""

    state: PreferenceState
    applied: set[str]

    def apply_batch(self, batch: Sequence[tuple[str, Contribution]]) -> tuple[int, int]:
        new: dict[str, Contribution] = {}
        for event_id, c in batch:
            if event_id not in self.applied and event_id not in new:
                new[event_id] = c
        self.state = fold(new.values(), self.state)
        self.applied |= set(new)
        return len(new), len(batch) - len(new)


@PROPERTY
@given(items=st.lists(contributions, min_size=1, max_size=15), data=st.data())
def test_replaying_events_through_the_ledger_applies_each_once(
    items: list[Contribution], data: st.DataObject
) -> None:
    events = [(f"e{i}", c) for i, c in enumerate(items)]
    # Every event at least once, some several times (redeliveries, replays), in any order and batching.
    repeats = data.draw(st.lists(st.sampled_from(events), max_size=30))
    stream = data.draw(st.permutations([*events, *repeats]))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    ledger = Ledger(PreferenceState.empty(DIM), set())
    applied = duplicates = 0
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        a, d = ledger.apply_batch(stream[start:end])
        applied, duplicates = applied + a, duplicates + d
    assert applied == len(events) and applied + duplicates == len(stream)
    assert_same_state(ledger.state, fold(items))
    # Replaying the whole stream again is a no-op.
    before = ledger.state
    assert ledger.apply_batch(stream) == (0, len(stream))
    assert_same_state(ledger.state, before)
