"""ItemBatchProcessor: a batch of the items topic with the in-memory catalogue store (``FakeStore``), a fake
encoder and a fake dead-letter sink; what lands in the catalogue, what is embedded (and how often), what is
dead-lettered, and what the worker's ``LiveItemVectors`` know afterwards."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from encoder_triton.client import EncodeResult, EncoderRejected, EncoderUnavailable
from llmrec.item_ids import item_key, item_keys
from llmrec.settings import KafkaSettings, PreferenceSettings
from llmrec.store.fake import FakeStore
from stream.deadletter import DeadLetter
from stream.item_processing import USER_VECTOR, ItemBatchProcessor
from stream.item_vectors import ArrayItemVectors, LiveItemVectors
from stream.processing import (
    BatchProcessor,
    BatchResult,
    RawMessage,
    decay_from_settings,
    topic_event_types,
    weights_from_settings,
)
from stream.retry import Backoff
from tests.corpus.malformed_events import ITEM_VECTOR_DIM, MALFORMED_ITEM_EVENTS

ITEMS_TOPIC = KafkaSettings().items_topic
DIM = ITEM_VECTOR_DIM  # the corpus's dimension case only fails against an index of this width
MODEL = "test-encoder-v1"
INDEXED = ["mal:1", "mal:5114"]  # items of the published index (the base of the live vectors)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
REJECT_MARK = "\x7fREJECT"


def text_vector(text: str) -> npt.NDArray[np.float32]:
    """A deterministic non-unit vector per text, so tests can tell which text a stored vector came from and
    that the live vectors normalise it."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
    return (np.random.default_rng(seed).standard_normal(DIM) * 3).astype(np.float32)


def unit(vector: Sequence[float] | npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    array = np.asarray(vector, dtype=np.float32)
    return (array / np.linalg.norm(array)).astype(np.float32)


# -- fakes ------------------------------------------------------------------------------------------------


@dataclass
class FakeEncoder:
    """Embeds each text as ``text_vector(text)``; a text holding ``REJECT_MARK`` is bad input; the next
    ``unavailable`` calls raise ``EncoderUnavailable``. ``calls`` counts every call, ``batches`` holds the
    texts of each successful one."""

    unavailable: int = 0
    calls: int = 0
    batches: list[list[str]] = field(default_factory=list)

    async def embed_and_score(self, texts: Sequence[str]) -> EncodeResult:
        self.calls += 1
        if self.unavailable:
            self.unavailable -= 1
            raise EncoderUnavailable("triton down")
        self.batches.append(list(texts))
        embeddings = np.stack([text_vector(t) for t in texts]) if texts else np.zeros((0, DIM), np.float32)
        result = EncodeResult(embeddings=embeddings, sentiment=np.full(len(texts), 0.5, np.float32))
        bad = {i: "empty_text: nothing left" for i, t in enumerate(texts) if REJECT_MARK in t}
        if bad:
            result.embeddings[list(bad)] = np.nan
            result.sentiment[list(bad)] = np.nan
            raise EncoderRejected(bad, result)
        return result

    @property
    def texts(self) -> list[str]:
        return [t for batch in self.batches for t in batch]


@dataclass
class FakeSink:
    letters: list[DeadLetter] = field(default_factory=list)

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(letter.to_json()) for letter in self.letters]

    def reasons(self) -> dict[int, str]:
        """Reason by offset."""
        return {letter.offset: letter.reason for letter in self.letters}


@dataclass
class Harness:
    store: FakeStore = field(default_factory=FakeStore)
    encoder: FakeEncoder = field(default_factory=FakeEncoder)
    sink: FakeSink = field(default_factory=FakeSink)
    sleeps: list[float] = field(default_factory=list)
    base: ArrayItemVectors = field(
        default_factory=lambda: ArrayItemVectors(
            item_keys(INDEXED), np.eye(len(INDEXED), DIM, dtype=np.float32)
        )
    )
    items: LiveItemVectors = field(init=False)

    def __post_init__(self) -> None:
        self.items = LiveItemVectors(self.base, self.store)

    def processor(self) -> ItemBatchProcessor:
        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        return ItemBatchProcessor(
            store=self.store,
            encoder=self.encoder,
            dead_letters=self.sink,
            items=self.items,
            encoder_model=MODEL,
            backoff=Backoff(initial_s=0.5, max_s=4.0, jitter=0.0),
            sleep=sleep,
            now=lambda: NOW,
        )

    async def process(self, batch: Sequence[RawMessage]) -> BatchResult:
        result = await self.processor().process(batch)
        assert result.received == len(batch)
        assert result.received == result.applied + result.duplicates + result.dead_lettered, result
        return result


