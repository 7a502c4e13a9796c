"""The worker's items topic, end to end: real Kafka, real PostgreSQL, a real Triton encoder and the worker as
a process (``python -m stream``).

A synthetic catalogue that is not anime at all (kitchen goods, books, garden and toy shop items; ids such
as ``shop:kettle-17``) is imported with ``llmrec import-items`` from a JSON-lines file onto the items topic.
The worker embeds each item through Triton and stores it in the catalogue, and from then on interactions
about these items (which the published index never held) apply; an interaction that arrives before its
item waits for it; a hidden item stays known, a deleted one does not; malformed item events are
dead-lettered with their reason; a replay of the whole items topic rewrites nothing; a worker killed in
the middle of an import loses nothing and applies nothing twice.

One worker (and one import) serves the module's tests (``items_stack``): Triton embeds the catalogue once.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import psycopg
import pytest
from workers import (
    WorkerProcess,
    build_index,
    publish_recorded,
    read_to_end,
    running_worker,
    wait_until,
)

from deploy import worker as harness
from encoder_triton.client import encode_corpus
from jobs.import_items import ImportSummary, import_item_file
from llmrec.events.lag import wait_until_consumed
from llmrec.events.producer import EventProducer
from llmrec.events.schema import DeleteItemEvent, HideItemEvent, RatingEvent, UpsertItemEvent
from llmrec.events.topics import ensure_system_topics
from llmrec.item_ids import item_key, mal_item_id
from llmrec.item_text import embedding_text_of
from llmrec.settings import Settings, TritonSettings
from llmrec.store.interface import StoredItem
from llmrec.store.postgres import PostgresStore
from tests.catalogue_changes import follow
from tests.corpus.malformed_events import MALFORMED_ITEM_EVENTS

# Triton starts and the catalogue is embedded in the first test's setup: minutes on 2 shared cores.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

T = TypeVar("T")
DIM = 384  # the encoder's width: the index must have it, or the catalogue's vectors would not fit
WAIT_S = 8.0  # unknown_item_wait_s of this module's worker
INDEXED = [mal_item_id(i) for i in (1, 5, 6, 7, 20)]  # the published index: anime, none of the catalogue
CONSUME_TIMEOUT_S = 420.0

# -- a synthetic non-anime catalogue ------------------------------------------------------------------------

SHOPS: dict[str, tuple[str, list[str], list[str]]] = {
    # namespace: (department, product nouns, adjectives)
    "shop": (
        "kitchen",
        [
            "kettle",
            "toaster",
            "blender",
            "wok",
            "frying-pan",
            "stock-pot",
            "chef-knife",
            "whisk",
            "spatula",
            "grater",
            "peeler",
            "colander",
            "teapot",
            "mug",
            "coffee-grinder",
        ],
        ["stainless", "cast iron", "enamel", "compact", "professional"],
    ),
    "book": (
        "books",
        [
            "novel",
            "cookbook",
            "atlas",
            "field-guide",
            "biography",
            "poetry-collection",
            "thriller",
            "history",
            "travel-guide",
            "dictionary",
            "graphic-novel",
            "essay-collection",
            "memoir",
            "textbook",
            "anthology",
        ],
        ["illustrated", "paperback", "hardcover", "annotated", "pocket"],
    ),
    "garden": (
        "garden",
        [
            "trowel",
            "hose",
            "rake",
            "pruner",
            "watering-can",
            "planter",
            "seed-tray",
            "wheelbarrow",
            "hedge-trimmer",
            "lawn-mower",
            "compost-bin",
            "bird-feeder",
            "sprinkler",
            "shovel",
            "gloves",
        ],
        ["galvanised", "ergonomic", "cordless", "recycled", "heavy-duty"],
    ),
    "toy": (
        "toys",
        [
            "puzzle",
            "kite",
            "building-blocks",
            "train-set",
            "doll-house",
            "yo-yo",
            "board-game",
            "skipping-rope",
            "spinning-top",
            "marble-run",
            "teddy-bear",
            "water-pistol",
            "drum",
            "xylophone",
            "robot-kit",
        ],
        ["wooden", "colourful", "educational", "magnetic", "giant"],
    ),
}
PER_NOUN = 5  # 4 namespaces x 15 nouns x 5 variants = 300 items


def synthetic_catalogue(namespace_suffix: str = "", per_noun: int = PER_NOUN) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for namespace, (department, nouns, adjectives) in SHOPS.items():
        for noun in nouns:
            for n in range(per_noun):
                adjective = adjectives[n % len(adjectives)]
                number = 3 * n + len(noun)
                name = noun.replace("-", " ")
                items.append(
                    {
                        "id": f"{namespace}{namespace_suffix}:{noun}-{number}",
                        "title": f"{adjective.capitalize()} {name} no. {number}",
                        "text": f"A {adjective} {name} from our {department} range, model {number}.",
                        "categories": [department, noun.split("-")[0]],
                        "attributes": {"price_eur": round(4.5 + number * 1.25, 2), "in_stock": n % 2 == 0},
                    }
                )
    ids = [item["id"] for item in items]
    assert len(set(ids)) == len(ids)
    return items


CATALOGUE = synthetic_catalogue()
# An id with characters beyond ASCII: ids are opaque strings of the catalogue's owner.
CATALOGUE.append(
    {
        "id": "shop:crème-brûlée-torch-1",
        "title": "Crème brûlée torch",
        "text": "Butane kitchen torch.",
        "categories": ["kitchen"],
    }
)
CATALOGUE_IDS = [item["id"] for item in CATALOGUE]


def write_jsonl(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items), encoding="utf-8")
    return path


# -- reading the store and the topics ----------------------------------------------------------------------


def with_store(dsn: str, use: Callable[[PostgresStore], Awaitable[T]]) -> T:
    async def run() -> T:
        async with PostgresStore(dsn, min_size=1, max_size=2) as store:
            return await use(store)

    return asyncio.run(run())


def stored(dsn: str, ids: list[str]) -> dict[str, StoredItem]:
    return with_store(dsn, lambda s: s.get_items(ids))


def count_items(dsn: str, include_hidden: bool = False) -> int:
    return with_store(dsn, lambda s: s.count_items(include_hidden=include_hidden))


def change_seqs(dsn: str) -> dict[str, int]:
    """Every catalogue row's ``change_seq``, read through the change feed (``items_changed_since``)."""

    async def read(store: PostgresStore) -> dict[str, int]:
        rows, _ = await follow(store, 0, page=500)
        return {row.item_id: row.change_seq for row in rows}

    return with_store(dsn, read)


