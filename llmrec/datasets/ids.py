"""Deterministic identities for events built from the static data sets.

Replaying a data set twice must give the same ``event_id`` for the same row (the worker applies an id at most
once), and the shipped sample must give the same ids and times as the full data for the rows it keeps. So ids
and synthetic times are hashes of what identifies the row (user, item, and for reviews the text), never of its
position in a file.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

USER_PREFIX = "mal"
_NOT_IN_IDENTIFIER = re.compile(r"[^A-Za-z0-9._:@\-]")
_MAX_IDENTIFIER = 128


def _digest(*parts: object) -> bytes:
    # \x1f (unit separator) cannot occur in the fields, so ("ab", "c") and ("a", "bc") hash differently.
    return hashlib.sha256("\x1f".join(str(part) for part in parts).encode("utf-8")).digest()


def stable_event_id(source_code: str, kind: str, *identity: object) -> str:
    """``<source>-<kind>-<24 hex>``: 96 bits, collision-free in practice for millions of rows."""
    return f"{source_code}-{kind}-{_digest(source_code, kind, *identity).hex()[:24]}"


def text_fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def synthetic_time(start: datetime, end: datetime, *identity: object) -> datetime:
    """A time in [start, end), whole seconds, chosen by hashing the row identity.

    Used for sources without dates. Hashing rather than spreading in file order keeps a row's time the same
    in the full data and in any subset of it, and does not turn a file's alphabetical order into a fake
    viewing order.
    """
    span = int((end - start).total_seconds())
    if span <= 0:
        raise ValueError("empty time window")
    offset = int.from_bytes(_digest("time", *identity)[:8], "big") % span
    return (start + timedelta(seconds=offset)).astimezone(UTC)


def mal_user_id(username: str) -> str:
    """``mal:<username>``. MAL names may start with ``_`` or ``-``, which the Identifier pattern forbids as a
    first character; the prefix fixes that. Any character outside the pattern becomes ``_``."""
    cleaned = _NOT_IN_IDENTIFIER.sub("_", username.strip())
    return f"{USER_PREFIX}:{cleaned}"[:_MAX_IDENTIFIER]


def utc(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)
