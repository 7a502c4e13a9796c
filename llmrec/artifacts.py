"""The on-disk layout of everything the jobs build and the processes load, defined once.

An item index folder (``settings.index_dir``, built by ``llmrec build-index``)::

    index.faiss          the FAISS index (row i is item_ids[i]); written and read by ``ranker.retrieval``
    item_ids.npy         int64 [n]         item keys (``llmrec.item_ids``), row order
    embeddings.npy       float32 [n, dim]  L2-normalised item embeddings, row order (the worker reads these)
    meta.json            format, version, dim, count, kind, encoder model name, created time, parameters
    catalogue.jsonl.gz   the items' titles, genres and text, row for row with the index

A ranker folder (``settings.ranker_dir``, built by ``llmrec train-ranker``) holds one sub-folder per
version and a ``CURRENT`` file naming the one to serve; see ``ranker.model.serving``.

``publish_dir`` makes a folder appear atomically: readers see the old complete version or the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

IdArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]

# Item index folder.
INDEX_FILE = "index.faiss"
IDS_FILE = "item_ids.npy"
EMBEDDINGS_FILE = "embeddings.npy"
META_FILE = "meta.json"
CATALOGUE_FILE = "catalogue.jsonl.gz"
# meta.json's "format": 2 since the ids are item keys; format 1 held MAL anime ids and must be rebuilt.
INDEX_FORMAT = 2

# Ranker folder and each of its versions.
RANKER_CURRENT_FILE = "CURRENT"
RANKER_META_FILE = "meta.json"
RANKER_WEIGHTS_FILE = "weights.pt"
RANKER_ITEM_SIDE_FILE = "item_side.npz"
RANKER_UNIVERSE_FILE = "universe_ids.npy"


def current_version(ranker_dir: Path) -> str | None:
    """The ranker version ``CURRENT`` names under ``ranker_dir``, None when no ranker was trained (a file
    read: the API polls it to pick up a newly trained ranker)."""
    pointer = ranker_dir / RANKER_CURRENT_FILE
    if not pointer.is_file():
        return None
    version = pointer.read_text(encoding="utf-8").strip()
    return version or None


class IndexFormatError(ValueError):
    """A saved index folder is missing files or its files disagree with each other."""


def catalogue_path(index_dir: Path) -> Path:
    """Where ``llmrec build-index`` saves the catalogue: inside the index folder, so both swap together."""
    return index_dir / CATALOGUE_FILE


def index_exists(index_dir: Path) -> bool:
    """True when a complete index (vectors and catalogue) is published at ``index_dir``."""
    folder = index_dir.resolve()
    return (folder / META_FILE).is_file() and catalogue_path(folder).is_file()


def index_format(index_dir: Path) -> int | None:
    """The published index's format number (``INDEX_FORMAT`` is current), None when there is none."""
    meta = index_dir.resolve() / META_FILE
    if not meta.is_file():
        return None
    found = json.loads(meta.read_text(encoding="utf-8")).get("format")
    return found if isinstance(found, int) else None


def check_index_format(index_dir: Path) -> None:
    """``IndexFormatError`` unless the published index is of the current format."""
    found = index_format(index_dir)
    if found != INDEX_FORMAT:
        raise IndexFormatError(
            f"{index_dir}: index format {found!r}, expected {INDEX_FORMAT}; rebuild it (`llmrec build-index`)"
        )


def load_item_vectors(folder: Path) -> tuple[IdArray, FloatArray]:
    """Just the ids and unit embeddings of a saved index (what the stream worker needs), without FAISS."""
    check_index_format(folder)
    folder = folder.resolve()
    item_ids = np.load(folder / IDS_FILE, allow_pickle=False).astype(np.int64, copy=False)
    embeddings = np.load(folder / EMBEDDINGS_FILE, allow_pickle=False).astype(np.float32, copy=False)
    if embeddings.shape[0] != len(item_ids):
        raise IndexFormatError(f"{folder}: {len(item_ids)} ids but {embeddings.shape[0]} embeddings")
    return item_ids, embeddings


def align_rows(
    wanted: Sequence[int],
    ids: npt.ArrayLike,
    vectors: npt.ArrayLike,
    *,
    missing: Literal["raise", "zero"] = "raise",
) -> FloatArray:
    """Rows of ``vectors`` (keyed by ``ids``) in the order of ``wanted``.

    An id of ``wanted`` that ``ids`` lacks raises ``KeyError`` naming a few of them (``missing="raise"``), or
    gets a row of zeros (``missing="zero"``, for models that treat "no text" as a zero feature).
    """
    source = np.asarray(vectors, dtype=np.float32)
    position = {int(i): r for r, i in enumerate(np.asarray(ids, dtype=np.int64).tolist())}
    absent = [i for i in wanted if int(i) not in position]
    if absent and missing == "raise":
        raise KeyError(f"{len(absent)} items have no embedding, e.g. {absent[:5]}")
    out = np.zeros((len(wanted), source.shape[1]), dtype=np.float32)
    pairs = [(k, position[int(i)]) for k, i in enumerate(wanted) if int(i) in position]
    if pairs:
        mine, theirs = (np.array(x, dtype=np.int64) for x in zip(*pairs, strict=True))
        out[mine] = source[theirs]
    return out


def vectors_for(wanted: Sequence[int], index_dir: Path) -> FloatArray:
    """The index's embeddings of ``wanted``, in that order; ``KeyError`` if any is not indexed."""
    ids, vectors = load_item_vectors(index_dir)
    return align_rows(wanted, ids, vectors)


@contextlib.contextmanager
def publish_dir(target: Path, keep: int = 2) -> Iterator[Path]:
    """Yield an empty staging folder; on success make ``target`` point at it atomically.

    ``target`` becomes a symlink to a versioned sibling folder (``<name>.versions/<stamp>``), replaced with
    one ``os.replace`` (an atomic rename on POSIX), so a reader resolving ``target`` sees either the old
    complete folder or the new one, never a half-written or missing one. A plain folder left at ``target``
    by an older build is moved aside first (that one switch is not atomic). The newest ``keep`` versions
    stay on disk so that a reader that resolved the previous link can finish loading it. If the body
    raises, the staging folder is deleted and ``target`` is untouched.
    """
    target = Path(os.path.abspath(target))
    versions = target.parent / f"{target.name}.versions"
    versions.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    staging = Path(tempfile.mkdtemp(prefix=f".{stamp}-", dir=versions))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    final = versions / stamp
    staging.rename(final)
    if target.exists() and not target.is_symlink():
        # "0-" sorts before every timestamp, so the legacy folder is the first to be pruned.
        target.rename(versions / f"0-legacy-{stamp}")
    link = target.parent / f".{target.name}.link-{stamp}"
    link.symlink_to(final.relative_to(target.parent))
    os.replace(link, target)
    _prune_versions(versions, keep=max(1, keep), current=final)


def _prune_versions(versions: Path, keep: int, current: Path) -> None:
    done = sorted((p for p in versions.iterdir() if p.is_dir() and not p.name.startswith(".")), reverse=True)
    for old in done[keep:]:
        if old != current:
            shutil.rmtree(old, ignore_errors=True)
