"""Encoder throughput through Triton vs the same model in-process (``python -m bench.encoder``).

Both sides run the model the repository serves (its highest version: ``Encoder.from_version_dir``) with one
torch thread, as one Triton instance does. Texts are MAL reviews long enough to fill 128 tokens, so every
batch is exactly 128 tokens wide. For each batch size b, each repeat times one in-process
``Encoder.encode(b texts)`` and then one gRPC request carrying the same b texts (``[b, 1]`` BYTES) to a real
``tritonserver`` started for the run; the two alternate so that both see the same load from neighbours.
Reported: median seconds per batch, reviews/s = b / median, and overhead = t_triton / t_in_process - 1
(the serving cost: serialisation, gRPC, the Python backend's tensor copies, the batcher's queue delay).
The benchmark re-executes itself under ``setsid`` so that both sides run in sessions of their own (see
``own_session``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from bench.common import machine
from deploy.process import free_ports
from deploy.triton import TritonServer
from encoder_triton import contract
from encoder_triton.sentiment.data import load_reviews
from encoder_triton.training.report import serving_lines
from llmrec.settings import TritonSettings

markdown_lines = serving_lines  # the markdown section, also used by bench/report.py

BATCH_SIZES = (1, 8, 32, 64)
TOKENS = 128


def long_reviews(encoder: Any, count: int) -> list[str]:
    texts = []
    for review in load_reviews(None):  # the shipped sample: present on every clone
        if len(encoder.tokenizer(review.text, add_special_tokens=False)["input_ids"]) >= TOKENS:
            texts.append(review.text)
        if len(texts) == count:
            return texts
    raise RuntimeError(f"the sample has only {len(texts)} reviews of {TOKENS}+ tokens")


def run(repository: Path, repeats: int = 7, batch_sizes: tuple[int, ...] = BATCH_SIZES) -> dict[str, Any]:
    # Lazy: torch and transformers (which these encoder_triton modules import) take seconds to import, and
    # `python -m bench` and bench/report.py import this module for its report section alone.
    import torch

    from encoder_triton.encoder import Encoder, EncoderOptions
    from encoder_triton.training.export import latest_version_dir

    version_dir = latest_version_dir(repository)
    encoder = Encoder.from_version_dir(version_dir, options=EncoderOptions(torch_threads=1, batch_size=64))
    texts = long_reviews(encoder, max(batch_sizes))
    widths = {int(encoder.tokenize(texts[:b])["input_ids"].shape[1]) for b in batch_sizes}
    with tempfile.TemporaryDirectory(prefix="bench-encoder-") as state:
        http_port, grpc_port, metrics_port = free_ports(3)
        server = TritonServer(
            repository=repository,
            state_dir=Path(state),
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
        )
        server.start()
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            rows: dict[str, Any] = {}
            for b in batch_sizes:
                batch = texts[:b]
                data = np.array([[t.encode("utf-8")] for t in batch], dtype=np.object_)
                tensor = grpcclient.InferInput(
                    contract.INPUT_TEXT, list(data.shape), contract.INPUT_TEXT_DTYPE
                )
                tensor.set_data_from_numpy(data)
                outputs = [
                    grpcclient.InferRequestedOutput(n)
                    for n in (contract.OUTPUT_EMBEDDING, contract.OUTPUT_SENTIMENT)
                ]

                def served(tensor: Any = tensor, outputs: list[Any] = outputs) -> Any:
                    return client.infer(server.model_name, [tensor], outputs=outputs, client_timeout=120)

                local = encoder.encode(batch)  # warm-up, and the reference for the served answer
                answer = served()
                gap = float(np.abs(answer.as_numpy(contract.OUTPUT_EMBEDDING) - local.embeddings).max())
                t_local, t_served = [], []
                for _ in range(repeats):
                    began = time.perf_counter()
                    encoder.encode(batch)
                    t_local.append(time.perf_counter() - began)
                    began = time.perf_counter()
                    served()
                    t_served.append(time.perf_counter() - began)
                local_s, served_s = float(np.median(t_local)), float(np.median(t_served))
                rows[str(b)] = {
                    "in_process_s": local_s,
                    "triton_s": served_s,
                    "in_process_reviews_per_s": b / local_s,
                    "triton_reviews_per_s": b / served_s,
                    "overhead": served_s / local_s - 1.0,
                    "overhead_of_minima": min(t_served) / min(t_local) - 1.0,
                    "in_process_all_s": t_local,
                    "triton_all_s": t_served,
                    "max_abs_embedding_gap": gap,
                }
        finally:
            client.close()
            server.stop()
    manifest = version_dir / "export.json"
    return {
        "model_version": version_dir.name,
        "model": json.loads(manifest.read_text()).get("weights") if manifest.is_file() else "package MiniLM",
        "dim": encoder.dim,
        "tokens": sorted(widths),
        "repeats": repeats,
        "torch_threads": 1,
        "device": "cpu",
        "gpu": "none: no GPU was lent to this task; the GPU run is left to a machine that has one",
        "cuda_available": bool(torch.cuda.is_available()),
        "machine": machine(),
        "in_process_own_session": own_session(),
        "shared_machine": "2 cores shared with other jobs: absolute timings are noisy; "
        "the two sides alternate within each repeat",
        "batches": rows,
        "serving_overhead_b32": rows["32"]["overhead"] if "32" in rows else None,
    }


def own_session() -> bool:
    """True when this process leads its own session. Linux's autogroup scheduler shares the CPU per session,
    and ``tritonserver`` runs in a session of its own, so the in-process side must too: in a session shared
    with other jobs it gets a fraction of the CPU the server gets (measured here: Triton "3x faster")."""
    return os.getsid(0) == os.getpid()


def main(argv: list[str] | None = None) -> int:
    if not own_session() and shutil.which("setsid"):
        forwarded = sys.argv[1:] if argv is None else argv
        os.execvp("setsid", ["setsid", "-w", sys.executable, "-m", "bench.encoder", *forwarded])

    parser = argparse.ArgumentParser(prog="python -m bench.encoder", description=__doc__)
    parser.add_argument("--repository", type=Path, default=TritonSettings().repository)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("reports/encoder-bench.json"))
    args = parser.parse_args(argv)
    section = run(args.repository, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(section, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(markdown_lines(section)))
    print("\n".join(markdown_lines(section)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