_offsets = iter(range(100_000))


def msg(value: bytes | dict[str, Any], key: str | None = None) -> RawMessage:
    raw = json.dumps(value).encode() if isinstance(value, dict) else value
    if key is None and isinstance(value, dict):
        key = value.get("item_id")
    return RawMessage(
        topic=ITEMS_TOPIC,
        partition=1,
        offset=next(_offsets),
        key=key.encode() if isinstance(key, str) else None,
        value=raw,
    )


def upsert(
    item_id: str,
    event_id: str,
    title: str,
    text: str | None = None,
    categories: Sequence[str] = (),
    hour: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "op": "upsert",
        "event_id": event_id,
        "item_id": item_id,
        "event_time": f"2025-06-01T{hour:02d}:00:00Z",
        "title": title,
        "categories": list(categories),
    }
    if text is not None:
        event["text"] = text
    event.update(extra)
    return event


def change(op: str, item_id: str, event_id: str, hour: int) -> dict[str, Any]:
    return {"op": op, "event_id": event_id, "item_id": item_id, "event_time": f"2025-06-01T{hour:02d}:00:00Z"}


KITCHEN = [
    upsert("shop:kettle-17", "k1", "Electric kettle 1.7 l", "Boils water fast; auto shut-off.", ["kitchen"]),
    upsert("shop:toaster-2", "k2", "Two-slice toaster", "Wide slots, six browning levels.", ["kitchen"]),
    upsert("book:dune", "k3", "Dune", "A desert planet and its spice.", ["books", "science fiction"]),
    upsert("shop:wok-30", "k4", "Carbon steel wok", None, ["kitchen", "cookware"]),
]


# -- upserts ---------------------------------------------------------------------------------------------


async def test_a_batch_of_upserts_is_embedded_in_one_call_and_stored_with_the_model_name() -> None:
    h = Harness()
    result = await h.process([msg(e) for e in KITCHEN])

    assert (result.applied, result.duplicates, result.dead_lettered) == (len(KITCHEN), 0, 0)
    assert h.encoder.calls == 1
    assert len(h.encoder.batches[0]) == len(KITCHEN)
    assert h.store.calls["apply_item_changes"] == 1  # one transaction for the batch
    for event, text in zip(KITCHEN, h.encoder.batches[0], strict=True):
        row = h.store.items[event["item_id"]]
        assert row.live and not row.hidden
        assert row.title == event["title"] and row.categories == tuple(event["categories"])
        assert row.text == (event.get("text") or "")
        assert row.vector_source == MODEL
        assert row.vector is not None
        np.testing.assert_allclose(row.vector, text_vector(text))
        assert event["title"] in text  # the embedded text is the item's own
    assert h.sink.letters == []
    assert await h.store.count_items() == len(KITCHEN)


async def test_a_new_item_is_known_to_the_live_vectors_as_a_unit_vector_after_its_batch() -> None:
    h = Harness()
    kettle = KITCHEN[0]
    assert h.items.get(item_key(kettle["item_id"])) is None

    await h.process([msg(kettle)])

    known = h.items.get(item_key(kettle["item_id"]))
    assert known is not None
    np.testing.assert_allclose(known, unit(text_vector(h.encoder.texts[0])), rtol=1e-6)
    assert float(np.linalg.norm(known)) == pytest.approx(1.0, abs=1e-6)
    assert h.items.cursor == h.store.change_seq
    # An item of the index is unaffected.
    indexed = h.items.get(item_key(INDEXED[0]))
    assert indexed is not None and indexed.tolist() == [1.0, 0.0, 0.0, 0.0]


async def test_a_user_vector_is_stored_as_user_and_never_embedded() -> None:
    h = Harness()
    supplied = [0.0, 3.0, 4.0, 0.0]
    event = upsert("shop:mixer-5", "m1", "Stand mixer", "Five litres.", ["kitchen"], vector=supplied)
    result = await h.process([msg(event)])

    assert result.applied == 1 and h.encoder.calls == 0
    row = h.store.items["shop:mixer-5"]
    assert row.vector_source == USER_VECTOR == "user"
    assert row.vector is not None and row.vector.tolist() == supplied
    known = h.items.get(item_key("shop:mixer-5"))
    assert known is not None
    np.testing.assert_allclose(known, [0.0, 0.6, 0.8, 0.0], rtol=1e-6)

    # A user vector mixed into a batch of texts: only the others are embedded, in one call.
    result = await h.process([msg(KITCHEN[0]), msg({**event, "event_id": "m2", "hour": 1}), msg(KITCHEN[1])])
    assert h.encoder.calls == 1 and len(h.encoder.batches[0]) == 2
    assert h.store.items["shop:mixer-5"].vector_source == USER_VECTOR


