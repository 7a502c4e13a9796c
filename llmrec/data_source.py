"""Where the real data comes from: the full data folder, or the small sample shipped in the package.

Both have the same layout (one folder per public data set, original file names) so every reader works on
either. The sample may hold any file gzip-compressed: ``open_data_file`` finds ``name`` or ``name.gz``.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO

from llmrec.settings import Settings

SAMPLE_DIR = Path(__file__).resolve().parent / "sample_data"

# Folder names as in ../shared/data (and mirrored by the sample).
MATTHEW1906 = "mal-reviews-matthew1906"
AZATHOTH = "mal-azathoth-2018-sample"
HERNAN = "mal-2020-hernan4444"
COOPERUNION = "mal-cooperunion-anime-recommendations"

# The one file whose presence says "this folder holds the MAL data": the title -> anime_id map.
_MARKER = Path(MATTHEW1906) / "animes.csv"


class DataKind(StrEnum):
    FULL = "full"
    SAMPLE = "sample"


@dataclass(frozen=True)
class DataSource:
    kind: DataKind
    path: Path

    def describe(self) -> str:
        what = "full data" if self.kind is DataKind.FULL else "shipped sample"
        return f"{what} at {self.path}"


def find_data_file(base: Path, relative: str | Path) -> Path | None:
    """``base/relative`` or its gzip-compressed twin ``base/relative.gz``, whichever exists."""
    plain = base / relative
    if plain.is_file():
        return plain
    packed = plain.with_name(plain.name + ".gz")
    return packed if packed.is_file() else None


def glob_data_files(folder: Path, pattern: str) -> list[Path]:
    """Files matching ``pattern`` (a ``*.csv`` glob), plain or gzipped, sorted by name for a stable order."""
    found = {p for p in folder.glob(pattern) if p.is_file()}
    found |= {p for p in folder.glob(pattern + ".gz") if p.is_file()}
    return sorted(found, key=lambda p: p.name)


def open_data_file(path: Path) -> IO[str]:
    """Open a data file as UTF-8 text with universal newlines left to the csv module (newline="")."""
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def has_mal_data(path: Path) -> bool:
    return find_data_file(path, _MARKER) is not None


def sample_source() -> DataSource:
    return DataSource(DataKind.SAMPLE, SAMPLE_DIR)


def resolve_data_source(settings: Settings) -> DataSource:
    """The full data when ``settings.data_dir`` holds it, otherwise the shipped sample."""
    if has_mal_data(settings.data_dir):
        return DataSource(DataKind.FULL, settings.data_dir)
    return sample_source()


def data_source_at(path: Path) -> DataSource:
    """A data source for an explicit folder (the sample's own folder counts as the sample)."""
    kind = DataKind.SAMPLE if path.resolve() == SAMPLE_DIR else DataKind.FULL
    if not has_mal_data(path):
        raise FileNotFoundError(f"{path} does not hold the MAL data ({_MARKER} missing)")
    return DataSource(kind, path)
