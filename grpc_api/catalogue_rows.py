"""Per-row item metadata of a ``Snapshot``: what the API shows and filters by for each index row.

Built once from the whole catalogue (``CatalogueRows.build``), then derived for each live change
(``CatalogueRows.derive``) at the cost of the changed rows: every column is a ``ranker.columns.Column``, so
appended rows go past the older snapshot's end of a shared buffer and only a column with a changed row is
copied (a pointer copy, milliseconds at 1M rows); genre masks change for the genres of changed rows only,
and the popularity order merges the changed rows into the kept order instead of sorting every row again.
A derived ``CatalogueRows`` equals a full build of the same index and catalogue (tests/unit).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ranker.columns import Column
from ranker.fusion import popularity_prior

BoolArray = npt.NDArray[np.bool_]
IdArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]
ObjectArray = npt.NDArray[np.object_]

# Above this share of the rows changed at once, a derivation rebuilds the popularity order with one sort.
RESORT_FRACTION = 1 / 16


class CatalogueItem(Protocol):
    """What the API needs of an item; ``llmrec.catalogue.Item`` satisfies it."""

    @property
    def key(self) -> int: ...

    @property
    def external_id(self) -> str: ...

    @property
    def title(self) -> str: ...

    @property
    def genres(self) -> Sequence[str]: ...

    @property
    def members(self) -> int: ...


def _objects(values: Sequence[Any]) -> ObjectArray:
    # Element by element: numpy would read a list of equal-length tuples as a 2-d array.
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out


@dataclass(frozen=True)
class _Described:
    """Metadata of some rows, in the columns' layout."""

    external_ids: ObjectArray
    titles: ObjectArray
    genres: ObjectArray
    members: npt.NDArray[np.float64]
    servable: BoolArray

    @classmethod
    def of(cls, keys: Iterable[int], items: Mapping[int, CatalogueItem], hidden: Set[int]) -> _Described:
        # Rows the catalogue does not describe (an index from another catalogue version, a retired row)
        # have no id a client could use, and hidden items are not to be shown: neither is ever served.
        described = [None if key in hidden else items.get(key) for key in keys]
        return cls(
            external_ids=_objects([i.external_id if i is not None else "" for i in described]),
            titles=_objects([i.title if i is not None else "" for i in described]),
            genres=_objects([tuple(i.genres) if i is not None else () for i in described]),
            members=np.array([i.members if i is not None else 0 for i in described], dtype=np.float64),
            servable=np.array([i is not None for i in described], dtype=np.bool_),
        )


def _popularity_order(item_ids: IdArray, members: npt.NDArray[np.float64]) -> IdArray:
    # Most members first; ties by item id (then row), so the cold-start answer is deterministic.
    return np.lexsort((item_ids, -members)).astype(np.int64)


def _merged_order(
    order: IdArray, item_ids: IdArray, members: npt.NDArray[np.float64], changed: IdArray
) -> IdArray:
    """``order`` (of the rows not in ``changed``, plus ``changed``'s old places) with ``changed`` rows
    moved to their places under the key (-members, item id, row): what ``_popularity_order`` gives."""
    drop = np.zeros(len(item_ids), dtype=np.bool_)
    drop[changed] = True
    kept = order[~drop[order]]
    moved = changed[np.lexsort((changed, item_ids[changed], -members[changed]))]
    kept_members = -members[kept]
    kept_ids = item_ids[kept]
    places = np.empty(len(moved), dtype=np.int64)
    keys = zip((-members[moved]).tolist(), item_ids[moved].tolist(), moved.tolist(), strict=True)
    for j, (m, i, row) in enumerate(keys):
        lo = int(np.searchsorted(kept_members, m, "left"))
        hi = int(np.searchsorted(kept_members, m, "right"))
        id_lo = lo + int(np.searchsorted(kept_ids[lo:hi], i, "left"))
        id_hi = lo + int(np.searchsorted(kept_ids[lo:hi], i, "right"))
        places[j] = id_lo + int(np.searchsorted(kept[id_lo:id_hi], row))
    return np.insert(kept, places, moved)