async def test_a_vector_of_the_wrong_dimension_is_dead_lettered_and_the_rest_of_the_batch_applies() -> None:
    h = Harness()
    wrong = msg(upsert("shop:sieve-1", "s1", "Fine sieve", vector=[0.1] * (DIM + 1)))
    result = await h.process([wrong, msg(KITCHEN[0])])

    assert (result.applied, result.dead_lettered) == (1, 1)
    assert result.reasons == {"vector_dimension_mismatch": 1}
    (record,) = h.sink.records()
    assert record["reason"] == "vector_dimension_mismatch"
    assert (record["topic"], record["partition"], record["offset"], record["key"]) == (
        ITEMS_TOPIC,
        1,
        wrong.offset,
        "shop:sieve-1",
    )
    assert f"{DIM + 1}" in record["detail"] and f"{DIM}" in record["detail"]
    assert "shop:sieve-1" not in h.store.items
    assert h.items.get(item_key("shop:sieve-1")) is None


# -- replays and edits -----------------------------------------------------------------------------------


async def test_replaying_a_batch_embeds_nothing_and_applies_nothing() -> None:
    h = Harness()
    batch = [msg(e) for e in KITCHEN] + [msg(change("hide", "shop:toaster-2", "k2-hide", 1))]
    await h.process(batch)
    before = {i: (row.change_seq, row.vector_source) for i, row in h.store.items.items()}
    seq, calls = h.store.change_seq, h.encoder.calls

    replay = [msg(json.loads(m.value or b"")) for m in batch]  # the same events at new offsets
    result = await h.process(replay)

    assert (result.applied, result.duplicates, result.dead_lettered) == (0, len(batch), 0)
    assert h.encoder.calls == calls == 1
    assert h.store.change_seq == seq
    assert {i: (row.change_seq, row.vector_source) for i, row in h.store.items.items()} == before


async def test_changed_text_is_embedded_again_and_unchanged_text_is_not() -> None:
    h = Harness()
    await h.process([msg(e) for e in KITCHEN[:2]])
    kettle_before = h.store.items["shop:kettle-17"].vector
    toaster_before = h.store.items["shop:toaster-2"].vector
    assert kettle_before is not None and toaster_before is not None

    edited = upsert(
        "shop:kettle-17", "k1b", "Electric kettle 1.7 l", "Now with a tea filter.", ["kitchen"], hour=2
    )
    # Same title, text and categories; a later version (a new price attribute): keeps its vector.
    repriced = {
        **KITCHEN[1],
        "event_id": "k2b",
        "event_time": "2025-06-01T02:00:00Z",
        "attributes": {"eur": 25},
    }
    result = await h.process([msg(edited), msg(repriced)])

    assert result.applied == 2
    assert h.encoder.calls == 2 and len(h.encoder.batches[1]) == 1
    assert "tea filter" in h.encoder.batches[1][0]
    kettle = h.store.items["shop:kettle-17"]
    assert kettle.text == "Now with a tea filter." and kettle.vector is not None
    np.testing.assert_allclose(kettle.vector, text_vector(h.encoder.batches[1][0]))
    assert not np.allclose(kettle.vector, kettle_before)
    toaster = h.store.items["shop:toaster-2"]
    assert toaster.attributes == {"eur": 25} and toaster.vector is not None
    np.testing.assert_array_equal(toaster.vector, toaster_before)
    live = h.items.get(item_key("shop:kettle-17"))
    assert live is not None
    np.testing.assert_allclose(live, unit(text_vector(h.encoder.batches[1][0])), rtol=1e-6)


async def test_an_attribute_the_encoder_embeds_is_embedded_again_when_it_changes() -> None:
    """The embedded text holds the ``type`` and ``themes`` attributes (``embedding_text_of``): a change of
    them alone changes the text, so the stored vector no longer fits it."""
    h = Harness()
    first = upsert("book:dune", "d1", "Dune", "A desert planet.", ["books"], attributes={"type": "Novel"})
    await h.process([msg(first)])
    second = {**first, "event_id": "d2", "event_time": "2025-06-01T05:00:00Z", "attributes": {"type": "Film"}}
    await h.process([msg(second)])

    assert h.encoder.calls == 2, "the stored vector was reused for a different embedding text"
    assert "Film" in h.encoder.batches[1][0]


