"""Azathoth's 2018 MAL crawl (head sample of ``animelists_cleaned.csv``): list rows with real timestamps.

Columns used: ``username, anime_id, my_watched_episodes, my_score, my_status, my_last_updated``.
``my_last_updated`` is read as UTC (the crawl does not say; MAL stores server time). Rows whose
``my_last_updated`` is 1970-01-01 (epoch 0) are skipped as ``unknown_time``: MAL writes 0 when it never
recorded an update, and inventing a time would put the event at a decay weight (or an order) it never had.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from llmrec.catalogue import Catalogue
from llmrec.data_source import AZATHOTH, find_data_file, open_data_file
from llmrec.datasets.ids import mal_user_id, stable_event_id
from llmrec.datasets.matthew1906 import parse_score
from llmrec.datasets.summary import ReplaySummary, SkipReason
from llmrec.events.schema import MIN_EVENT_TIME, RatingEvent, WatchEvent, WatchStatus
from llmrec.item_ids import mal_item_id

AZATHOTH_LISTS = "azathoth-2018"
_CODE = "malaz"
# ``_small`` is a byte prefix of ``_not_small`` (PROVENANCE.md), so only one is read.
_FILES = ("animelists_cleaned_not_small.csv", "animelists_cleaned_small.csv")

STATUS_CODES: dict[str, WatchStatus] = {
    "1": WatchStatus.WATCHING,
    "2": WatchStatus.COMPLETED,
    "3": WatchStatus.ON_HOLD,
    "4": WatchStatus.DROPPED,
    "6": WatchStatus.PLAN_TO_WATCH,
}


def azathoth_file(data_dir: Path) -> Path | None:
    for name in _FILES:
        found = find_data_file(data_dir / AZATHOTH, name)
        if found is not None:
            return found
    return None


def parse_last_updated(value: str) -> datetime | None:
    """ "YYYY-MM-DD HH:MM:SS" as UTC; None when unparsable or before the schema's minimum (epoch 0 means
    unknown)."""
    try:
        when = datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return when if when >= MIN_EVENT_TIME else None


def list_row_events(
    row: dict[str, str], catalogue: Catalogue, summary: ReplaySummary
) -> list[WatchEvent | RatingEvent]:
    """One list row -> a WatchEvent with its status, plus a RatingEvent at the same time when scored."""
    username = (row.get("username") or "").strip()
    raw_id = (row.get("anime_id") or "").strip()
    raw_episodes = (row.get("my_watched_episodes") or "").strip()
    if not username or not raw_id.isdigit() or not raw_episodes.isdigit():
        summary.skip(AZATHOTH_LISTS, SkipReason.MALFORMED_ROW)
        return []
    status = STATUS_CODES.get((row.get("my_status") or "").strip())
    if status is None:
        summary.skip(AZATHOTH_LISTS, SkipReason.UNKNOWN_STATUS)
        return []
    when = parse_last_updated(row.get("my_last_updated") or "")
    if when is None:
        summary.skip(AZATHOTH_LISTS, SkipReason.UNKNOWN_TIME)
        return []
    item_id = int(raw_id)
    item = catalogue.get(item_id)
    if item is None:
        summary.skip(AZATHOTH_LISTS, SkipReason.NOT_IN_CATALOGUE)
        return []
    user_id = mal_user_id(username)
    # The update time is part of the identity: a later crawl of the same list entry is a new event.
    identity = (user_id, item_id, when.isoformat())
    events: list[WatchEvent | RatingEvent] = []
    try:
        events.append(
            WatchEvent(
                event_id=stable_event_id(_CODE, "watch", *identity),
                user_id=user_id,
                item_id=mal_item_id(item_id),
                event_time=when,
                source=AZATHOTH_LISTS,
                status=status,
                episodes_watched=int(raw_episodes),
                total_episodes=item.episodes,
            )
        )
        rating = parse_score(row.get("my_score") or "")  # 0 = not scored
        if rating is not None:
            events.append(
                RatingEvent(
                    event_id=stable_event_id(_CODE, "rating", *identity),
                    user_id=user_id,
                    item_id=mal_item_id(item_id),
                    event_time=when,
                    source=AZATHOTH_LISTS,
                    rating=rating,
                )
            )
    except ValidationError:
        summary.skip(AZATHOTH_LISTS, SkipReason.INVALID_EVENT)
        return []
    return events


def read_azathoth(
    data_dir: Path, catalogue: Catalogue, summary: ReplaySummary
) -> Iterator[WatchEvent | RatingEvent]:
    path = azathoth_file(data_dir)
    if path is None:
        return
    with open_data_file(path) as handle:
        for row in csv.DictReader(handle):
            summary.rows[AZATHOTH_LISTS] += 1
            yield from list_row_events(row, catalogue, summary)
