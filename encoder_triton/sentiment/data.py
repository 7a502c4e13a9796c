"""Labelled reviews for the sentiment head and a deterministic split by anime title.

Rows come straight from Matthew1906's ``reviews_*.csv`` (full data dir when it holds them, else the shipped
sample), deduplicated on (title, user, text) like the PROVENANCE counts (4,986 in the full data). No catalogue
join: a review whose title is not in the catalogue is still a labelled review.

Split by anime title, not by review: reviews of the same show share names, characters and vocabulary, and
most shows are reviewed mostly favourably or mostly not. A per-review split would let a head score a test
review from the show's name it saw in training (leakage that does not exist for a new show). Each title goes
to train / val / test by a seeded SHA-256 of its normalised title, so the split is fixed across runs and
machines and independent of file order; proportions are by title (70/15/15), review counts follow roughly.
"""

from __future__ import annotations

import csv
import hashlib
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from llmrec.data_source import MATTHEW1906, SAMPLE_DIR, glob_data_files, has_mal_data, open_data_file

TAGS = ("not_recommended", "mixed", "recommended")  # class ids 0, 1, 2
_TAG_IDS = {"not recommended": 0, "mixed feelings": 1, "recommended": 2}

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)


@dataclass(frozen=True)
class Review:
    title: str
    user: str
    text: str
    score: int  # 1..10
    tag: int  # index into TAGS

    @property
    def target(self) -> float:
        """The review score mapped to [0, 1]: 1 -> 0.0, 10 -> 1.0."""
        return (self.score - 1) / 9.0

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.title}\x1f{self.user}\x1f{self.text}".encode()).hexdigest()


def resolve_reviews_dir(data_dir: Path | None) -> Path:
    """``data_dir`` when it holds the MAL data, else the shipped sample."""
    if data_dir is not None and has_mal_data(data_dir):
        return data_dir
    return SAMPLE_DIR


def _parse_row(row: Sequence[str]) -> Review | None:
    if len(row) != 7:
        return None
    _, title, user, _, score, text, tag = row
    score, text, tag_id = score.strip(), " ".join(text.split()), _TAG_IDS.get(tag.strip().casefold())
    if not (title.strip() and user.strip() and text and score.isdigit() and tag_id is not None):
        return None
    if not 1 <= int(score) <= 10:
        return None
    return Review(title=title.strip(), user=user.strip(), text=text, score=int(score), tag=tag_id)


def dedupe(reviews: Iterable[Review]) -> list[Review]:
    seen: set[tuple[str, str, str]] = set()
    out = []
    for review in reviews:
        identity = (review.title, review.user, review.text)
        if identity not in seen:
            seen.add(identity)
            out.append(review)
    return out


def load_reviews(data_dir: Path | None) -> list[Review]:
    """Every usable labelled review (score 1..10, known tag, non-empty text), in file order, deduplicated."""
    csv.field_size_limit(sys.maxsize)  # a few reviews run to 53k characters
    folder = resolve_reviews_dir(data_dir) / MATTHEW1906
    rows: list[Review] = []
    for path in glob_data_files(folder, "reviews_*.csv"):
        with open_data_file(path) as handle:
            for row in csv.reader(handle, delimiter=";"):
                parsed = _parse_row(row)
                if parsed is not None:
                    rows.append(parsed)
    return dedupe(rows)


def split_of(title: str, seed: int = 42, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> str:
    """``train`` / ``val`` / ``test`` for a title: a seeded hash of its case- and space-folded form."""
    folded = " ".join(title.casefold().split())
    digest = hashlib.sha256(f"{seed}\x1f{folded}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for name, fraction in zip(SPLITS, fractions, strict=True):
        edge += fraction
        if u < edge:
            return name
    return SPLITS[-1]


def split_reviews(
    reviews: Sequence[Review], seed: int = 42, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> dict[str, list[int]]:
    """Indices of ``reviews`` per split; every review of one title lands in the same split."""
    out: dict[str, list[int]] = {name: [] for name in SPLITS}
    for index, review in enumerate(reviews):
        out[split_of(review.title, seed, fractions)].append(index)
    return out
