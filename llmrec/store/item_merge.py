"""The catalogue's convergence rule, pure: the PostgreSQL store and the fake both apply changes with it.

An item row holds two last-writer-wins registers, each versioned by ``(event_time, event_id)``: the body
(written by upserts and deletes) and the hidden flag (written by hides and unhides). A change writes its
register when its version is newer than the register's; otherwise it is a duplicate when it carries the
register's own event id and stale when it does not. Since each register ends up holding the newest change
applied to it, the state after a set of changes does not depend on their order or on repeats; only the
applied/stale/duplicate counts do. See ``llmrec.store.interface`` for the records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from enum import Enum

from llmrec.store.interface import (
    CatalogueChange,
    ItemApplyResult,
    ItemChange,
    ItemChangeKind,
    ItemRecord,
    StoredItem,
    Version,
)

# change_seq and updated_at of a row the rule creates: the store assigns both when it writes the row.
_UNASSIGNED_SEQ = 0
_UNASSIGNED_TIME = datetime.min.replace(tzinfo=UTC)


class Outcome(Enum):
    APPLIED = "applied"
    STALE = "stale"
    DUPLICATE = "duplicate"


def outcome(stored: Version | None, incoming: Version) -> Outcome:
    """What a change with version ``incoming`` does to a register holding version ``stored``."""
    if stored is None or incoming > stored:
        return Outcome.APPLIED
    if incoming.event_id == stored.event_id:
        return Outcome.DUPLICATE
    return Outcome.STALE


def _empty(item_id: str) -> StoredItem:
    return StoredItem(
        item_id=item_id,
        title=None,
        text=None,
        categories=(),
        attributes={},
        vector=None,
        vector_source=None,
        content_hash=None,
        hidden=False,
        deleted=False,
        body_version=None,
        hidden_version=None,
        change_seq=_UNASSIGNED_SEQ,
        updated_at=_UNASSIGNED_TIME,
    )


def apply_change(current: StoredItem | None, change: CatalogueChange) -> tuple[StoredItem | None, Outcome]:
    """The row after ``change`` (``current`` itself unless the change applied) and what the change did.
    ``current`` is None for an item the store has no row for."""
    item = current if current is not None else _empty(change.item_id)
    if isinstance(change, ItemRecord):
        result = outcome(item.body_version, change.version)
        if result is not Outcome.APPLIED:
            return current, result
        return (
            replace(
                item,
                title=change.title,
                text=change.text,
                categories=change.categories,
                attributes=change.attributes,
                vector=change.vector,
                vector_source=change.vector_source,
                content_hash=change.content_hash,
                deleted=False,
                body_version=change.version,
            ),
            result,
        )
    if change.kind is ItemChangeKind.DELETE:
        result = outcome(item.body_version, change.version)
        if result is not Outcome.APPLIED:
            return current, result
        # A tombstone: the content goes, the row and its version stay.
        return (
            replace(
                _empty(item.item_id),
                hidden=item.hidden,
                hidden_version=item.hidden_version,
                deleted=True,
                body_version=change.version,
                change_seq=item.change_seq,
                updated_at=item.updated_at,
            ),
            result,
        )
    result = outcome(item.hidden_version, change.version)
    if result is not Outcome.APPLIED:
        return current, result
    return replace(item, hidden=change.kind is ItemChangeKind.HIDE, hidden_version=change.version), result


def apply_changes(
    current: Mapping[str, StoredItem], changes: Sequence[CatalogueChange]
) -> tuple[dict[str, StoredItem], ItemApplyResult]:
    """Fold ``changes`` in order over the stored rows ``current`` (by item id; it must hold every stored
    row the changes touch). Returns the new rows of the items that changed, for the store to write with a
    new ``change_seq`` and ``updated_at`` each, and the counts."""
    rows: dict[str, StoredItem | None] = {}
    changed: set[str] = set()
    counts = dict.fromkeys(Outcome, 0)
    for change in changes:
        if not isinstance(change, ItemRecord | ItemChange):
            raise TypeError(f"not a catalogue change: {type(change).__name__}")
        item_id = change.item_id
        before = rows[item_id] if item_id in rows else current.get(item_id)
        after, result = apply_change(before, change)
        rows[item_id] = after
        counts[result] += 1
        if result is Outcome.APPLIED:
            changed.add(item_id)
    new_rows = {item_id: row for item_id in sorted(changed) if (row := rows[item_id]) is not None}
    return new_rows, ItemApplyResult(
        applied=counts[Outcome.APPLIED], stale=counts[Outcome.STALE], duplicates=counts[Outcome.DUPLICATE]
    )
