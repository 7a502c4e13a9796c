"""The shipped MovieLens sample: a second domain for ``llmrec demo`` on a fresh clone.

``python -m llmrec.sample_data.movielens [--data-dir DIR]`` writes ``movielens-latest-small/`` here from
``DIR/movielens-latest-small`` (GroupLens ml-latest-small): every rating of ``USERS`` users (the
lowest user ids whose rating count lies in ``RATINGS_PER_USER``), the movies they rated, and the
data set's licence; gzip-compressed like the rest of the sample (``ratings.csv.gz``, ``movies.csv.gz``).
Deterministic: same input, same bytes. The licence allows redistribution of transformations under the
same conditions, which the copied README states.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
from collections import Counter
from pathlib import Path

from llmrec.data_source import SAMPLE_DIR, find_data_file, open_data_file

FOLDER = "movielens-latest-small"
USERS = 25
RATINGS_PER_USER = (20, 120)
LICENCE_FILE = "README.txt"  # in the data set
SAMPLE_README = "README.md"


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open_data_file(path) as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, list(reader)


def _csv(header: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _write_gz(path: Path, text: str) -> None:
    # mtime 0 and no file name in the header: the same rows give the same bytes.
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed:
        packed.write(text.encode("utf-8"))


def build(data_dir: Path, out_dir: Path = SAMPLE_DIR / FOLDER) -> tuple[int, int, int]:
    """Write the sample; returns (users, movies, ratings)."""
    source = data_dir / FOLDER
    ratings_path, movies_path = find_data_file(source, "ratings.csv"), find_data_file(source, "movies.csv")
    if ratings_path is None or movies_path is None:
        raise FileNotFoundError(f"no MovieLens ratings.csv and movies.csv under {source}")
    rating_header, ratings = _rows(ratings_path)
    movie_header, movies = _rows(movies_path)
    counts = Counter(row[0] for row in ratings)
    low, high = RATINGS_PER_USER
    users = sorted((u for u, n in counts.items() if low <= n <= high), key=int)[:USERS]
    kept = set(users)
    sampled = [row for row in ratings if row[0] in kept]
    rated = {row[1] for row in sampled}
    sampled_movies = [row for row in movies if row[0] in rated]
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_gz(out_dir / "ratings.csv.gz", _csv(rating_header, sampled))
    _write_gz(out_dir / "movies.csv.gz", _csv(movie_header, sampled_movies))
    licence = (source / LICENCE_FILE).read_text(encoding="utf-8")
    (out_dir / SAMPLE_README).write_text(
        f"llmrec sample: every rating of {len(users)} users of ml-latest-small (user ids "
        f"{users[0]}..{users[-1]} with {low} to {high} ratings each) and the {len(sampled_movies)} movies "
        "they rated, unmodified rows. Built by `python -m llmrec.sample_data.movielens`. Redistributed "
        "under the licence below.\n\n" + licence,
        encoding="utf-8",
    )
    return len(users), len(sampled_movies), len(sampled)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=SAMPLE_DIR.parents[1].parent / "shared" / "data")
    args = parser.parse_args(argv)
    users, movies, ratings = build(args.data_dir)
    print(f"wrote {SAMPLE_DIR / FOLDER}: {users} users, {movies} movies, {ratings} ratings")


if __name__ == "__main__":
    main()