def ledger_items(dsn: str, event_ids: list[str]) -> dict[str, int]:
    """event_id -> item key of these events' ledger rows."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT event_id, item_id FROM interactions WHERE event_id = ANY(%s)", (event_ids,)
        ).fetchall()
    return {row[0]: int(row[1]) for row in rows}


def profile_vector(dsn: str, user_id: str) -> np.ndarray | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT vector_sum::real[] FROM user_profiles WHERE user_id = %s", (user_id,)
        ).fetchone()
    return None if row is None else np.asarray(row[0], dtype=np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def dead_letters(settings: Settings) -> list[dict[str, Any]]:
    return [json.loads(r.value or b"") for r in read_to_end(settings, settings.kafka.dead_letter_topic)]


def letters_about(settings: Settings, event_ids: list[str]) -> dict[str, list[str]]:
    """event_id -> the reasons of the dead letters whose payload is that event."""
    found: dict[str, list[str]] = {}
    for letter in dead_letters(settings):
        try:
            event_id = json.loads(letter["payload"]).get("event_id")
        except (ValueError, AttributeError):
            continue
        if event_id in event_ids:
            found.setdefault(event_id, []).append(letter["reason"])
    return found


def item_batch_totals(log: str, field: str) -> int:
    """Sum of ``field=N`` over the worker's "item batch processed" lines."""
    return sum(
        int(n)
        for line in log.splitlines()
        if "item batch processed" in line
        for n in re.findall(rf"\b{field}=(\d+)", line)
    )


