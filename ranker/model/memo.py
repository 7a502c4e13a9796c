"""A small in-process memo for the parts of a fit that the fusion layer's settings do not change (the
EASE matrix, the stacking features), so TPE trials over those settings reuse them instead of inverting
a catalogue-sized matrix each time. Keys are content hashes, so a different matrix never hits."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
MAX_ENTRIES = 6  # two fits (base and full) for three configurations: under 1 GB on the largest set
_entries: OrderedDict[Hashable, Any] = OrderedDict()


def fingerprint(*arrays: np.ndarray) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    for a in arrays:
        digest.update(str((a.shape, a.dtype.str)).encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def memo(key: Hashable, compute: Callable[[], T]) -> T:
    if key in _entries:
        _entries.move_to_end(key)
        value: T = _entries[key]
        return value
    result = compute()
    _entries[key] = result
    while len(_entries) > MAX_ENTRIES:
        _entries.popitem(last=False)
    return result


def clear() -> None:
    _entries.clear()
