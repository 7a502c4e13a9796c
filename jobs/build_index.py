"""Offline job behind ``llmrec build-index``: catalogue -> embeddings (through Triton) -> FAISS index.

Everything the API and the worker load lives in one artifact folder, ``settings.index_dir``::

    index.faiss, item_ids.npy, embeddings.npy, meta.json   (ranker.retrieval.ItemIndex.save)
    catalogue.jsonl.gz                                      (llmrec.catalogue.Catalogue.save)

The catalogue sits inside the index folder rather than beside it because the two must match row for row:
``publish_dir`` swaps the folder with one atomic rename, so a reader never sees a new index with an old
catalogue. ``settings.index_dir`` becomes a symlink to ``<index_dir>.versions/<timestamp>``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from encoder_triton.client import encode_corpus
from llmrec.artifacts import catalogue_path, publish_dir
from llmrec.catalogue import Catalogue, load_catalogue
from llmrec.data_source import resolve_data_source
from llmrec.logs import get_logger
from llmrec.settings import Settings
from ranker.retrieval import INDEX_KINDS, IndexKind, ItemIndex, choose_kind

log = get_logger(__name__)

# Texts per call to the encoder: large enough to keep Triton's dynamic batcher full (its max batch is
# 64), small enough that the progress bar moves every few seconds on 2 CPU cores.
ENCODE_CHUNK = 256
BatchEncoder = Callable[[Sequence[str]], npt.NDArray[np.float32]]
"""Texts -> L2-normalised embeddings ``[len(texts), dim]`` in the same order."""


@dataclass(frozen=True)
class IndexSummary:
    items: int
    dim: int
    kind: str
    version: str
    encoder_model: str
    index_dir: Path
    seconds: float

    def __str__(self) -> str:
        return (
            f"indexed {self.items} items ({self.dim}-d, {self.kind}, encoder {self.encoder_model or '?'}) "
            f"as {self.version} in {self.seconds:.1f} s -> {self.index_dir}"
        )


def embed_texts(
    texts: Sequence[str], encoder: BatchEncoder, *, chunk: int = ENCODE_CHUNK, progress: bool = True
) -> npt.NDArray[np.float32]:
    """Embed in chunks with a progress bar; checks each chunk's shape so a wrong encoder fails early."""
    parts: list[npt.NDArray[np.float32]] = []
    with tqdm(total=len(texts), desc="embedding items", unit="item", disable=not progress) as bar:
        for start in range(0, len(texts), chunk):
            batch = texts[start : start + chunk]
            vectors = np.asarray(encoder(batch), dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[0] != len(batch):
                raise ValueError(f"encoder returned shape {vectors.shape} for {len(batch)} texts")
            parts.append(vectors)
            bar.update(len(batch))
    if not parts:
        raise ValueError("nothing to embed")
    return np.concatenate(parts, axis=0)


def build_index(
    settings: Settings,
    catalogue: Catalogue,
    encoder: BatchEncoder,
    progress: bool = True,
    *,
    encoder_model: str = "",
    kind: IndexKind | None = None,
    index_dir: Path | None = None,
) -> IndexSummary:
    """Embed every catalogue item, build the index, and publish index + catalogue atomically to
    ``index_dir`` (default ``settings.index_dir``)."""
    if len(catalogue) == 0:
        raise ValueError("the catalogue is empty")
    kind = kind or choose_kind(len(catalogue))
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {kind!r}")
    target = index_dir or settings.index_dir
    started = time.perf_counter()
    embeddings = embed_texts(catalogue.texts_for_embedding(), encoder, progress=progress)
    index = ItemIndex.build(
        np.asarray(catalogue.keys, dtype=np.int64), embeddings, kind, encoder_model=encoder_model
    )
    with publish_dir(target) as staging:
        index.save(staging)
        catalogue.save(catalogue_path(staging))
    summary = IndexSummary(
        items=len(index),
        dim=index.dim,
        kind=index.kind,
        version=index.version,
        encoder_model=encoder_model,
        index_dir=target,
        seconds=time.perf_counter() - started,
    )
    log.info(
        "index built",
        items=summary.items,
        dim=summary.dim,
        kind=summary.kind,
        version=summary.version,
        seconds=round(summary.seconds, 1),
    )
    return summary


def build_empty_index(settings: Settings, dim: int, encoder_model: str = "") -> IndexSummary:
    """Publish an index of no items (and an empty catalogue file): the catalogue then arrives on the items
    topic only (``catalogue_source = "items"``)."""
    index = ItemIndex.empty(dim, encoder_model=encoder_model)
    with publish_dir(settings.index_dir) as staging:
        index.save(staging)
        Catalogue.from_items([]).save(catalogue_path(staging))
    log.info("empty index published", dim=dim, version=index.version)
    return IndexSummary(0, dim, index.kind, index.version, encoder_model, settings.index_dir, 0.0)


def build_index_from_settings(settings: Settings, progress: bool = True) -> IndexSummary:
    """``llmrec build-index``: the catalogue from the data source in settings, embedded by the Triton
    encoder the settings point at; or an empty index when the catalogue comes from the items topic."""
    if settings.catalogue_source == "items":
        # The encoder's width, from one embedding: the index must match what the worker will store.
        probe = encode_corpus(
            ["dimension probe"], settings.triton.grpc_url, settings.triton.model_name, progress=False
        )
        return build_empty_index(settings, int(probe.shape[1]), settings.triton.model_name)
    source = resolve_data_source(settings)
    log.info("building catalogue", source=source.describe())
    catalogue = load_catalogue(source)

    def encoder(texts: Sequence[str]) -> npt.NDArray[np.float32]:
        # One chunk per call (embed_texts draws the progress bar); the helper sends the chunk as concurrent
        # requests that Triton's dynamic batcher merges.
        return encode_corpus(
            texts,
            settings.triton.grpc_url,
            settings.triton.model_name,
            batch_size=len(texts),
            retries=settings.triton.retries,
            progress=False,
        )

    return build_index(settings, catalogue, encoder, progress, encoder_model=settings.triton.model_name)