def rating(user_id: str, item_id: str, score: float = 9) -> RatingEvent:
    return RatingEvent(
        event_id=f"{user_id}-{uuid.uuid4().hex[:8]}",
        user_id=user_id,
        item_id=item_id,
        event_time=datetime.now(UTC),
        rating=score,
    )


def publish(
    settings: Settings, *events: RatingEvent | UpsertItemEvent | HideItemEvent | DeleteItemEvent
) -> None:
    with EventProducer(settings.kafka) as producer:
        for event in events:
            if isinstance(event, RatingEvent):
                producer.publish(event)
            else:
                producer.publish_item(event)
        producer.flush(30)


def consumed(settings: Settings) -> float:
    return wait_until_consumed(settings.kafka, timeout_s=CONSUME_TIMEOUT_S)


# -- the module's stack ---------------------------------------------------------------------------------


@dataclass
class ItemsStack:
    settings: Settings
    worker: WorkerProcess
    dsn: str
    import_summary: ImportSummary
    visible_before: int
    all_before: int
    import_s: float


def items_settings(
    settings_factory: Callable[..., Settings], triton_settings: TritonSettings, wait_s: float = WAIT_S
) -> Settings:
    base = settings_factory(triton=triton_settings)
    settings = base.model_copy(
        update={"worker": base.worker.model_copy(update={"unknown_item_wait_s": wait_s})}
    )
    build_index(settings, INDEXED, DIM)
    ensure_system_topics(settings.kafka)
    return settings


@pytest.fixture(scope="module")
def items_stack(
    settings_factory: Callable[..., Settings],
    triton_settings: TritonSettings,
    postgres_dsn: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ItemsStack]:
    settings = items_settings(settings_factory, triton_settings)
    with running_worker(settings, "items-worker") as worker:
        visible_before, all_before = count_items(postgres_dsn), count_items(postgres_dsn, include_hidden=True)
        path = write_jsonl(tmp_path_factory.mktemp("catalogue") / "shop.jsonl", CATALOGUE)
        started = time.monotonic()
        summary = import_item_file(settings, path, progress=False, source="test-shop")
        consumed(settings)
        import_s = time.monotonic() - started
        print(f"\n{len(CATALOGUE)} items imported, embedded and stored in {import_s:.1f}s")
        yield ItemsStack(settings, worker, postgres_dsn, summary, visible_before, all_before, import_s)


# -- tests ----------------------------------------------------------------------------------------------


def test_an_imported_catalogue_is_stored_with_vectors_from_the_encoder(items_stack: ItemsStack) -> None:
    s = items_stack
    summary = s.import_summary
    assert (summary.read, summary.invalid_count, summary.delivered, summary.failed) == (
        len(CATALOGUE),
        0,
        len(CATALOGUE),
        0,
    ), summary.invalid[:3]

    rows = stored(s.dsn, CATALOGUE_IDS)
    assert sorted(rows) == sorted(CATALOGUE_IDS)
    # Counted once each; only this module's worker wrote to the catalogue meanwhile.
    assert count_items(s.dsn) - s.visible_before == len(CATALOGUE)
    assert count_items(s.dsn, include_hidden=True) - s.all_before == len(CATALOGUE)

    model = s.settings.triton.model_name
    for item in CATALOGUE:
        row = rows[item["id"]]
        assert row.live and not row.hidden and not row.deleted, item["id"]
        assert row.title == item["title"] and row.text == item["text"]
        assert row.categories == tuple(item["categories"])
        assert dict(row.attributes) == item.get("attributes", {})
        assert row.vector_source == model, (item["id"], row.vector_source)
        assert row.vector is not None and row.vector.shape == (DIM,)
        assert np.isfinite(row.vector).all()
        assert float(np.linalg.norm(row.vector)) == pytest.approx(1.0, abs=1e-3)

    # The stored vectors are the encoder's embeddings of the items' texts (as the offline index embeds).
    sample = CATALOGUE[::37]
    texts = [
        embedding_text_of(i["title"], i["categories"], i["text"], i.get("attributes", {})) for i in sample
    ]
    expected = encode_corpus(
        texts, s.settings.triton.grpc_url, s.settings.triton.model_name, batch_size=len(texts), progress=False
    )
    for item, vector in zip(sample, expected, strict=True):
        got = rows[item["id"]].vector
        assert got is not None
        assert cosine(got, vector) > 0.999, item["id"]
    # Different items, different vectors.
    assert cosine(rows[CATALOGUE_IDS[0]].vector, rows[CATALOGUE_IDS[-2]].vector) < 0.99  # type: ignore[arg-type]

    # Nothing of the import was dead-lettered.
    assert not [letter for letter in dead_letters(s.settings) if letter["key"] in set(CATALOGUE_IDS)]
    assert item_batch_totals(s.worker.log(), "embedded") >= len(CATALOGUE)


