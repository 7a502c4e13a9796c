"""jobs.build_index: catalogue -> embeddings -> published index + catalogue, with a fake encoder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from jobs.build_index import build_index, embed_texts
from llmrec.artifacts import CATALOGUE_FILE, load_item_vectors
from llmrec.catalogue import Catalogue, Item
from llmrec.item_ids import item_key
from llmrec.settings import Settings
from ranker.retrieval import choose_kind, load_artifacts

CATALOGUE = Catalogue.from_items(
    Item(item_id=i * 10, title=f"Show {i}", genres=("Drama",) if i % 2 else ("Comedy",), synopsis=f"plot {i}")
    for i in range(1, 41)
)


class HashEncoder:
    """Deterministic stand-in for the Triton encoder; counts calls so chunking is visible."""

    def __init__(self, dim: int = 12) -> None:
        self.dim = dim
        self.calls: list[int] = []

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        rows = [np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(self.dim) for t in texts]
        out = np.asarray(rows, dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(artifacts_dir=tmp_path / "artifacts")


def test_build_publishes_index_and_catalogue_together(settings: Settings) -> None:
    encoder = HashEncoder()
    summary = build_index(settings, CATALOGUE, encoder, progress=False, encoder_model="fake")
    assert summary.items == 40 and summary.dim == 12 and summary.kind == "flat"
    assert summary.index_dir == settings.index_dir and "40 items" in str(summary)

    index, catalogue = load_artifacts(settings.index_dir)
    assert index.version == summary.version and index.meta.encoder_model == "fake"
    # The index holds the items' keys, row for row with the published catalogue's (MAL) ids.
    assert list(catalogue.item_ids) == list(CATALOGUE.item_ids)
    assert (
        index.item_ids.tolist() == list(CATALOGUE.keys) == [item_key(f"mal:{i}") for i in CATALOGUE.item_ids]
    )
    assert (settings.index_dir / CATALOGUE_FILE).is_file()
    # Row i is the embedding of the catalogue's i-th text.
    expected = encoder(CATALOGUE.texts_for_embedding()[:1])[0]
    np.testing.assert_allclose(index.vector(item_key("mal:10")), expected, atol=1e-6)
    ids, vectors = load_item_vectors(settings.index_dir)  # what the worker reads
    assert ids.tolist() == list(CATALOGUE.keys) and vectors.shape == (40, 12)


def test_embedding_is_chunked(settings: Settings) -> None:
    encoder = HashEncoder()
    vectors = embed_texts(CATALOGUE.texts_for_embedding(), encoder, chunk=16, progress=False)
    assert encoder.calls == [16, 16, 8] and vectors.shape == (40, 12)


def test_a_failed_build_keeps_the_published_index(settings: Settings) -> None:
    first = build_index(settings, CATALOGUE, HashEncoder(), progress=False)

    def broken(texts: Sequence[str]) -> np.ndarray:
        return np.zeros((len(texts) - 1, 12), np.float32)

    with pytest.raises(ValueError, match="encoder returned shape"):
        build_index(settings, CATALOGUE.subset([10, 20]), broken, progress=False)
    assert load_artifacts(settings.index_dir)[0].version == first.version


def test_rebuild_replaces_both_files(settings: Settings) -> None:
    build_index(settings, CATALOGUE, HashEncoder(), progress=False)
    build_index(settings, CATALOGUE.subset([10, 20, 30]), HashEncoder(), progress=False, kind="hnsw")
    index, catalogue = load_artifacts(settings.index_dir)
    assert len(index) == len(catalogue) == 3 and index.kind == "hnsw"


def test_missing_artifacts_name_the_command(settings: Settings) -> None:
    with pytest.raises(FileNotFoundError, match="build-index"):
        load_artifacts(settings.index_dir)


def test_kind_choice() -> None:
    assert choose_kind(12_000) == "flat" and choose_kind(100_000) == "hnsw"
    assert choose_kind(1_000_000) == "ivf"
