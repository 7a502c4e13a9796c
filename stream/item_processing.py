"""The worker's logic for one batch of the items topic, free of Faust so it is tested with fakes.

For a batch:
1. validate each message as an item event (``parse_item_event``) and a supplied vector against the index's
   dimension; bad ones go to the dead-letter topic with their reason, as interaction events do;
2. give each upsert a vector: the one the user supplied, else the stored one when the item's text is
   unchanged and was embedded by the same model (a replay embeds nothing), else one from the encoder,
   embedded in one call for the batch (retried while Triton is unavailable; a text the encoder rejects is
   dead-lettered);
3. apply the upserts, hides, unhides and deletes in one store transaction (retried whole on transient
   errors; the catalogue's merge rule makes a retry, a redelivery or a replay change nothing);
4. catch the worker's item vectors up with the catalogue, so interactions about a new item apply at once;
5. send the rejected messages to the dead-letter topic.

Counts: a change older than the stored version (stale) is counted with the duplicates: it was received
and is reflected in the catalogue, which already holds something newer.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from encoder_triton.client import EncoderRejected, EncoderUnavailable, TextEncoder
from llmrec.events.schema import AnyItemEvent, DeleteItemEvent, HideItemEvent, UpsertItemEvent
from llmrec.events.validation import InvalidEvent, RejectReason, check_item_vector, parse_item_event
from llmrec.item_ids import item_key
from llmrec.item_text import embedding_text_of
from llmrec.logs import get_logger
from llmrec.store.interface import (
    CatalogueChange,
    CatalogueStore,
    ItemChange,
    ItemChangeKind,
    ItemRecord,
    StoredItem,
    StoreUnavailable,
    Version,
    item_content_hash,
)
from stream.deadletter import DeadLetter, DeadLetterSink, SinkUnavailable
from stream.item_vectors import LiveItemVectors
from stream.processing import (
    BatchResult,
    RawMessage,
    dead_letter_for,
    offset_ranges,
    record_result,
    traced_batch,
)
from stream.retry import Backoff, Sleep, retry_transient

log = get_logger(__name__)

USER_VECTOR = "user"  # ``vector_source`` of a vector the catalogue's owner supplied


@dataclass
class _Upsert:
    message: RawMessage
    event: UpsertItemEvent
    vector: npt.NDArray[np.float32] | None = None
    source: str | None = None
    superseded: bool = False  # the store already holds this version or a newer one


class ItemBatchProcessor:
    def __init__(
        self,
        *,
        store: CatalogueStore,
        encoder: TextEncoder,
        dead_letters: DeadLetterSink,
        items: LiveItemVectors,
        encoder_model: str,
        backoff: Backoff | None = None,
        sleep: Sleep = asyncio.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._encoder = encoder
        self._dead_letters = dead_letters
        self._items = items
        self._model = encoder_model
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
        retries = 0
        letters: list[DeadLetter] = []
        events: list[tuple[RawMessage, AnyItemEvent]] = []
        for message in batch:
            try:
                event = parse_item_event(message.value)
                problem = check_item_vector(event, self._items.dim)
                if problem is not None:
                    raise problem
                events.append((message, event))
            except InvalidEvent as exc:
                letters.append(dead_letter_for(message, exc.reason.value, exc.detail, self._now()))
            except Exception as exc:
                # Deterministic: a retry would fail the same way and stall the partition.
                log.exception("item validation crashed", topic=message.topic, offset=message.offset)
                detail = f"{type(exc).__name__}: {str(exc)[:200]}"
                letters.append(
                    dead_letter_for(message, RejectReason.VALIDATION_CRASHED.value, detail, self._now())
                )

        events, collided = await self._without_key_collisions(events)
        for message, detail in collided:
            reason = RejectReason.ITEM_KEY_COLLISION.value
            letters.append(dead_letter_for(message, reason, detail, self._now()))

        upserts = [_Upsert(m, e) for m, e in events if isinstance(e, UpsertItemEvent)]
        retries += await self._reuse_stored_vectors(upserts)
        t0 = time.perf_counter()
        embedded, rejected, failed = await self._embed(upserts)
        embed_s = time.perf_counter() - t0
        retries += failed
        for upsert, detail in rejected:
            letters.append(
                dead_letter_for(upsert.message, RejectReason.ENCODER_REJECTED.value, detail, self._now())
            )
        rejected_ids = {id(u.message) for u, _ in rejected}

        by_message = {id(u.message): u for u in upserts}
        changes: list[CatalogueChange] = []
        for message, event in events:
            if id(message) in rejected_ids:
                continue
            try:
                changes.append(_change(event, by_message.get(id(message))))
            except ValueError as exc:
                letters.append(
                    dead_letter_for(message, RejectReason.SCHEMA_VIOLATION.value, str(exc), self._now())
                )

        applied = duplicates = stale = 0
        if changes:
            result, failed = await retry_transient(
                lambda: self._store.apply_item_changes(changes),
                transient=(StoreUnavailable,),
                what="store.apply_item_changes",
                backoff=self._backoff,
                sleep=self._sleep,
            )
            retries += failed
            applied, duplicates, stale = result.applied, result.duplicates, result.stale
            _, failed = await retry_transient(
                self._items.refresh,
                transient=(StoreUnavailable,),
                what="catalogue.refresh",
                backoff=self._backoff,
                sleep=self._sleep,
            )
            retries += failed
        if letters:
            _, failed = await retry_transient(
                lambda: self._dead_letters.send(letters),
                transient=(SinkUnavailable,),
                what="dead_letter.send",
                backoff=self._backoff,
                sleep=self._sleep,
            )
            retries += failed

        reasons = Counter(letter.reason for letter in letters)
        latency = time.perf_counter() - started
        log.info(
            "item batch processed",
            offsets=offset_ranges(batch),
            size=len(batch),
            upserts=len(upserts),
            embedded=embedded,
            applied=applied,
            duplicates=duplicates,
            stale=stale,
            dead_lettered=len(letters),
            reasons=dict(reasons),
            retries=retries,
            embed_ms=round(embed_s * 1000, 1),
            latency_ms=round(latency * 1000, 1),
        )
        return BatchResult(
            received=len(batch),
            applied=applied,
            duplicates=duplicates + stale,
            dead_lettered=len(letters),
            reasons=dict(reasons),
            retries=retries,
            latency_s=latency,
        )

    async def _without_key_collisions(
        self, events: list[tuple[RawMessage, AnyItemEvent]]
    ) -> tuple[list[tuple[RawMessage, AnyItemEvent]], list[tuple[RawMessage, str]]]:
        """The events whose item id owns its key, and the others with the reason: a key already held by
        another stored id, or by another id earlier in the batch. The catalogue's unique key would refuse
        them and fail the whole batch on every retry; dead-lettered, the rest of the batch goes through."""
        if not events:
            return events, []
        keys = {event.item_id: item_key(event.item_id) for _, event in events}
        stored, _ = await retry_transient(
            lambda: self._store.item_ids_by_key(sorted(set(keys.values()))),
            transient=(StoreUnavailable,),
            what="store.item_ids_by_key",
            backoff=self._backoff,
            sleep=self._sleep,
        )
        owner = dict(stored)
        kept: list[tuple[RawMessage, AnyItemEvent]] = []
        collided: list[tuple[RawMessage, str]] = []
        for message, event in events:
            key = keys[event.item_id]
            holder = owner.setdefault(key, event.item_id)
            if holder == event.item_id:
                kept.append((message, event))
            else:
                collided.append(
                    (message, f"item id {event.item_id!r} has the same key ({key}) as item {holder!r}")
                )
        return kept, collided

    async def _reuse_stored_vectors(self, upserts: list[_Upsert]) -> int:
        """Set the user's vector, or the stored one where the text is unchanged; returns failed attempts."""
        for upsert in upserts:
            if upsert.event.vector is not None:
                upsert.vector = np.asarray(upsert.event.vector, dtype=np.float32)
                upsert.source = USER_VECTOR
        pending = [u for u in upserts if u.vector is None]
        if not pending:
            return 0
        ids = sorted({u.event.item_id for u in pending})
        stored, failed = await retry_transient(
            lambda: self._store.get_items(ids),
            transient=(StoreUnavailable,),
            what="store.get_items",
            backoff=self._backoff,
            sleep=self._sleep,
        )
        for upsert in pending:
            row = stored.get(upsert.event.item_id)
            if row is None:
                continue
            if row.body_version is not None and row.body_version >= _version(upsert.event):
                # Stale or already applied (a replay): the store will not write it, so embed nothing.
                upsert.superseded = True
            elif self._still_fits(row, upsert.event):
                upsert.vector, upsert.source = row.vector, row.vector_source
        return failed

    def _still_fits(self, row: StoredItem, event: UpsertItemEvent) -> bool:
        return (
            row.live
            and row.vector is not None
            and row.vector_source == self._model
            and row.content_hash
            == item_content_hash(event.title, event.text or "", event.categories, event.attributes)
        )

    async def _embed(self, upserts: list[_Upsert]) -> tuple[int, list[tuple[_Upsert, str]], int]:
        """Embed the upserts still without a vector; returns how many were embedded, the rejected ones with
        the encoder's reason, and the failed attempts."""
        todo = [u for u in upserts if u.vector is None and not u.superseded]
        if not todo:
            return 0, [], 0
        texts = [
            embedding_text_of(u.event.title, u.event.categories, u.event.text or "", u.event.attributes)
            for u in todo
        ]
        rejected: dict[int, str] = {}
        try:
            result, failed = await retry_transient(
                lambda: self._encoder.embed_and_score(texts),
                transient=(EncoderUnavailable,),
                what="encoder.embed_and_score",
                backoff=self._backoff,
                sleep=self._sleep,
            )
        except EncoderRejected as exc:
            result, rejected, failed = exc.partial, exc.rejected, 0
        for index, upsert in enumerate(todo):
            if index not in rejected:
                upsert.vector = np.asarray(result.embeddings[index], dtype=np.float32)
                upsert.source = self._model
        return len(todo) - len(rejected), [(todo[i], why) for i, why in sorted(rejected.items())], failed


def _version(event: AnyItemEvent) -> Version:
    return Version(event.event_time, event.event_id)


def _change(event: AnyItemEvent, upsert: _Upsert | None) -> CatalogueChange:
    if isinstance(event, UpsertItemEvent):
        if upsert is None:
            raise RuntimeError("an upsert without its vector slot")
        return ItemRecord(
            item_id=event.item_id,
            event_time=event.event_time,
            event_id=event.event_id,
            title=event.title,
            text=event.text or "",
            categories=event.categories,
            attributes=event.attributes,
            vector=upsert.vector,
            vector_source=upsert.source if upsert.vector is not None else None,
        )
    if isinstance(event, DeleteItemEvent):
        kind = ItemChangeKind.DELETE
    elif isinstance(event, HideItemEvent):
        kind = ItemChangeKind.HIDE
    else:
        kind = ItemChangeKind.UNHIDE
    return ItemChange(item_id=event.item_id, kind=kind, event_time=event.event_time, event_id=event.event_id)
