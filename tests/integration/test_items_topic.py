"""``llmrec import-items`` against a real Kafka broker: a small non-anime catalogue (kitchen products) lands
on the items topic, keyed by item id, as valid upserts; importing it again publishes the same event ids."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from jobs.import_items import import_item_file
from llmrec.events.schema import UpsertItemEvent
from llmrec.events.topics import system_topics
from llmrec.events.validation import parse_item_event
from llmrec.settings import KafkaSettings, Settings

pytestmark = pytest.mark.integration

PARTITIONS = 4
Record = tuple[int, bytes | None, bytes | None]  # partition, key, value

PRODUCTS = [
    ("kettle", "Electric kettle 1.7 l", ["appliances"], 39.9),
    ("toaster", "Two-slice toaster", ["appliances"], 29.0),
    ("blender", "Countertop blender", ["appliances"], 79.5),
    ("pan-28", "Cast iron frying pan, 28 cm", ["cookware"], 45.0),
    ("pot-5l", "Stock pot, 5 litres", ["cookware"], 52.0),
    ("wok", "Carbon steel wok", ["cookware"], 34.0),
    ("knife-chef", "Chef's knife, 20 cm", ["knives"], 89.0),
    ("knife-bread", "Bread knife", ["knives"], 25.0),
    ("board", "Oak chopping board", ["prep"], 30.0),
    ("whisk", "Balloon whisk", ["prep", "baking"], 8.5),
    ("spatula", "Silicone spatula", ["prep", "baking"], 6.0),
    ("scale", "Digital kitchen scale", ["baking"], 19.0),
    ("tin-cake", "Springform cake tin, 24 cm", ["baking"], 15.0),
    ("rolling-pin", "Beech rolling pin", ["baking"], 12.0),
    ("grater", "Box grater", ["prep"], 14.0),
    ("peeler", "Y-peeler", ["prep"], 5.0),
    ("colander", "Stainless colander", ["prep"], 18.0),
    ("teapot", "Cast iron teapot", ["tea"], 49.0),
    ("mugs-4", "Set of four mugs", ["tea", "tableware"], 24.0),
    ("grinder", "Burr coffee grinder", ["appliances", "coffee"], 99.0),
]


def consume_items(kafka: KafkaSettings, expected: int, timeout_s: float = 30.0) -> list[Record]:
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": f"check-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([kafka.items_topic])
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            records.append((message.partition(), message.key(), message.value()))
        extra = consumer.poll(1.0)  # anything beyond the expected count is a bug
        if extra is not None and extra.error() is None:
            records.append((extra.partition(), extra.key(), extra.value()))
    finally:
        consumer.close()
    return records


def test_a_kitchen_catalogue_lands_on_the_items_topic_keyed_by_item_id(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    kafka = KafkaSettings(
        bootstrap=kafka_bootstrap, topic_prefix=f"items{uuid.uuid4().hex[:8]}", partitions=PARTITIONS
    )
    settings = Settings(kafka=kafka, root=tmp_path)
    assert kafka.items_topic in system_topics(kafka)
    path = tmp_path / "kitchen.jsonl"
    lines = [
        {
            "id": f"sku-{slug}",
            "title": title,
            "text": f"{title}. A kitchen staple.",
            "categories": categories,
            "attributes": {"price_eur": price, "in_stock": True},
        }
        for slug, title, categories, price in PRODUCTS
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in [*lines, {"id": "sku-bad", "title": ""}]))

    # The default producer creates the topics (the items topic among them) before publishing.
    first = import_item_file(settings, path, progress=False, source="kitchen-shop")
    assert (first.read, first.published, first.delivered, first.failed) == (21, 20, 20, 0)
    assert [(i.line_no, i.reason) for i in first.invalid] == [(21, "schema_violation")]

    records = consume_items(kafka, 20)
    assert len(records) == 20
    events = {}
    for _, key, value in records:
        assert value is not None
        event = parse_item_event(value)
        assert isinstance(event, UpsertItemEvent) and event.source == "kitchen-shop"
        assert key == event.item_id.encode()
        events[event.item_id] = event
    assert set(events) == {f"sku-{slug}" for slug, *_ in PRODUCTS}
    assert events["sku-teapot"].categories == ("tea",)
    assert events["sku-teapot"].attributes == {"price_eur": 49.0, "in_stock": True}

    # Importing the same file again publishes the same event ids (the worker will apply each once), and each
    # item's events stay on one partition.
    second = import_item_file(settings, path, progress=False, source="kitchen-shop")
    assert second.delivered == 20
    records = consume_items(kafka, 40)
    assert len(records) == 40
    ids_by_item: dict[str, set[str]] = {}
    partitions_by_item: dict[str, set[int]] = {}
    for partition, _, value in records:
        event = parse_item_event(value)
        ids_by_item.setdefault(event.item_id, set()).add(event.event_id)
        partitions_by_item.setdefault(event.item_id, set()).add(partition)
    assert all(len(ids) == 1 for ids in ids_by_item.values())
    assert all(len(parts) == 1 for parts in partitions_by_item.values())
