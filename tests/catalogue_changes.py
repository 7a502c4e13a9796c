"""Catalogue change scenarios and a comparable projection of catalogue state, shared by the unit tests of
the fake (``tests/unit/test_catalogue_convergence.py``) and the integration tests against PostgreSQL
(``tests/integration/test_catalogue_store.py``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from llmrec.store import (
    CatalogueChange,
    CatalogueStore,
    ItemChange,
    ItemChangeKind,
    ItemRecord,
    StoredItem,
)

T0 = datetime(2024, 3, 1, tzinfo=UTC)
DIM = 4


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def vec(seed: int, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def upsert(
    item_id: str,
    hours: float,
    event_id: str,
    title: str = "title",
    text: str = "",
    categories: Sequence[str] = (),
    attributes: dict[str, Any] | None = None,
    vector_seed: int | None = 0,
    source: str = "test-encoder",
) -> ItemRecord:
    return ItemRecord(
        item_id=item_id,
        event_time=at(hours),
        event_id=event_id,
        title=title,
        text=text,
        categories=tuple(categories),
        attributes=attributes or {},
        vector=vec(vector_seed) if vector_seed is not None else None,
        vector_source=source if vector_seed is not None else None,
    )


def change(item_id: str, kind: ItemChangeKind, hours: float, event_id: str) -> ItemChange:
    return ItemChange(item_id=item_id, kind=kind, event_time=at(hours), event_id=event_id)


HIDE, UNHIDE, DELETE = ItemChangeKind.HIDE, ItemChangeKind.UNHIDE, ItemChangeKind.DELETE


def scenario(p: str) -> list[CatalogueChange]:
    """Changes to items whose ids start with ``p``, in the order a producer sent them; every interesting
    case of the rule at least once. The expected end state is ``EXPECTED`` (ids without the prefix)."""
    return [
        # a: upserted, edited, hidden, unhidden; the hide's time lies between the two upserts.
        upsert(f"{p}a", 1, f"{p}e01", title="A", text="first", categories=["x", "y"], vector_seed=1),
        change(f"{p}a", HIDE, 2, f"{p}e02"),
        upsert(f"{p}a", 3, f"{p}e03", title="A", text="second", categories=["x"], vector_seed=2),
        change(f"{p}a", UNHIDE, 4, f"{p}e04"),
        # b: deleted before it was ever seen; an older upsert arriving later stays stale.
        change(f"{p}b", DELETE, 5, f"{p}e05"),
        upsert(f"{p}b", 2, f"{p}e06", title="B"),
        # c: hidden before it was ever seen, then upserted: a hidden item with a body.
        change(f"{p}c", HIDE, 1, f"{p}e07"),
        upsert(f"{p}c", 2, f"{p}e08", title="C", attributes={"year": 2009, "tags": ["tv", "long"]}),
        # d: two upserts at the same time: the larger event id wins.
        upsert(f"{p}d", 1, f"{p}e10", title="D later id", vector_seed=4),
        upsert(f"{p}d", 1, f"{p}e09", title="D earlier id", vector_seed=3),
        # e: upserted, deleted, then an upsert older than the delete: stays deleted.
        upsert(f"{p}e", 1, f"{p}e11", title="E", vector_seed=5),
        change(f"{p}e", DELETE, 3, f"{p}e12"),
        upsert(f"{p}e", 2, f"{p}e13", title="E again", vector_seed=6),
        # f: no vector; deleted, then upserted again after the delete: live again.
        upsert(f"{p}f", 1, f"{p}e14", title="F", vector_seed=None),
        change(f"{p}f", DELETE, 2, f"{p}e15"),
        upsert(f"{p}f", 3, f"{p}e16", title="F back", source="user", vector_seed=7),
        # g: unhidden before it was seen, then an older hide: the unhide wins, the item stays visible.
        change(f"{p}g", UNHIDE, 5, f"{p}e17"),
        upsert(f"{p}g", 1, f"{p}e18", title="G", vector_seed=8),
        change(f"{p}g", HIDE, 3, f"{p}e19"),
    ]


# item (without prefix) -> (title, deleted, hidden, winning body event, winning hidden event), event ids
# without prefix.
EXPECTED: dict[str, tuple[str | None, bool, bool, str | None, str | None]] = {
    "a": ("A", False, False, "e03", "e04"),
    "b": (None, True, False, "e05", None),
    "c": ("C", False, True, "e08", "e07"),
    "d": ("D later id", False, False, "e10", None),
    "e": (None, True, False, "e12", None),
    "f": ("F back", False, False, "e16", None),
    "g": ("G", False, False, "e18", "e17"),
}


def projection(item: StoredItem, prefix: str = "") -> tuple[Any, ...]:
    """Everything about a row that the convergence rule decides, comparable with ``==`` (the vector as a
    list, the attributes as sorted JSON, ids without ``prefix``); not ``change_seq`` or ``updated_at``."""

    def strip(value: str) -> str:
        return value.removeprefix(prefix)

    def version(v: Any) -> tuple[datetime, str] | None:
        return (v.event_time, strip(v.event_id)) if v is not None else None

    return (
        strip(item.item_id),
        item.title,
        item.text,
        item.categories,
        json.dumps(item.attributes, sort_keys=True),
        item.vector.tolist() if item.vector is not None else None,
        item.vector_source,
        item.content_hash,
        item.hidden,
        item.deleted,
        version(item.body_version),
        version(item.hidden_version),
        version(item.version),
    )


def state(items: Iterable[StoredItem], prefix: str = "") -> dict[str, tuple[Any, ...]]:
    """The projection of every row whose id starts with ``prefix``, by id without the prefix."""
    return {
        item.item_id.removeprefix(prefix): projection(item, prefix)
        for item in items
        if item.item_id.startswith(prefix)
    }


async def follow(store: CatalogueStore, cursor: int = 0, page: int = 3) -> tuple[list[StoredItem], int]:
    """Read the change feed from ``cursor`` to its end in pages of ``page`` rows: every row changed since,
    in ``change_seq`` order, and the cursor to continue from."""
    seen: list[StoredItem] = []
    while True:
        items, cursor = await store.items_changed_since(cursor, limit=page)
        if not items:
            return seen, cursor
        assert len(items) <= page
        seen.extend(items)


async def read_state(store: CatalogueStore, prefix: str) -> dict[str, tuple[Any, ...]]:
    """The state of the prefix's rows, through ``get_items`` (the scenario's ids a to g and one unknown)."""
    ids = [f"{prefix}{name}" for name in "abcdefgz"]
    return state((await store.get_items(ids)).values(), prefix)
