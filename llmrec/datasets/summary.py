"""Counts of what a data replay read, produced and dropped, and why."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


class SkipReason:
    """Stable strings for rows that produced no event."""

    MALFORMED_ROW = "malformed_row"  # wrong number of columns or an unparsable number
    EMPTY_TITLE = "empty_title"  # watchlist rows with no title (the scraper's blank rows)
    UNKNOWN_TITLE = "unknown_title"  # title not in animes.csv nor the catalogue, so no anime_id
    NOT_IN_CATALOGUE = "item_not_in_catalogue"
    EMPTY_TEXT = "empty_text"
    UNKNOWN_STATUS = "unknown_status"
    UNKNOWN_TIME = "unknown_time"  # azathoth rows last updated at epoch 0, MAL's "never recorded"
    INVALID_EVENT = "invalid_event"  # rejected by the event schema
    DUPLICATE = "duplicate"  # same event id as an earlier row (the same row scraped twice)


@dataclass
class ReplaySummary:
    rows: Counter[str] = field(default_factory=Counter)  # rows read, by source
    events: Counter[tuple[str, str]] = field(default_factory=Counter)  # (source, event_type)
    skipped: Counter[tuple[str, str]] = field(default_factory=Counter)  # (source, reason): rows dropped
    notes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (source, what): rows kept but altered

    def skip(self, source: str, reason: str) -> None:
        self.skipped[(source, reason)] += 1

    def note(self, source: str, what: str) -> None:
        self.notes[(source, what)] += 1

    @property
    def total_events(self) -> int:
        return sum(self.events.values())

    def events_by_type(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (_, event_type), count in self.events.items():
            out[event_type] += count
        return dict(sorted(out.items()))

    def skipped_by_reason(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (_, reason), count in self.skipped.items():
            out[reason] += count
        return dict(sorted(out.items()))

    def merge(self, other: ReplaySummary) -> None:
        self.rows.update(other.rows)
        self.events.update(other.events)
        self.skipped.update(other.skipped)
        self.notes.update(other.notes)

    def as_dict(self) -> dict[str, Any]:
        def nested(counter: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for (source, key), count in sorted(counter.items()):
                out.setdefault(source, {})[key] = count
            return out

        return {
            "rows": dict(sorted(self.rows.items())),
            "events": nested(self.events),
            "skipped": nested(self.skipped),
            "notes": nested(self.notes),
        }
