"""The artifact layout's one "align vectors by item id" helper, used by the ranker job and the harness."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmrec.artifacts import (
    INDEX_FORMAT,
    IndexFormatError,
    align_rows,
    index_exists,
    index_format,
    load_item_vectors,
    vectors_for,
)
from ranker.retrieval import ItemIndex


def test_align_rows_reorders_to_the_wanted_ids() -> None:
    ids = np.array([30, 10, 20])
    vectors = np.array([[3.0, 0.0], [1.0, 0.0], [2.0, 0.0]], dtype=np.float32)
    out = align_rows([10, 20, 30], ids, vectors)
    assert out[:, 0].tolist() == [1.0, 2.0, 3.0]


def test_align_rows_names_missing_ids_or_fills_zeros() -> None:
    ids = np.array([1, 2])
    vectors = np.ones((2, 3), dtype=np.float32)
    with pytest.raises(KeyError, match=r"1 items have no embedding, e\.g\. \[7\]"):
        align_rows([1, 7], ids, vectors)
    out = align_rows([7, 2], ids, vectors, missing="zero")
    assert out.tolist() == [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]


def test_vectors_for_reads_a_saved_index_folder(tmp_path: Path) -> None:
    vectors = np.eye(3, dtype=np.float32)
    ItemIndex.build(np.array([5, 6, 7]), vectors).save(tmp_path)
    assert vectors_for([7, 5], tmp_path).tolist() == [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    # No catalogue beside the vectors: not a complete published index.
    assert not index_exists(tmp_path)


def test_an_index_of_the_old_format_must_be_rebuilt(tmp_path: Path) -> None:
    """Format 1 held MAL anime ids where format 2 holds item keys: reading one would key nothing."""
    ItemIndex.build([1, 2], np.eye(2, dtype=np.float32)).save(tmp_path)
    assert index_format(tmp_path) == INDEX_FORMAT
    load_item_vectors(tmp_path)
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "format": 1}))
    assert index_format(tmp_path) == 1
    with pytest.raises(IndexFormatError, match="rebuild it"):
        load_item_vectors(tmp_path)
    with pytest.raises(IndexFormatError, match="unsupported index format 1"):
        ItemIndex.load(tmp_path)