@dataclass(frozen=True)
class CatalogueRows:
    """Metadata of every index row. Immutable: ``derive`` returns a new one and leaves this one."""

    external_ids: Column  # str, "" where not servable
    titles: Column  # str
    genres: Column  # tuple[str, ...]
    members: Column  # float64, 0 where not servable
    popularity: Column  # float32, ``popularity_prior`` of members
    servable: Column  # bool
    by_popularity: IdArray
    genre_masks: Mapping[str, Column]  # bool per row; a genre of no servable row keeps its (empty) mask
    genre_counts: Mapping[str, int]  # servable rows per genre
    top: float  # the largest log1p(members), which ``popularity`` is relative to

    def __len__(self) -> int:
        return len(self.servable)

    @property
    def genre_rows(self) -> dict[str, BoolArray]:
        """The mask of each genre that some served row has."""
        return {name: mask.values for name, mask in self.genre_masks.items() if self.genre_counts[name]}

    @classmethod
    def build(cls, item_ids: IdArray, items: Mapping[int, CatalogueItem], hidden: Set[int]) -> CatalogueRows:
        """Every row's metadata from the catalogue (``items`` by key) and its hidden keys."""
        rows = _Described.of(item_ids.tolist(), items, hidden)
        by_genre: dict[str, list[int]] = {}
        for row, names in enumerate(rows.genres.tolist()):
            for name in names:
                by_genre.setdefault(name, []).append(row)
        masks: dict[str, Column] = {}
        for name, members in by_genre.items():
            mask = np.zeros(len(item_ids), dtype=np.bool_)
            mask[members] = True
            masks[name] = Column.of(mask)
        return cls(
            external_ids=Column.of(rows.external_ids),
            titles=Column.of(rows.titles),
            genres=Column.of(rows.genres),
            members=Column.of(rows.members),
            popularity=Column.of(popularity_prior(rows.members)),
            servable=Column.of(rows.servable),
            by_popularity=_popularity_order(item_ids, rows.members),
            genre_masks=masks,
            genre_counts={name: len(members) for name, members in by_genre.items()},
            top=_top(rows.members),
        )

    def derive(
        self, item_ids: IdArray, changed: IdArray, items: Mapping[int, CatalogueItem], hidden: Set[int]
    ) -> CatalogueRows:
        """The metadata of ``item_ids`` (this one's rows, then new rows) where only the rows in ``changed``
        (existing rows whose item, metadata or visibility may differ) and the new rows need reading."""
        old_rows = len(self)
        changed = np.unique(changed[changed < old_rows]).astype(np.int64)
        added = np.arange(old_rows, len(item_ids), dtype=np.int64)
        touched = np.concatenate([changed, added])
        new = _Described.of(item_ids[touched].tolist(), items, hidden)
        split = len(changed)
        old_genres: list[tuple[str, ...]] = self.genres.values[changed].tolist()

        def column(current: Column, values: npt.NDArray[Any]) -> Column:
            return current.derive(values[split:], changed, values[:split])

        members = column(self.members, new.members)
        top = _top(members.values)
        if old_rows and top == self.top:
            popularity = column(self.popularity, _prior(new.members, top))
        else:  # the most popular item changed: every row's prior is relative to it
            popularity = Column.of(popularity_prior(members.values))
        # Genre masks: new rows are appended to every mask; a changed row patches the masks of its old
        # and new genres only.
        masks = dict(self.genre_masks)
        counts = dict(self.genre_counts)
        flips: dict[str, tuple[list[int], list[bool]]] = {}
        # (A row that is not servable has no genres, so the tuples say everything.)
        for row, before, after in zip(changed.tolist(), old_genres, new.genres[:split].tolist(), strict=True):
            for name in set(before) ^ set(after):
                rows, values = flips.setdefault(name, ([], []))
                rows.append(row)
                values.append(name in after)
                counts[name] = counts.get(name, 0) + (1 if name in after else -1)
        appended: dict[str, list[int]] = {}
        for offset, names in enumerate(new.genres[split:].tolist()):
            for name in names:
                appended.setdefault(name, []).append(offset)
                counts[name] = counts.get(name, 0) + 1
        for name in set(masks) | set(flips) | set(appended):
            tail = np.zeros(len(added), dtype=np.bool_)
            tail[appended.get(name, [])] = True
            mask = masks[name] if name in masks else Column.of(np.zeros(old_rows, dtype=np.bool_))
            rows, values = flips.get(name, ([], []))
            masks[name] = mask.derive(tail, np.array(rows, dtype=np.int64), np.array(values, dtype=np.bool_))
        if len(touched) > RESORT_FRACTION * len(item_ids):
            order = _popularity_order(item_ids, members.values)
        else:
            order = _merged_order(self.by_popularity, item_ids, members.values, touched)
        return CatalogueRows(
            external_ids=column(self.external_ids, new.external_ids),
            titles=column(self.titles, new.titles),
            genres=column(self.genres, new.genres),
            members=members,
            popularity=popularity,
            servable=column(self.servable, new.servable),
            by_popularity=order,
            genre_masks=masks,
            genre_counts=counts,
            top=top,
        )


def _top(members: npt.NDArray[np.float64]) -> float:
    """The largest log count, computed as ``popularity_prior`` does (one vectorised pass, ms at 1M)."""
    return float(np.log1p(np.clip(members, 0.0, None)).max()) if len(members) else 0.0


def _prior(members: npt.NDArray[np.float64], top: float) -> FloatArray:
    """``popularity_prior``'s value for ``members`` when the largest log count of all rows is ``top``."""
    if top <= 0.0:
        return np.zeros(len(members), dtype=np.float32)
    return (np.log1p(np.clip(members, 0.0, None)) / top).astype(np.float32)