async def test_a_vector_from_another_model_is_embedded_again() -> None:
    h = Harness()
    await h.process([msg(KITCHEN[0])])
    stored = h.store.items["shop:kettle-17"]
    h.store.items["shop:kettle-17"] = dataclasses.replace(stored, vector_source="older-model")

    later = {**KITCHEN[0], "event_id": "k1-later", "event_time": "2025-06-01T03:00:00Z"}
    result = await h.process([msg(later)])
    assert result.applied == 1 and h.encoder.calls == 2
    assert h.store.items["shop:kettle-17"].vector_source == MODEL


async def test_a_stale_upsert_counts_as_a_duplicate_and_changes_nothing() -> None:
    h = Harness()
    newer = {**KITCHEN[0], "event_id": "k1-new", "event_time": "2025-06-01T09:00:00Z", "title": "Kettle v2"}
    await h.process([msg(newer)])
    seq = h.store.change_seq
    result = await h.process([msg(KITCHEN[0])])  # older event_time
    assert (result.applied, result.duplicates) == (0, 1)
    assert h.store.items["shop:kettle-17"].title == "Kettle v2"
    assert h.store.change_seq == seq


# -- hide, unhide, delete --------------------------------------------------------------------------------


async def test_hide_unhide_and_delete_apply_and_the_live_vectors_follow() -> None:
    h = Harness()
    await h.process([msg(e) for e in KITCHEN])
    kettle, toaster, dune = (item_key(i) for i in ("shop:kettle-17", "shop:toaster-2", "book:dune"))
    toaster_vector = h.items.get(toaster)
    assert toaster_vector is not None

    result = await h.process(
        [
            msg(change("hide", "shop:toaster-2", "h1", 1)),
            msg(change("delete", "shop:kettle-17", "d1", 1)),
            msg(change("hide", "book:dune", "h2", 1)),
            msg(change("delete", INDEXED[1], "d2", 1)),  # an item of the published index
        ]
    )
    assert (result.applied, result.dead_lettered) == (4, 0)
    assert h.encoder.calls == 1  # hides and deletes embed nothing
    assert h.store.items["shop:toaster-2"].hidden and h.store.items["shop:toaster-2"].live
    assert h.store.items["shop:kettle-17"].deleted and not h.store.items["shop:kettle-17"].live
    assert await h.store.count_items() == 1  # the wok; the toaster and Dune are hidden
    assert await h.store.count_items(include_hidden=True) == 3

    # A hidden item stays known (its interactions still happened); a deleted one is unknown, even when the
    # published index holds it.
    hidden = h.items.get(toaster)
    assert hidden is not None
    np.testing.assert_array_equal(hidden, toaster_vector)
    assert h.items.get(dune) is not None
    assert h.items.get(kettle) is None
    assert h.items.get(item_key(INDEXED[1])) is None
    assert h.items.get(item_key(INDEXED[0])) is not None

    result = await h.process([msg(change("unhide", "shop:toaster-2", "u1", 2))])
    assert result.applied == 1
    assert not h.store.items["shop:toaster-2"].hidden
    assert await h.store.count_items() == 2

    # Upserted again after its delete: live and known again.
    back = {**KITCHEN[0], "event_id": "k1-back", "event_time": "2025-06-01T05:00:00Z"}
    result = await h.process([msg(back)])
    assert result.applied == 1 and h.store.items["shop:kettle-17"].live
    assert h.items.get(kettle) is not None


async def test_a_delete_or_hide_of_an_item_never_seen_is_not_an_error() -> None:
    h = Harness()
    result = await h.process(
        [msg(change("delete", "shop:ghost-1", "g1", 1)), msg(change("hide", "shop:ghost-2", "g2", 1))]
    )
    assert result.dead_lettered == 0 and h.sink.letters == []
    assert h.items.get(item_key("shop:ghost-1")) is None
    # An upsert older than the delete stays deleted.
    result = await h.process([msg(upsert("shop:ghost-1", "g0", "Ghost", hour=0))])
    assert (result.applied, result.duplicates) == (0, 1)
    assert h.items.get(item_key("shop:ghost-1")) is None


