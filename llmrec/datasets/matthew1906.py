"""Matthew1906's 2023 MAL scrape: reviews and Completed-list scores -> typed events.

Both files are ``;``-separated with no header and name anime by title; ``animes.csv`` maps a title to the MAL
link, whose number is the anime_id. Neither has dates (see ``REVIEW_WINDOW`` and ``WATCHLIST_WINDOW``).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from llmrec.catalogue import SOURCE_MATTHEW1906, Catalogue, anime_id_from_link, normalise_title
from llmrec.data_source import MATTHEW1906, find_data_file, glob_data_files, open_data_file
from llmrec.datasets.ids import mal_user_id, stable_event_id, synthetic_time, text_fingerprint, utc
from llmrec.datasets.summary import ReplaySummary, SkipReason
from llmrec.events.schema import MAX_TEXT_CHARS, RatingEvent, ReviewEvent, ReviewTag, WatchEvent, WatchStatus
from llmrec.item_ids import mal_item_id

REVIEWS = "matthew1906-reviews"
WATCHLISTS = "matthew1906-watchlists"
_CODE = "mal1906"

# Synthetic event times. The rows carry no date, only the day they were scraped (file names and commits:
# reviews from 2023-04-16, completed lists from 2023-07-03). Each row gets a time hashed from its identity
# (``ids.synthetic_time``) within the year before the first scrape day: plausible ("written before it was
# scraped"), fixed across replays, and the same in the full data and in the sample.
REVIEW_WINDOW = (utc(2022, 4, 16), utc(2023, 4, 16))
WATCHLIST_WINDOW = (utc(2022, 7, 3), utc(2023, 7, 3))

_TAGS = {
    "recommended": ReviewTag.RECOMMENDED,
    "mixed feelings": ReviewTag.MIXED,
    "not recommended": ReviewTag.NOT_RECOMMENDED,
}


class TitleIndex:
    """Title -> anime_id for this scrape: ``animes.csv`` verbatim first, then a normalised match (case,
    Unicode form, spacing) against ``animes.csv`` and the catalogue's titles from the same scrape."""

    def __init__(self, exact: dict[str, int], normalised: dict[str, int]) -> None:
        self._exact = exact
        self._normalised = normalised

    @classmethod
    def from_data(cls, data_dir: Path, catalogue: Catalogue) -> TitleIndex:
        exact: dict[str, int] = {}
        path = find_data_file(data_dir / MATTHEW1906, "animes.csv")
        if path is not None:
            with open_data_file(path) as handle:
                for row in csv.DictReader(handle, delimiter=";"):
                    item_id = anime_id_from_link(row.get("link") or "")
                    title = row.get("title") or ""
                    if item_id is not None and title:
                        exact.setdefault(title, item_id)
        normalised: dict[str, int] = {}
        for title, item_id in exact.items():
            normalised.setdefault(normalise_title(title), item_id)
        for item in catalogue:
            if item.source == SOURCE_MATTHEW1906:
                normalised.setdefault(normalise_title(item.title), item.item_id)
        return cls(exact, normalised)

    def resolve(self, title: str) -> int | None:
        found = self._exact.get(title)
        return found if found is not None else self._normalised.get(normalise_title(title))

    def __len__(self) -> int:
        return len(self._exact)


def parse_score(value: str) -> float | None:
    """MAL scores 1..10; "-" (not scored), blanks and anything else give None."""
    value = value.strip()
    if value.isdigit() and 1 <= int(value) <= 10:
        return float(value)
    return None


