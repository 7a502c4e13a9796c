"""The worker's logic for one batch of raw Kafka messages, free of Faust so it is tested with fakes.

For a batch (one topic, up to ``worker.batch_size`` messages):
1. validate each message against its topic's event type; an event about an item the recommender does
   not know (no vector in the index or the catalogue) waits up to ``unknown_item_wait_s`` for the item
   to arrive on the items topic (the topics are not ordered against each other), then is rejected;
2. score the reviews' sentiment with the encoder (retried while Triton is unavailable: reviews wait,
   they are never dropped; a text the encoder rejects as bad input is dead-lettered); reviews already
   in the ledger (a replay) skip the encoder;
3. turn each valid event into a ledger entry with its signal strength (``ranker.preferences``);
4. apply all entries in one store transaction (retried whole on transient database errors: the ledger
   is keyed by event id, so a retry or a redelivery applies nothing twice);
5. send the rejected messages to the dead-letter topic (retried while Kafka is unavailable).

``process`` returns only when every message is either applied (or known to be a duplicate) or
dead-lettered, so the caller can then let Kafka commit the offsets.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import numpy as np

from encoder_triton.client import EncoderRejected, EncoderUnavailable, TextEncoder
from llmrec import tracing
from llmrec.events.schema import EventType, RatingEvent, ReviewEvent, WatchEvent
from llmrec.events.validation import AnyEvent, InvalidEvent, RejectReason, parse_event
from llmrec.item_ids import item_key
from llmrec.logs import get_logger
from llmrec.preference_state import PreferenceState
from llmrec.settings import KafkaSettings, PreferenceSettings
from llmrec.store.interface import EventStore, LedgerEntry, StoreUnavailable
from ranker.preferences import Contribution, DecayPolicy, SignalWeights, apply_contributions, event_strength
from stream.deadletter import DeadLetter, DeadLetterSink, SinkUnavailable
from stream.item_vectors import ItemVectors
from stream.retry import Backoff, Sleep, retry_transient

log = get_logger(__name__)
T = TypeVar("T")

# A dead letter holds the payload twice (as text, where a control byte escapes to 6 bytes, and as base64)
# and must fit in one Kafka message (about 1 MB by default on the broker and in Faust's producer). A
# letter beyond this size carries only the first LETTER_PAYLOAD_CUT bytes of the payload (and of the key);
# its topic, partition and offset still point at the whole original.
MAX_DEAD_LETTER_BYTES = 900_000
LETTER_PAYLOAD_CUT = 64 * 1024
LETTER_KEY_CUT = 1024


@dataclass(frozen=True)
class RawMessage:
    """One consumed Kafka record, as bytes: the worker decodes and validates values itself."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    # Kafka headers; the agents fill them only while tracing is on (they carry the publish's trace context).
    headers: tuple[tuple[str, bytes | None], ...] = ()


@dataclass(frozen=True)
class BatchResult:
    received: int
    applied: int
    duplicates: int
    dead_lettered: int
    reasons: Mapping[str, int] = field(default_factory=dict)
    retries: int = 0
    latency_s: float = 0.0


def traced_batch(batch: Sequence[RawMessage]) -> AbstractContextManager[tracing.Span]:
    """The batch's span (``llmrec.tracing.batch_span``: a child of its first traced message, linked to
    all of them); the store's and Triton's spans of the batch hang under it."""
    topic = batch[0].topic if batch else "?"
    return tracing.batch_span(
        f"process {topic}",
        (m.headers for m in batch),
        {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": topic,
            "messaging.batch.message_count": len(batch),
        },
    )


def record_result(span: tracing.Span, result: BatchResult) -> None:
    if span.is_recording():
        span.set_attributes(
            {
                "llmrec.batch.applied": result.applied,
                "llmrec.batch.duplicates": result.duplicates,
                "llmrec.batch.dead_lettered": result.dead_lettered,
                "llmrec.batch.retries": result.retries,
            }
        )


def offset_ranges(batch: Sequence[RawMessage]) -> dict[int, str]:
    """``{partition: "first-last"}``: where a batch came from, for its log line."""
    ranges: dict[int, tuple[int, int]] = {}
    for m in batch:
        low, high = ranges.get(m.partition, (m.offset, m.offset))
        ranges[m.partition] = (min(low, m.offset), max(high, m.offset))
    return {p: f"{low}-{high}" for p, (low, high) in sorted(ranges.items())}


