"""Merge every MAL source into one time-ordered stream of typed events.

Sources: Matthew1906 reviews and Completed lists (synthetic times, see ``matthew1906``) and the azathoth
list rows (real times). Only items in the catalogue are kept. MovieLens is not MAL (no anime ids), so it is
not replayed here; it belongs to offline evaluation.

All events are built and sorted in memory before the first is yielded (about 0.5M events, a few hundred MB on
the full data; seconds on the sample): the sources are not individually time-ordered, so there is no cheaper
exact merge.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llmrec.catalogue import Catalogue, build_catalogue
from llmrec.datasets.azathoth import AZATHOTH_LISTS, read_azathoth
from llmrec.datasets.matthew1906 import REVIEWS, WATCHLISTS, TitleIndex, read_reviews, read_watchlists
from llmrec.datasets.summary import ReplaySummary, SkipReason
from llmrec.events.schema import EventType
from llmrec.events.validation import AnyEvent

ALL_SOURCES: tuple[str, ...] = (REVIEWS, WATCHLISTS, AZATHOTH_LISTS)
# Events at the same instant: progress before the score, the score before the written review.
_TYPE_RANK = {EventType.WATCH: 0, EventType.RATING: 1, EventType.REVIEW: 2}


def event_order(event: AnyEvent) -> tuple[object, ...]:
    """Total, deterministic replay order: time, then user, item, type and id to break ties."""
    return (event.event_time, event.user_id, event.item_id, _TYPE_RANK[event.event_type], event.event_id)


@dataclass
class Replay:
    events: list[AnyEvent]
    summary: ReplaySummary
    catalogue: Catalogue = field(repr=False)

    def __iter__(self) -> Iterator[AnyEvent]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)


def _readers(
    data_dir: Path, catalogue: Catalogue, summary: ReplaySummary
) -> dict[str, Callable[[], Iterable[AnyEvent]]]:
    titles: TitleIndex | None = None

    def title_index() -> TitleIndex:
        nonlocal titles
        if titles is None:
            titles = TitleIndex.from_data(data_dir, catalogue)
        return titles

    return {
        REVIEWS: lambda: read_reviews(data_dir, catalogue, title_index(), summary),
        WATCHLISTS: lambda: read_watchlists(data_dir, catalogue, title_index(), summary),
        AZATHOTH_LISTS: lambda: read_azathoth(data_dir, catalogue, summary),
    }


def collect_events(
    data_dir: Path, *, catalogue: Catalogue | None = None, sources: Sequence[str] = ALL_SOURCES
) -> Replay:
    """Read, deduplicate by event id and time-order every event of ``sources`` under ``data_dir``."""
    unknown = set(sources) - set(ALL_SOURCES)
    if unknown:
        raise ValueError(f"unknown sources {sorted(unknown)}; choose from {list(ALL_SOURCES)}")
    catalogue = catalogue if catalogue is not None else build_catalogue(data_dir)
    summary = ReplaySummary()
    readers = _readers(data_dir, catalogue, summary)
    seen: set[str] = set()
    events: list[AnyEvent] = []
    for source in ALL_SOURCES:  # fixed order, so "first occurrence wins" is the same whatever was asked
        if source not in sources:
            continue
        for event in readers[source]():
            if event.event_id in seen:
                # The same row scraped twice (same user, item and text): one event, not two.
                summary.skip(source, SkipReason.DUPLICATE)
                continue
            seen.add(event.event_id)
            summary.events[(source, event.event_type.value)] += 1
            events.append(event)
    events.sort(key=event_order)
    return Replay(events, summary, catalogue)


def replay_events(
    data_dir: Path,
    *,
    catalogue: Catalogue | None = None,
    sources: Sequence[str] = ALL_SOURCES,
    summary: ReplaySummary | None = None,
    limit: int | None = None,
) -> Iterator[AnyEvent]:
    """Time-ordered events. ``summary`` (if given) is filled with the counts before the first event is
    yielded.

    ``limit`` keeps the first ``limit`` events in time order (the summary still counts the whole data).
    """
    replay = collect_events(data_dir, catalogue=catalogue, sources=sources)
    if summary is not None:
        summary.merge(replay.summary)
    events = replay.events if limit is None else replay.events[: max(0, limit)]
    yield from events