def test_a_rating_for_an_item_of_the_catalogue_not_in_the_index_is_applied(items_stack: ItemsStack) -> None:
    s = items_stack
    item_id = "shop:kettle-6"
    assert item_id in CATALOGUE_IDS and item_id not in INDEXED
    user = f"cat-{uuid.uuid4().hex[:6]}"
    event = rating(user, item_id)
    publish(s.settings, event)
    consumed(s.settings)

    assert ledger_items(s.dsn, [event.event_id]) == {event.event_id: item_key(item_id)}
    assert letters_about(s.settings, [event.event_id]) == {}
    # The item's vector moved the profile: one rating points the profile at the item.
    profile = profile_vector(s.dsn, user)
    item_vector = stored(s.dsn, [item_id])[item_id].vector
    assert profile is not None and item_vector is not None
    assert cosine(profile, item_vector) > 0.999

    # An item of the published index that the catalogue never held is still known.
    indexed = rating(user + "-ix", INDEXED[0])
    publish(s.settings, indexed)
    consumed(s.settings)
    assert event.event_id in ledger_items(s.dsn, [event.event_id])
    assert indexed.event_id in ledger_items(s.dsn, [indexed.event_id])


def test_a_rating_published_before_its_item_waits_for_it_and_is_applied(items_stack: ItemsStack) -> None:
    s = items_stack
    item_id = f"book:late-arrival-{uuid.uuid4().hex[:6]}"
    user = f"early-{uuid.uuid4().hex[:6]}"
    early = rating(user, item_id, score=10)
    log_lines = len(s.worker.log().splitlines())
    publish(s.settings, early)
    time.sleep(2.5)  # the worker holds the rating meanwhile; well within WAIT_S
    upsert = UpsertItemEvent(
        event_id=f"{item_id}-v1",
        item_id=item_id,
        event_time=datetime.now(UTC),
        title="The late arrival",
        text="A novel about a train that is always on time.",
        categories=("books", "novel"),
    )
    publish(s.settings, upsert)
    consumed(s.settings)

    assert letters_about(s.settings, [early.event_id]) == {}
    assert ledger_items(s.dsn, [early.event_id]) == {early.event_id: item_key(item_id)}
    row = stored(s.dsn, [item_id])[item_id]
    assert row.vector_source == s.settings.triton.model_name and row.vector is not None
    profile = profile_vector(s.dsn, user)
    assert profile is not None and cosine(profile, row.vector) > 0.999
    # The worker had the rating before the item arrived: its batch waited (it did not merely come late).
    waited_ms = [
        float(ms)
        for line in s.worker.log().splitlines()[log_lines:]
        if "batch processed" in line and "item batch" not in line and s.settings.kafka.ratings_topic in line
        for ms in re.findall(r"latency_ms=([\d.]+)", line)
    ]
    assert waited_ms and max(waited_ms) >= 1500, waited_ms