def weights_from_settings(prefs: PreferenceSettings) -> SignalWeights:
    return SignalWeights(
        rating=prefs.weight_rating,
        review=prefs.weight_review,
        viewing=prefs.weight_viewing,
        completion=prefs.weight_completion,
    )


def decay_from_settings(prefs: PreferenceSettings) -> DecayPolicy:
    return DecayPolicy(alpha=prefs.decay_alpha, unit_s=prefs.decay_unit_s)


def topic_event_types(kafka: KafkaSettings) -> dict[str, EventType]:
    return {
        kafka.ratings_topic: EventType.RATING,
        kafka.reviews_topic: EventType.REVIEW,
        kafka.watch_topic: EventType.WATCH,
    }


class PreferenceUpdater:
    """The store's ``ProfileUpdater``: folds new ledger entries into each user's state with the item
    vectors and the decay policy. Runs inside the store transaction, so it does no I/O."""

    def __init__(self, item_vectors: ItemVectors, decay: DecayPolicy) -> None:
        self._items = item_vectors
        self._decay = decay

    def __call__(
        self, current: dict[str, PreferenceState], new_entries: Sequence[LedgerEntry]
    ) -> dict[str, PreferenceState]:
        by_user: dict[str, list[Contribution]] = {}
        for entry in new_entries:
            vector = self._items.get(entry.item_id)
            by_user.setdefault(entry.user_id, [])
            if vector is None:
                # The item left the index between validation and now (an index swap): the event stays in
                # the ledger (it happened) but moves no vector.
                log.warning("item vector missing at update", item_id=entry.item_id, event_id=entry.event_id)
                continue
            by_user[entry.user_id].append(
                Contribution(vector=vector, strength=entry.strength, time_s=entry.event_time.timestamp())
            )
        result: dict[str, PreferenceState] = {}
        for user_id, contributions in by_user.items():
            state = current.get(user_id)
            if state is None or state.vector_sum.shape != (self._items.dim,):
                if state is not None:
                    # The item index was rebuilt with another encoder: the stored vector lives in a space
                    # that no longer exists. Start over; the ledger keeps the history for a full rebuild.
                    log.warning(
                        "profile dimension changed, restarting profile",
                        user_id=user_id,
                        stored_dim=int(state.vector_sum.shape[0]),
                        item_dim=self._items.dim,
                    )
                state = PreferenceState.empty(self._items.dim)
            result[user_id] = apply_contributions(state, contributions, self._decay)
        return result


@dataclass
class _Tally:
    retries: int = 0


@dataclass
class _Valid:
    message: RawMessage
    event: AnyEvent
    sentiment: float | None = None


