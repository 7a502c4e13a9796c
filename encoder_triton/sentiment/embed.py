"""Review embeddings from the in-process Encoder, cached as ``.npy`` in the output folder."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from encoder_triton.encoder import Encoder, EncoderOptions, FloatArray

CHUNK = 128


def cache_key(texts: Sequence[str], options: EncoderOptions, model: str) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([model, options.max_length, options.head_tokens]).encode())
    for text in texts:
        digest.update(hashlib.sha256(text.encode()).digest())
    return digest.hexdigest()[:16]


def load_encoder(threads: int | None = None) -> Encoder:
    """The platform encoder (offline MiniLM) on the CPU, with every core for offline batch work."""
    threads = threads or os.cpu_count() or 1
    return Encoder.from_pretrained(options=EncoderOptions(torch_threads=threads, batch_size=32))


def embed_cached(
    texts: Sequence[str],
    out_dir: Path,
    encoder: Encoder | None = None,
    progress: bool = True,
    model: str = "default",
) -> tuple[FloatArray, Encoder | None]:
    """Embeddings [n, dim] for ``texts``; read from ``out_dir/embeddings-<key>.npy`` when the same texts,
    ``model`` name and options were embedded before (a hit loads no model). ``model`` names the backbone
    in the cache key: pass another name with another ``encoder``. Returns the encoder used (None on a hit)."""
    options = encoder.options if encoder is not None else EncoderOptions()
    key = cache_key(texts, options, model)
    path = out_dir / f"embeddings-{key}.npy"
    if path.is_file():
        cached = np.load(path)
        if cached.shape[0] == len(texts):
            return cached.astype(np.float32), None
    encoder = encoder or load_encoder()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    out = np.empty((len(texts), encoder.dim), dtype=np.float32)
    chunks = [order[s : s + CHUNK] for s in range(0, len(order), CHUNK)]
    bar = None
    if progress:
        bar = tqdm(total=len(texts), desc="embedding reviews", unit="text")
    for chunk in chunks:
        out[chunk] = encoder.embed([texts[i] for i in chunk])
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, out)
    tmp.replace(path)
    return out, encoder