def fit_review_text(text: str) -> str:
    """Reviews over the schema's limit (a handful, up to 53k characters) are cut at the last space before it:
    the opening of a review carries its verdict, and dropping them would lose real reviews."""
    if len(text) <= MAX_TEXT_CHARS:
        return text
    cut = text[:MAX_TEXT_CHARS]
    space = cut.rfind(" ")
    return (cut[:space] if space > MAX_TEXT_CHARS // 2 else cut).rstrip()


def _rows(path: Path) -> Iterator[list[str]]:
    with open_data_file(path) as handle:
        yield from csv.reader(handle, delimiter=";")


def _resolve_item(
    title: str, source: str, titles: TitleIndex, catalogue: Catalogue, summary: ReplaySummary
) -> int | None:
    if not title.strip():
        summary.skip(source, SkipReason.EMPTY_TITLE)
        return None
    item_id = titles.resolve(title)
    if item_id is None:
        summary.skip(source, SkipReason.UNKNOWN_TITLE)
        return None
    if item_id not in catalogue:
        summary.skip(source, SkipReason.NOT_IN_CATALOGUE)
        return None
    return item_id


def review_event(
    username: str, item_id: int, score: str, text: str, tag: str, summary: ReplaySummary
) -> ReviewEvent | None:
    text = text.strip()
    if not text:
        summary.skip(REVIEWS, SkipReason.EMPTY_TEXT)
        return None
    fitted = fit_review_text(text)
    if fitted != text:
        summary.note(REVIEWS, "text_truncated")
    user_id = mal_user_id(username)
    # The text is part of the identity: a user's edited review of the same anime is a new event.
    identity = (user_id, item_id, text_fingerprint(text))
    try:
        return ReviewEvent(
            event_id=stable_event_id(_CODE, "review", *identity),
            user_id=user_id,
            item_id=mal_item_id(item_id),
            event_time=synthetic_time(*REVIEW_WINDOW, _CODE, "review", *identity),
            source=REVIEWS,
            text=fitted,
            rating=parse_score(score),
            tag=_TAGS.get(tag.strip().casefold()),
        )
    except ValidationError:
        summary.skip(REVIEWS, SkipReason.INVALID_EVENT)
        return None


def read_reviews(
    data_dir: Path, catalogue: Catalogue, titles: TitleIndex, summary: ReplaySummary
) -> Iterator[ReviewEvent]:
    """``reviews_*.csv``: ``idx;anime_title;username;profile_link;score;text;tag`` -> ReviewEvent."""
    for path in glob_data_files(data_dir / MATTHEW1906, "reviews_*.csv"):
        for row in _rows(path):
            summary.rows[REVIEWS] += 1
            if len(row) != 7:
                summary.skip(REVIEWS, SkipReason.MALFORMED_ROW)
                continue
            _, title, username, _, score, text, tag = row
            if not username.strip():
                summary.skip(REVIEWS, SkipReason.MALFORMED_ROW)
                continue
            item_id = _resolve_item(title, REVIEWS, titles, catalogue, summary)
            if item_id is None:
                continue
            event = review_event(username, item_id, score, text, tag, summary)
            if event is not None:
                yield event


def watchlist_events(
    username: str, item_id: int, score: str, catalogue: Catalogue, summary: ReplaySummary
) -> list[WatchEvent | RatingEvent]:
    """A Completed-list row: a completed WatchEvent, plus a RatingEvent at the same time when scored."""
    user_id = mal_user_id(username)
    when: datetime = synthetic_time(*WATCHLIST_WINDOW, _CODE, "completed", user_id, item_id)
    episodes = catalogue[item_id].episodes
    events: list[WatchEvent | RatingEvent] = []
    try:
        # A completed title was watched to the end, so episodes watched = its episode count. When MAL does
        # not know the count (still airing, unannounced) it is 0 with no total: status carries the signal.
        events.append(
            WatchEvent(
                event_id=stable_event_id(_CODE, "watch", user_id, item_id),
                user_id=user_id,
                item_id=mal_item_id(item_id),
                event_time=when,
                source=WATCHLISTS,
                status=WatchStatus.COMPLETED,
                episodes_watched=episodes or 0,
                total_episodes=episodes,
            )
        )
        rating = parse_score(score)
        if rating is not None:
            events.append(
                RatingEvent(
                    event_id=stable_event_id(_CODE, "rating", user_id, item_id),
                    user_id=user_id,
                    item_id=mal_item_id(item_id),
                    event_time=when,
                    source=WATCHLISTS,
                    rating=rating,
                )
            )
        else:
            summary.note(WATCHLISTS, "unscored")
    except ValidationError:
        summary.skip(WATCHLISTS, SkipReason.INVALID_EVENT)
        return []
    return events


def read_watchlists(
    data_dir: Path, catalogue: Catalogue, titles: TitleIndex, summary: ReplaySummary
) -> Iterator[WatchEvent | RatingEvent]:
    """``watchlists/watchlist_*.csv``: ``idx;username;anime_title;score``.

    Completed lists; "-" = not scored."""
    for path in glob_data_files(data_dir / MATTHEW1906 / "watchlists", "watchlist_*.csv"):
        for row in _rows(path):
            summary.rows[WATCHLISTS] += 1
            if len(row) != 4:
                summary.skip(WATCHLISTS, SkipReason.MALFORMED_ROW)
                continue
            _, username, title, score = row
            if not username.strip():
                summary.skip(WATCHLISTS, SkipReason.MALFORMED_ROW)
                continue
            item_id = _resolve_item(title, WATCHLISTS, titles, catalogue, summary)
            if item_id is None:
                continue
            yield from watchlist_events(username, item_id, score, catalogue, summary)