class BatchProcessor:
    def __init__(
        self,
        *,
        store: EventStore,
        encoder: TextEncoder,
        dead_letters: DeadLetterSink,
        item_vectors: ItemVectors,
        topic_types: Mapping[str, EventType],
        weights: SignalWeights,
        decay: DecayPolicy,
        backoff: Backoff | None = None,
        sleep: Sleep = asyncio.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        refresh_items: Callable[[], Awaitable[object]] | None = None,
        unknown_item_wait_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._refresh_items = refresh_items
        self._unknown_item_wait_s = unknown_item_wait_s
        self._clock = clock
        self._store = store
        self._encoder = encoder
        self._dead_letters = dead_letters
        self._items = item_vectors
        self._topic_types = dict(topic_types)
        self._weights = weights
        self._updater = PreferenceUpdater(item_vectors, decay)
        self._backoff = backoff or Backoff()
        self._sleep = sleep
        self._now = now

    async def process(self, batch: Sequence[RawMessage]) -> BatchResult:
        with traced_batch(batch) as span:
            result = await self._process(batch)
            record_result(span, result)
        return result

    async def _process(self, batch: Sequence[RawMessage]) -> BatchResult:
        started = time.perf_counter()
        # One processor serves all three agents at once: per-batch counters live here, not on self.
        tally = _Tally()
        valid: list[_Valid] = []
        letters: list[DeadLetter] = []
        unknown: list[_Valid] = []
        # The catalogue as other workers left it (an item deleted there is unknown here from now on): one
        # change-feed read per batch, usually empty.
        await self._refresh_catalogue()
        for message in batch:
            try:
                event = self._validate(message)
                item = _Valid(message, event)
                (valid if self._knows(event) else unknown).append(item)
            except InvalidEvent as exc:
                letters.append(self._letter(message, exc.reason.value, exc.detail))
            except Exception as exc:
                # Validation is deterministic: retrying the batch would fail the same way and stall the
                # partition forever. The message is kept in the dead-letter topic for a fix and a replay.
                log.exception("validation crashed", topic=message.topic, offset=message.offset)
                detail = f"{type(exc).__name__}: {str(exc)[:200]}"
                letters.append(self._letter(message, RejectReason.VALIDATION_CRASHED.value, detail))

        if unknown:
            arrived, missing = await self._wait_for_items(unknown)
            # Back in batch order, so a user's events still apply in the order they were consumed.
            order = {id(m): n for n, m in enumerate(batch)}
            valid = sorted([*valid, *arrived], key=lambda v: order[id(v.message)])
            for item in missing:
                detail = f"item {item.event.item_id!r} is not in the catalogue"
                letters.append(self._letter(item.message, RejectReason.UNKNOWN_ITEM.value, detail))

        valid, known = await self._drop_known_reviews(valid, tally)
        reviews = [v for v in valid if isinstance(v.event, ReviewEvent)]
        encoder_s = 0.0
        if reviews:
            t0 = time.perf_counter()
            rejected = await self._score_reviews(reviews, tally)
            encoder_s = time.perf_counter() - t0
            for item, detail in rejected:
                letters.append(self._letter(item.message, RejectReason.ENCODER_REJECTED.value, detail))
            rejected_ids = {id(item) for item, _ in rejected}
            valid = [v for v in valid if id(v) not in rejected_ids]

        entries: list[LedgerEntry] = []
        for item in valid:
            try:
                entries.append(self._entry(item))
            except ValueError as exc:
                letters.append(self._letter(item.message, RejectReason.INVALID_SIGNAL.value, str(exc)))

        applied, duplicates = 0, known
        t0 = time.perf_counter()
        if entries:
            # One transaction for the whole batch, retried whole: the ledger skips what a failed attempt
            # might have committed (it commits all or nothing, but a lost COMMIT reply looks like a failure).
            result = await self._retry(
                lambda: self._store.apply_batch(entries, self._updater),
                StoreUnavailable,
                "store.apply_batch",
                tally,
            )
            applied, duplicates = result.applied, duplicates + result.duplicates
        store_s = time.perf_counter() - t0

        if letters:
            # After the store: a crash in between redelivers the batch, and the ledger then turns the valid
            # events into duplicates, so each dead letter is sent about once.
            await self._retry(
                lambda: self._dead_letters.send(letters), SinkUnavailable, "dead_letter.send", tally
            )

        reasons = Counter(letter.reason for letter in letters)
        latency = time.perf_counter() - started
        log.info(
            "batch processed",
            topics=sorted({m.topic for m in batch}),
            offsets=offset_ranges(batch),
            size=len(batch),
            reviews=len(reviews),
            applied=applied,
            duplicates=duplicates,
            dead_lettered=len(letters),
            reasons=dict(reasons),
            retries=tally.retries,
            encoder_ms=round(encoder_s * 1000, 1),
            store_ms=round(store_s * 1000, 1),
            latency_ms=round(latency * 1000, 1),
        )
        return BatchResult(
            received=len(batch),
            applied=applied,
            duplicates=duplicates,
            dead_lettered=len(letters),
            reasons=dict(reasons),
            retries=tally.retries,
            latency_s=latency,
        )

    # -- steps --------------------------------------------------------------------------------------------

    def _validate(self, message: RawMessage) -> AnyEvent:
        return parse_event(message.value, self._topic_types.get(message.topic))

    async def _refresh_catalogue(self) -> None:
        if self._refresh_items is None:
            return
        try:
            await self._refresh_items()
        except StoreUnavailable as exc:
            # Not fatal: the item vectors stay as they were; the next batch tries again.
            log.warning("catalogue refresh failed", error=str(exc))

    def _knows(self, event: AnyEvent) -> bool:
        return self._items.get(item_key(event.item_id)) is not None

    async def _wait_for_items(self, unknown: list[_Valid]) -> tuple[list[_Valid], list[_Valid]]:
        """Re-read the catalogue (once a second) until every item is known or ``unknown_item_wait_s`` has
        passed; returns the events whose item arrived and those whose item did not."""
        deadline = self._clock() + self._unknown_item_wait_s
        waiting = unknown
        arrived: list[_Valid] = []
        while True:
            await self._refresh_catalogue()
            now_known = [v for v in waiting if self._knows(v.event)]
            arrived += now_known
            waiting = [v for v in waiting if not self._knows(v.event)]
            if not waiting or self._clock() >= deadline:
                if waiting:
                    log.info(
                        "items did not arrive in time",
                        items=sorted({v.event.item_id for v in waiting})[:10],
                        events=len(waiting),
                        waited_s=self._unknown_item_wait_s,
                    )
                return arrived, waiting
            await self._sleep(min(1.0, max(0.0, deadline - self._clock())))

    async def _retry(
        self, operation: Callable[[], Awaitable[T]], transient: type[Exception], what: str, tally: _Tally
    ) -> T:
        result, failed = await retry_transient(
            operation, transient=(transient,), what=what, backoff=self._backoff, sleep=self._sleep
        )
        tally.retries += failed
        return result

    async def _drop_known_reviews(self, valid: list[_Valid], tally: _Tally) -> tuple[list[_Valid], int]:
        """A redelivered or replayed review is already in the ledger: skip the encoder's work for it.
        Returns the remaining events and how many reviews were dropped (they count as duplicates)."""
        ids = [v.event.event_id for v in valid if isinstance(v.event, ReviewEvent)]
        if not ids:
            return valid, 0
        seen = await self._retry(
            lambda: self._store.known_event_ids(ids), StoreUnavailable, "store.known_event_ids", tally
        )
        if not seen:
            return valid, 0
        kept = [v for v in valid if not (isinstance(v.event, ReviewEvent) and v.event.event_id in seen)]
        return kept, len(valid) - len(kept)

    async def _score_reviews(self, reviews: list[_Valid], tally: _Tally) -> list[tuple[_Valid, str]]:
        """Set each review's sentiment; return the reviews the encoder rejected as bad input, with the
        reason. Waits (retrying) while the encoder is unavailable."""
        texts = [r.event.text for r in reviews if isinstance(r.event, ReviewEvent)]
        rejected: dict[int, str] = {}
        try:
            result = await self._retry(
                lambda: self._encoder.embed_and_score(texts),
                EncoderUnavailable,
                "encoder.embed_and_score",
                tally,
            )
        except EncoderRejected as exc:
            # Only some texts are bad; the others' scores come with the error.
            result, rejected = exc.partial, exc.rejected
        scores = np.asarray(result.sentiment, dtype=np.float64).reshape(-1)
        if len(scores) != len(texts):
            raise RuntimeError(f"encoder returned {len(scores)} scores for {len(texts)} texts")
        for index, review in enumerate(reviews):
            if index not in rejected:
                review.sentiment = float(scores[index])
        return [(reviews[i], reason) for i, reason in sorted(rejected.items())]

    def _entry(self, item: _Valid) -> LedgerEntry:
        event = item.event
        strength = event_strength(event, self._weights, item.sentiment)
        if not math.isfinite(strength):
            raise ValueError(f"signal strength is {strength}")
        rating = event.rating if isinstance(event, RatingEvent | ReviewEvent) else None
        return LedgerEntry(
            event_id=event.event_id,
            user_id=event.user_id,
            item_id=item_key(event.item_id),
            event_type=event.event_type,
            event_time=event.event_time,
            strength=strength,
            rating=rating,
            sentiment=item.sentiment,
            status=event.status.value if isinstance(event, WatchEvent) else None,
            episodes_watched=event.episodes_watched if isinstance(event, WatchEvent) else None,
            source_topic=item.message.topic,
            source_partition=item.message.partition,
            source_offset=item.message.offset,
        )

    def _letter(self, message: RawMessage, reason: str, detail: str) -> DeadLetter:
        return dead_letter_for(message, reason, detail, self._now())


def dead_letter_for(message: RawMessage, reason: str, detail: str, failed_at: datetime) -> DeadLetter:
    """The dead letter for ``message``, cut to fit one Kafka message when the original is too large."""
    letter = DeadLetter(
        reason=reason,
        detail=detail,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        payload=message.value,
        failed_at=failed_at,
    )
    if len(letter.to_json()) <= MAX_DEAD_LETTER_BYTES:
        return letter
    # Unsendable whole: the sink would fail on every retry and hold the partition forever.
    size = len(message.value or b"")
    return dataclasses.replace(
        letter,
        detail=f"{detail} (payload cut to its first {min(size, LETTER_PAYLOAD_CUT)} of {size} bytes; "
        "the whole message is at the topic, partition and offset of this letter)",
        key=message.key[:LETTER_KEY_CUT] if message.key is not None else None,
        payload=message.value[:LETTER_PAYLOAD_CUT] if message.value is not None else None,
    )