def test_a_hidden_item_stays_known_and_a_deleted_one_is_unknown(items_stack: ItemsStack) -> None:
    s = items_stack
    hidden_id, deleted_id = "garden:rake-7", "toy:kite-7"
    deleted_indexed = INDEXED[1]  # held by the published index; deleted on the items topic
    assert {hidden_id, deleted_id} <= set(CATALOGUE_IDS)
    visible, everything = count_items(s.dsn), count_items(s.dsn, include_hidden=True)
    now = datetime.now(UTC)
    publish(
        s.settings,
        HideItemEvent(event_id=f"hide-{hidden_id}", item_id=hidden_id, event_time=now),
        DeleteItemEvent(event_id=f"delete-{deleted_id}", item_id=deleted_id, event_time=now),
        DeleteItemEvent(event_id=f"delete-{deleted_indexed}", item_id=deleted_indexed, event_time=now),
    )
    consumed(s.settings)

    rows = stored(s.dsn, [hidden_id, deleted_id, deleted_indexed])
    assert rows[hidden_id].hidden and rows[hidden_id].live
    assert rows[deleted_id].deleted and not rows[deleted_id].live
    assert rows[deleted_indexed].deleted
    assert count_items(s.dsn) == visible - 2
    assert count_items(s.dsn, include_hidden=True) == everything - 1

    user = f"hd-{uuid.uuid4().hex[:6]}"
    on_hidden, on_deleted, on_deleted_indexed = (
        rating(user, hidden_id),
        rating(user, deleted_id),
        rating(user, deleted_indexed),
    )
    started = time.monotonic()
    publish(s.settings, on_hidden, on_deleted, on_deleted_indexed)
    consumed(s.settings)
    took = time.monotonic() - started

    ids = [on_hidden.event_id, on_deleted.event_id, on_deleted_indexed.event_id]
    assert ledger_items(s.dsn, ids) == {on_hidden.event_id: item_key(hidden_id)}
    wait_until(lambda: len(letters_about(s.settings, ids)) == 2, 30, "the dead letters")
    assert letters_about(s.settings, ids) == {
        on_deleted.event_id: ["unknown_item"],
        on_deleted_indexed.event_id: ["unknown_item"],
    }
    assert took >= WAIT_S - 1.0, "an unknown item's event is dead-lettered only after the wait"


def test_malformed_item_events_are_dead_lettered_with_their_reason(items_stack: ItemsStack) -> None:
    s = items_stack
    topic = s.settings.kafka.items_topic
    positions = publish_recorded(
        s.settings, [(topic, b"sku-kettle-1", case.value) for case in MALFORMED_ITEM_EVENTS]
    )
    consumed(s.settings)

    wanted = {(p.partition, p.offset): case for p, case in zip(positions, MALFORMED_ITEM_EVENTS, strict=True)}

    def letters() -> dict[tuple[int, int], list[str]]:
        found: dict[tuple[int, int], list[str]] = {}
        for letter in dead_letters(s.settings):
            where = (letter["partition"], letter["offset"])
            if letter["topic"] == topic and where in wanted:
                found.setdefault(where, []).append(letter["reason"])
        return found

    wait_until(lambda: len(letters()) == len(wanted), 60, "a dead letter for every malformed item event")
    got = {wanted[where].name: reasons for where, reasons in letters().items()}
    assert got == {case.name: [case.reason.value] for case in MALFORMED_ITEM_EVENTS}
    assert stored(s.dsn, ["sku-kettle-1"]) == {}