# -- the encoder -----------------------------------------------------------------------------------------


async def test_an_unavailable_encoder_is_retried_and_nothing_is_lost() -> None:
    h = Harness(encoder=FakeEncoder(unavailable=1))
    result = await h.process([msg(e) for e in KITCHEN])
    assert result.applied == len(KITCHEN) and result.dead_lettered == 0
    assert result.retries == 1 and h.sleeps == [0.5]
    assert h.encoder.calls == 2 and len(h.encoder.batches) == 1
    assert all(h.store.items[e["item_id"]].vector_source == MODEL for e in KITCHEN)


async def test_a_text_the_encoder_rejects_is_dead_lettered_and_the_others_apply() -> None:
    h = Harness()
    bad = msg(upsert("shop:odd-1", "o1", "Odd item", REJECT_MARK))
    result = await h.process([msg(KITCHEN[0]), bad, msg(KITCHEN[1])])

    assert (result.applied, result.dead_lettered) == (2, 1)
    assert h.encoder.calls == 1
    assert h.sink.reasons() == {bad.offset: "encoder_rejected"}
    assert "empty_text" in h.sink.records()[0]["detail"]
    assert "shop:odd-1" not in h.store.items
    assert h.items.get(item_key("shop:odd-1")) is None
    for event in KITCHEN[:2]:
        row = h.store.items[event["item_id"]]
        assert row.vector is not None and np.isfinite(row.vector).all()


# -- malformed events ------------------------------------------------------------------------------------


async def test_every_malformed_item_event_is_dead_lettered_with_its_reason() -> None:
    h = Harness()
    batch = [msg(case.value, key="sku-kettle-1") for case in MALFORMED_ITEM_EVENTS]
    good = msg(KITCHEN[0])
    result = await h.process([*batch, good])

    assert (result.applied, result.dead_lettered) == (1, len(batch))
    reasons = h.sink.reasons()
    got = {case.name: reasons.get(m.offset) for case, m in zip(MALFORMED_ITEM_EVENTS, batch, strict=True)}
    assert got == {case.name: case.reason.value for case in MALFORMED_ITEM_EVENTS}
    assert sum(result.reasons.values()) == len(batch)
    assert set(h.store.items) == {"shop:kettle-17"}
    assert h.encoder.calls == 1 and len(h.encoder.batches[0]) == 1


@pytest.mark.parametrize("case", MALFORMED_ITEM_EVENTS, ids=lambda c: c.name)
async def test_a_malformed_item_event_alone_is_dead_lettered_with_its_reason(case: Any) -> None:
    h = Harness()
    message = msg(case.value, key="sku-kettle-1")
    result = await h.process([message])
    assert (result.applied, result.duplicates, result.dead_lettered) == (0, 0, 1)
    (record,) = h.sink.records()
    assert record["reason"] == case.reason.value
    assert record["offset"] == message.offset and record["payload_base64"]
    assert h.store.items == {} and h.encoder.calls == 0


async def test_an_empty_batch_does_nothing() -> None:
    h = Harness()
    result = await h.process([])
    assert (result.applied, result.dead_lettered, h.encoder.calls, h.store.calls.total()) == (0, 0, 0, 0)


async def test_counts_add_up_over_a_mixed_batch() -> None:
    h = Harness()
    await h.process([msg(KITCHEN[0])])
    batch = [
        msg(KITCHEN[0]),  # duplicate
        msg(KITCHEN[1]),  # new
        msg(b"{not json"),  # dead letter
        msg(upsert("shop:x", "x1", "X", vector=[1.0] * (DIM + 2))),  # dead letter
        msg(upsert("shop:y", "y1", "Y", REJECT_MARK)),  # dead letter (encoder)
        msg(change("hide", "shop:kettle-17", "hk", 3)),  # new
    ]
    result = await h.process(batch)
    assert (result.received, result.applied, result.duplicates, result.dead_lettered) == (6, 2, 1, 3)
    assert result.reasons == {"invalid_json": 1, "vector_dimension_mismatch": 1, "encoder_rejected": 1}


async def test_a_replayed_upsert_of_a_deleted_item_is_not_embedded_again() -> None:
    """The delete is newer than the upsert, so the upsert is stale: embedding it again is wasted work (a
    replay of a catalogue with many deleted items would re-embed them all)."""
    h = Harness()
    await h.process([msg(KITCHEN[0])])
    await h.process([msg(change("delete", "shop:kettle-17", "kd", 5))])
    calls, seq = h.encoder.calls, h.store.change_seq

    result = await h.process([msg(KITCHEN[0])])
    assert (result.applied, result.duplicates) == (0, 1)
    assert h.store.change_seq == seq
    assert h.encoder.calls == calls, "a stale upsert was embedded"


