"""Append-only per-row columns shared by a line of immutable versions (index and catalogue snapshots).

A ``Column`` is rows ``[0, n)`` of a buffer that has spare capacity past ``n``. Deriving a column with more
rows writes them past ``n`` in the same buffer when no other version has written there yet (the newest
version, "the tip"): readers of the older version never look past their own ``n``, so they see no change,
and a poll that only adds rows costs its new rows, not a copy of every row. Anything else (changing an
existing row, deriving twice from the same version, a full buffer) copies the rows into a new buffer.

Rows below a version's ``n`` are never written in place, so two columns of one ``lineage`` agree on the rows
both have: the item index relies on it to move a FAISS base built from one version to a later one.

Example:
    >>> import numpy as np
    >>> old = Column.of(np.array([1, 2, 3]))
    >>> new = old.derive(np.array([4]))
    >>> old.values.tolist(), new.values.tolist()
    ([1, 2, 3], [1, 2, 3, 4])
    >>> new.derive(patch_rows=np.array([0]), patch_values=np.array([9])).values.tolist()
    [9, 2, 3, 4]
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt

# Spare rows of a new buffer: a quarter of its rows, at least this many. Untouched spare rows of a numeric
# buffer cost no memory (the pages are never written); object buffers hold None there.
MIN_SPARE_ROWS = 4096
SPARE_FRACTION = 0.25


class _Buffer:
    """Storage of one lineage: ``used`` rows written so far (-1: sealed, a larger buffer took over)."""

    __slots__ = ("data", "lineage", "lock", "used")

    def __init__(self, data: npt.NDArray[Any], used: int, lineage: object) -> None:
        self.data = data
        self.used = used
        self.lineage = lineage
        self.lock = threading.Lock()


def _capacity(rows: int) -> int:
    return rows + max(MIN_SPARE_ROWS, int(rows * SPARE_FRACTION))


class Column:
    """Rows ``[0, n)`` of an append-only buffer; ``values`` is a read-only view of them."""

    __slots__ = ("_buffer", "values")

    def __init__(self, buffer: _Buffer, rows: int) -> None:
        self._buffer = buffer
        view = buffer.data[:rows]
        view.setflags(write=False)
        self.values: npt.NDArray[Any] = view

    @classmethod
    def of(cls, values: npt.NDArray[Any], *, spare: bool = False) -> Column:
        """A column of ``values``: adopted as they are (no copy, no spare room: the first append copies) or,
        with ``spare``, copied into a buffer with room to grow."""
        if not spare:
            values.setflags(write=False)  # the caller's array is now shared: nobody writes it again
            return cls(_Buffer(values, len(values), object()), len(values))
        data = np.empty((_capacity(len(values)), *values.shape[1:]), dtype=values.dtype)
        data[: len(values)] = values
        return cls(_Buffer(data, len(values), object()), len(values))

    def __len__(self) -> int:
        return len(self.values)

    @property
    def lineage(self) -> object:
        """Equal for two columns only if they agree on every row both have."""
        return self._buffer.lineage

    def derive(
        self,
        appended: npt.NDArray[Any] | None = None,
        patch_rows: npt.NDArray[np.int64] | None = None,
        patch_values: npt.ArrayLike | None = None,
    ) -> Column:
        """A new column: this one's rows with ``patch_rows`` set to ``patch_values``, then ``appended``.
        This column is left as it is."""
        rows = len(self.values)
        added = 0 if appended is None else len(appended)
        patched = patch_rows is not None and len(patch_rows) > 0
        old = self._buffer
        if not patched:
            if added == 0:
                return self
            with old.lock:
                if old.used == rows and rows + added <= len(old.data):
                    # The tip, with room: write past every reader's end.
                    old.data[rows : rows + added] = appended
                    old.used = rows + added
                    return Column(old, rows + added)
                tip = old.used == rows
                if tip:
                    old.used = -1  # sealed: the lineage goes on in the larger buffer below
        else:
            tip = False
        data = np.empty((_capacity(rows + added), *old.data.shape[1:]), dtype=old.data.dtype)
        data[:rows] = self.values
        if patched:
            data[patch_rows] = patch_values
        if added:
            data[rows : rows + added] = appended
        # A larger buffer for the tip keeps its lineage (same rows); a branch or a patch starts a new one.
        return Column(_Buffer(data, rows + added, old.lineage if tip else object()), rows + added)