def test_replaying_the_items_topic_rewrites_nothing(items_stack: ItemsStack) -> None:
    s = items_stack
    # An edit first, so the topic holds a superseded version of an item: the edit is embedded again.
    edited_id = "book:atlas-11"
    original = next(item for item in CATALOGUE if item["id"] == edited_id)
    old_vector = stored(s.dsn, [edited_id])[edited_id].vector
    embedded_before = item_batch_totals(s.worker.log(), "embedded")
    edit = UpsertItemEvent(
        event_id=f"edit-{edited_id}",
        item_id=edited_id,
        event_time=datetime.now(UTC),
        title=original["title"],
        text="Now with maps of every lighthouse on the Atlantic coast.",
        categories=tuple(original["categories"]),
    )
    publish(s.settings, edit)
    consumed(s.settings)
    row = stored(s.dsn, [edited_id])[edited_id]
    assert row.text == edit.text and row.vector is not None and old_vector is not None
    assert cosine(row.vector, old_vector) < 0.999
    assert item_batch_totals(s.worker.log(), "embedded") == embedded_before + 1

    before = change_seqs(s.dsn)
    counts = count_items(s.dsn), count_items(s.dsn, include_hidden=True)
    assert set(CATALOGUE_IDS) <= set(before)
    log_lines = len([line for line in s.worker.log().splitlines() if "item batch processed" in line])

    records = read_to_end(s.settings, s.settings.kafka.items_topic)
    assert len(records) >= len(CATALOGUE) + 1
    publish_recorded(s.settings, [(s.settings.kafka.items_topic, r.key, r.value) for r in records])
    consumed(s.settings)

    assert change_seqs(s.dsn) == before, "a replayed item event rewrote its row"
    assert (count_items(s.dsn), count_items(s.dsn, include_hidden=True)) == counts
    replay_log = "\n".join(
        [line for line in s.worker.log().splitlines() if "item batch processed" in line][log_lines:]
    )
    assert item_batch_totals(replay_log, "size") == len(records)
    assert item_batch_totals(replay_log, "applied") == 0
    # Last, as it is about wasted work rather than the catalogue's state: a replayed upsert that is stale
    # (the deleted toy:kite-7's, the edited item's first version) needs no embedding either.
    assert item_batch_totals(replay_log, "embedded") == 0, "a replay re-embedded stale upserts"


def test_a_worker_killed_mid_import_loses_nothing_and_applies_nothing_twice(
    settings_factory: Callable[..., Settings],
    triton_settings: TritonSettings,
    postgres_dsn: str,
    tmp_path: Path,
) -> None:
    settings = items_settings(settings_factory, triton_settings)
    suffix = f"-k{uuid.uuid4().hex[:4]}"
    catalogue = synthetic_catalogue(suffix, per_noun=10)  # 600 items in their own namespaces
    ids = [item["id"] for item in catalogue]
    summary = import_item_file(settings, write_jsonl(tmp_path / "kill.jsonl", catalogue), progress=False)
    assert summary.delivered == len(catalogue)

    def stored_now() -> dict[str, int]:
        with psycopg.connect(postgres_dsn) as conn:
            rows = conn.execute(
                "SELECT item_id, change_seq FROM catalogue_items WHERE item_id = ANY(%s)", (ids,)
            ).fetchall()
        return {row[0]: int(row[1]) for row in rows}

    first = harness.start_worker(settings, "kill-worker-1", strict_stop=True)
    try:
        first.wait_ready()
        wait_until(lambda: len(stored_now()) >= 64, 300, "the first item batches")
        first.kill()
    finally:
        first.kill()
    at_kill = stored_now()
    print(f"\nkilled with {len(at_kill)} of {len(catalogue)} items stored")
    assert len(at_kill) < len(catalogue), "the import finished before the kill: make the catalogue larger"

    with running_worker(settings, "kill-worker-2") as second:
        consumed(settings)
        after = stored_now()
        assert second.stop() == 0

    assert sorted(after) == sorted(ids)
    # What was stored before the kill was not written again (a redelivered batch is all duplicates).
    assert {i: after[i] for i in at_kill} == at_kill
    rows = stored(postgres_dsn, ids)
    assert all(r.live and r.vector_source == settings.triton.model_name for r in rows.values())
    assert item_batch_totals(second.log(), "applied") == len(catalogue) - len(at_kill)
