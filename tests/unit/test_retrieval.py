"""ranker.retrieval: exact search equals brute force, persistence, approximate recall, atomic publishing."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from llmrec.artifacts import (
    EMBEDDINGS_FILE,
    IDS_FILE,
    INDEX_FILE,
    META_FILE,
    IndexFormatError,
    load_item_vectors,
    publish_dir,
)
from ranker.retrieval import INLINE_SEARCH_VECTORS, ItemIndex, normalise_rows


def random_unit(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return normalise_rows(np.random.default_rng(seed).standard_normal((n, dim)))


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    ids = np.arange(1, 2001, dtype=np.int64) * 7  # ids unrelated to row numbers
    return ids, random_unit(2000, 48)


def test_flat_search_equals_numpy_brute_force(data: tuple[np.ndarray, np.ndarray]) -> None:
    ids, vectors = data
    index = ItemIndex.build(ids, vectors)
    queries = random_unit(20, 48, seed=1)
    scores, found = index.search(queries, k=15)
    brute = queries @ vectors.T
    expected_rows = np.argsort(-brute, axis=1)[:, :15]
    np.testing.assert_array_equal(found, ids[expected_rows])
    np.testing.assert_allclose(scores, np.take_along_axis(brute, expected_rows, axis=1), rtol=1e-5, atol=1e-6)


def test_single_query_and_k_larger_than_the_index() -> None:
    vectors = np.eye(3, dtype=np.float32)
    index = ItemIndex.build([10, 20, 30], vectors)
    scores, found = index.search(vectors[2], k=10)
    assert found.shape == (1, 3)
    assert found[0, 0] == 30 and scores[0, 0] == pytest.approx(1.0)


def test_rows_are_renormalised_and_bad_input_rejected() -> None:
    index = ItemIndex.build([1, 2], [[3.0, 4.0], [0.0, 2.0]])
    np.testing.assert_allclose(index.vector(1), [0.6, 0.8], rtol=1e-6)
    with pytest.raises(ValueError, match="duplicates"):
        ItemIndex.build([1, 1], np.eye(2))
    with pytest.raises(ValueError, match="zero vector"):
        ItemIndex.build([1, 2], [[1.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="NaN"):
        ItemIndex.build([1, 2], [[1.0, np.nan], [0.0, 1.0]])
    with pytest.raises(ValueError, match="2 item ids but 3"):
        ItemIndex.build([1, 2], np.eye(3))
    with pytest.raises(ValueError, match="unknown index kind"):
        ItemIndex.build([1, 2], np.eye(2), kind="lsh")  # type: ignore[arg-type]


def test_lookups(data: tuple[np.ndarray, np.ndarray]) -> None:
    ids, vectors = data
    index = ItemIndex.build(ids, vectors)
    assert 7 in index and 8 not in index and "7" not in index
    np.testing.assert_array_equal(index.rows([14, 8, 7]), [1, -1, 0])
    np.testing.assert_allclose(index.vector(21), vectors[2], atol=1e-6)
    found, known = index.vectors([21, 5, 7])
    np.testing.assert_array_equal(known, [21, 7])
    np.testing.assert_allclose(found, vectors[[2, 0]], atol=1e-6)
    with pytest.raises(KeyError):
        index.vector(8)
    with pytest.raises(ValueError):  # the index is immutable
        index.embeddings[0, 0] = 1.0


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_save_load_round_trip(tmp_path: Path, kind: str, data: tuple[np.ndarray, np.ndarray]) -> None:
    ids, vectors = data
    index = ItemIndex.build(ids, vectors, kind, encoder_model="llmrec_encoder")  # type: ignore[arg-type]
    index.save(tmp_path / "idx")
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == sorted(
        [INDEX_FILE, IDS_FILE, EMBEDDINGS_FILE, META_FILE]
    )
    meta = json.loads((tmp_path / "idx" / META_FILE).read_text())
    assert meta["dim"] == 48 and meta["kind"] == kind and meta["encoder_model"] == "llmrec_encoder"
    assert meta["count"] == 2000 and meta["created_at"] and meta["version"].startswith(kind)

    loaded = ItemIndex.load(tmp_path / "idx")
    assert loaded.version == index.version and loaded.meta == index.meta
    queries = random_unit(5, 48, seed=3)
    np.testing.assert_array_equal(loaded.search(queries, 10)[1], index.search(queries, 10)[1])
    worker_ids, worker_vectors = load_item_vectors(tmp_path / "idx")
    np.testing.assert_array_equal(worker_ids, ids)
    np.testing.assert_array_equal(worker_vectors, index.embeddings)


def test_load_rejects_incomplete_or_foreign_folders(tmp_path: Path) -> None:
    ItemIndex.build([1, 2], np.eye(2)).save(tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text())
    (tmp_path / META_FILE).write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(IndexFormatError, match="format"):
        ItemIndex.load(tmp_path)
    (tmp_path / INDEX_FILE).unlink()
    with pytest.raises(IndexFormatError, match=INDEX_FILE):
        ItemIndex.load(tmp_path)


def test_version_depends_on_content() -> None:
    a = ItemIndex.build([1, 2], np.eye(2), created_at=None)
    b = ItemIndex.build([1, 3], np.eye(2))
    assert a.version.split("-")[-1] != b.version.split("-")[-1]


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_recall_against_flat(kind: str) -> None:
    # Clustered data, like text embeddings (uniform random 64-d vectors are the worst case for ANN).
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((50, 64))
    vectors = normalise_rows(centres[rng.integers(0, 50, 5000)] + 0.5 * rng.standard_normal((5000, 64)))
    ids = np.arange(5000)
    queries = normalise_rows(centres[rng.integers(0, 50, 200)] + 0.5 * rng.standard_normal((200, 64)))
    _, exact = ItemIndex.build(ids, vectors, "flat").search(queries, 10)
    _, approx = ItemIndex.build(ids, vectors, kind).search(queries, 10)  # type: ignore[arg-type]
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.95, recall


def test_hnsw_returns_k_results_beyond_ef_search() -> None:
    index = ItemIndex.build(np.arange(1000), random_unit(1000, 16), "hnsw")
    _, found = index.search(random_unit(1, 16, seed=9), 500)
    assert (found >= 0).sum() == 500 and len(set(found[0].tolist())) == 500


@pytest.mark.parametrize("offload", [False, True])
async def test_concurrent_async_searches_match_sync(
    data: tuple[np.ndarray, np.ndarray], offload: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids, vectors = data
    index = ItemIndex.build(ids, vectors)
    # Both paths of search_async: inline (2,000 vectors is cheap) and in a worker thread.
    monkeypatch.setattr("ranker.retrieval.INLINE_SEARCH_VECTORS", 0 if offload else INLINE_SEARCH_VECTORS)
    threads: list[int] = []
    original = index.search_single_threaded

    def spy(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        threads.append(threading.get_ident())
        return original(queries, k)

    monkeypatch.setattr(index, "search_single_threaded", spy)
    queries = random_unit(16, 48, seed=4)
    results = await asyncio.gather(*(index.search_async(q, 5) for q in queries))
    for q, (_, found) in zip(queries, results, strict=True):
        np.testing.assert_array_equal(found, index.search(q, 5)[1])
    on_loop = [t == threading.get_ident() for t in threads]
    assert on_loop == [not offload] * len(queries)


def test_vectors_scanned_by_kind() -> None:
    rng_vectors = random_unit(5000, 16)
    ids = np.arange(5000)
    assert ItemIndex.build(ids, rng_vectors, "flat").vectors_scanned(10) == 5000
    assert ItemIndex.build(ids, rng_vectors, "hnsw").vectors_scanned(10) == 0
    ivf = ItemIndex.build(ids, rng_vectors, "ivf")
    params = ivf.meta.params
    assert ivf.vectors_scanned(10) == -(-5000 * params["nprobe"] // params["nlist"])


def test_publish_dir_swaps_atomically_and_keeps_two_versions(tmp_path: Path) -> None:
    target = tmp_path / "index"
    for n in (2, 3, 4):
        with publish_dir(target) as staging:
            ItemIndex.build(np.arange(n), np.eye(n)).save(staging)
    assert target.is_symlink()
    assert len(ItemIndex.load(target)) == 4
    versions = [p for p in (tmp_path / "index.versions").iterdir() if not p.name.startswith(".")]
    assert len(versions) == 2


def test_publish_dir_leaves_target_untouched_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "index"
    with publish_dir(target) as staging:
        ItemIndex.build([1, 2], np.eye(2)).save(staging)
    before = os.readlink(target)
    with pytest.raises(RuntimeError), publish_dir(target) as staging:
        (staging / "partial").write_text("x")
        raise RuntimeError("encoder died")
    assert os.readlink(target) == before
    assert len(ItemIndex.load(target)) == 2
    assert not [p for p in (tmp_path / "index.versions").iterdir() if p.name.startswith(".")]


def test_publish_dir_replaces_a_plain_folder_from_an_older_build(tmp_path: Path) -> None:
    target = tmp_path / "index"
    ItemIndex.build([1, 2], np.eye(2)).save(target)
    with publish_dir(target) as staging:
        ItemIndex.build([1, 2, 3], np.eye(3)).save(staging)
    assert target.is_symlink() and len(ItemIndex.load(target)) == 3