async def test_replaying_an_edited_item_does_not_embed_its_superseded_version() -> None:
    """A replay of the items topic holds every version of an edited item; the older ones are stale and
    change nothing, so they need no embedding either."""
    h = Harness()
    old = KITCHEN[0]
    new = {**old, "event_id": "k1-v2", "event_time": "2025-06-01T04:00:00Z", "text": "Now 2 litres."}
    await h.process([msg(old)])
    await h.process([msg(new)])
    calls, seq = h.encoder.calls, h.store.change_seq
    assert calls == 2

    result = await h.process([msg(old), msg(new)])  # the topic replayed
    assert (result.applied, result.duplicates) == (0, 2)
    assert h.store.change_seq == seq
    assert h.encoder.calls == calls, "the superseded version was embedded again"


# -- two workers, one catalogue ----------------------------------------------------------------------------


async def test_an_item_deleted_through_another_worker_is_unknown_to_this_workers_next_batch() -> None:
    """Workers split the items topic's partitions: worker A applies a delete, worker B serves the ratings.
    B learns of catalogue changes only through the change feed (``LiveItemVectors.refresh``)."""
    a = Harness()
    b = Harness(store=a.store)  # another process: its own live vectors, the same catalogue
    await a.process([msg(KITCHEN[0])])
    await b.items.refresh()
    assert b.items.get(item_key("shop:kettle-17")) is not None

    await a.process([msg(change("delete", "shop:kettle-17", "kd", 5))])
    assert a.items.get(item_key("shop:kettle-17")) is None

    kafka = KafkaSettings()
    prefs = PreferenceSettings()
    ratings = BatchProcessor(
        store=a.store,
        encoder=b.encoder,
        dead_letters=b.sink,
        item_vectors=b.items,
        topic_types=topic_event_types(kafka),
        weights=weights_from_settings(prefs),
        decay=decay_from_settings(prefs),
        refresh_items=b.items.refresh,
        unknown_item_wait_s=0.0,
        now=lambda: NOW,
    )
    value = {
        "event_type": "rating",
        "event_id": "r-after-delete",
        "user_id": "alice",
        "item_id": "shop:kettle-17",
        "event_time": "2025-06-02T00:00:00Z",
        "rating": 7,
    }
    raw = RawMessage(kafka.ratings_topic, 0, 0, b"alice", json.dumps(value).encode())
    result = await ratings.process([raw])
    assert result.dead_lettered == 1 and "r-after-delete" not in a.store.ledger, (
        "worker B applied a rating for an item deleted (through worker A) before the rating was consumed"
    )


async def test_an_id_whose_key_another_item_holds_is_dead_lettered_and_the_batch_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two ids with one 62-bit key would be merged by the catalogue's unique key (or fail every retry of
    the batch): the later id is dead-lettered as ``item_key_collision``, the rest of the batch applies."""
    from llmrec import item_ids
    from llmrec.store import fake
    from stream import item_processing

    def colliding(item_id: str) -> int:
        return 7 if item_id in ("shop:kettle-17", "shop:clash") else item_ids.item_key(item_id)

    monkeypatch.setattr(item_processing, "item_key", colliding)
    monkeypatch.setattr(fake, "item_key", colliding)
    h = Harness()
    await h.process([msg(KITCHEN[0])])  # shop:kettle-17 holds key 7
    result = await h.process([msg(upsert("shop:clash", "c1", "Clash")), msg(KITCHEN[1])])
    assert (result.applied, result.dead_lettered) == (1, 1)
    assert result.reasons == {"item_key_collision": 1}
    assert "shop:clash" not in h.store.items
    # Within one batch too: the first id to claim a free key keeps it.
    monkeypatch.setattr(item_processing, "item_key", lambda item_id: 9)
    monkeypatch.setattr(fake, "item_key", lambda item_id: 9)
    fresh = Harness()
    result = await fresh.process([msg(upsert("shop:a", "a1", "A")), msg(upsert("shop:b", "b1", "B"))])
    assert (result.applied, result.reasons) == (1, {"item_key_collision": 1})
    assert set(fresh.store.items) == {"shop:a"}
