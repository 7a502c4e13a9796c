"""An exported model (``llmrec export-encoder``) served by the real Triton server.

A tiny random RoBERTa (hidden 32, 2 layers, its own BPE tokenizer) with a random sentiment head is exported
as version 2 of a temporary copy of the repository; Triton serves the highest version, so it must answer
exactly what ``Encoder.from_version_dir`` computes in-process, learned head included, and reject bad
requests one at a time. A version whose weights are missing must refuse to load.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from deploy.process import ProcessError, free_ports
from deploy.triton import TritonServer
from encoder_triton import contract
from encoder_triton.client import EncoderClient, check_inference
from encoder_triton.encoder import Encoder
from encoder_triton.training.export import export_encoder
from tests.sample_reviews import review_texts
from tests.tiny_encoder import copy_repository, make_tiny_run

pytestmark = pytest.mark.integration

ATOL = 1e-4


def _server(repository: Path, state: Path) -> TritonServer:
    http_port, grpc_port, metrics_port = free_ports(3)
    return TritonServer(
        repository=repository,
        state_dir=state,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    return export_encoder(make_tiny_run(root / "run"), copy_repository(root / "repository"))


@pytest.fixture(scope="module")
def served(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    server = _server(exported.parent.parent, tmp_path_factory.mktemp("triton-export"))
    try:
        server.start()
    except Exception as exc:
        server.stop()
        pytest.fail(f"Triton could not serve the exported model: {exc}", pytrace=False)
    yield server
    server.stop()


def test_triton_serves_the_exported_version(served: TritonServer, exported: Path) -> None:
    result = check_inference(served.grpc_url, served.model_name)
    assert exported.name == "2" and result.embeddings.shape == (1, 32)
    raw = grpcclient.InferenceServerClient(served.grpc_url)
    try:
        assert raw.is_model_ready(served.model_name, "2")
        assert not raw.is_model_ready(served.model_name, "1")
    finally:
        raw.close()


async def test_exported_scores_and_embeddings_match_in_process(served: TritonServer, exported: Path) -> None:
    local = Encoder.from_version_dir(exported)
    assert local.sentiment_head is not None
    texts = [*review_texts(10), "Loved it!", "Boring, a waste of time.", "  Très   bien\n\n animé  "]
    async with EncoderClient(served.grpc_url, served.model_name, timeout_s=30.0) as client:
        got = await client.embed_and_score(texts)
    want = local.encode(texts)
    np.testing.assert_allclose(got.embeddings, want.embeddings, atol=ATOL)
    np.testing.assert_allclose(got.sentiment, want.sentiment, atol=ATOL)
    # The learned head, not the anchors, produced the scores.
    anchors = Encoder(local.backbone, local.tokenizer, local.options)
    assert np.abs(anchors.encode(texts).sentiment - want.sentiment).max() > 1e-3


async def test_mixed_batch_of_valid_and_invalid_requests(served: TritonServer, exported: Path) -> None:
    payloads = [b"A gripping, beautiful show.", b"", b"\xff\xfe not utf-8", b"  \n ", b"Dull and slow."] * 4

    def request(payload: bytes) -> grpcclient.InferInput:
        data = np.array([[payload]], dtype=np.object_)
        tensor = grpcclient.InferInput(contract.INPUT_TEXT, list(data.shape), contract.INPUT_TEXT_DTYPE)
        tensor.set_data_from_numpy(data)
        return tensor

    async with aioclient.InferenceServerClient(served.grpc_url) as raw:

        async def send(payload: bytes) -> Any:
            try:
                return await raw.infer(served.model_name, [request(payload)], client_timeout=30)
            except InferenceServerException as exc:
                return exc

        outcomes = await asyncio.gather(*(send(p) for p in payloads))
    want = Encoder.from_version_dir(exported).encode(["A gripping, beautiful show.", "Dull and slow."])
    for payload, outcome in zip(payloads, outcomes, strict=True):
        if payload.startswith((b"A", b"D")):
            assert not isinstance(outcome, Exception), f"{payload!r} failed: {outcome}"
            row = 0 if payload.startswith(b"A") else 1
            np.testing.assert_allclose(
                outcome.as_numpy(contract.OUTPUT_EMBEDDING)[0], want.embeddings[row], atol=ATOL
            )
            np.testing.assert_allclose(
                outcome.as_numpy(contract.OUTPUT_SENTIMENT)[0, 0], want.sentiment[row], atol=ATOL
            )
        else:
            assert isinstance(outcome, InferenceServerException), f"{payload!r} was accepted"
            assert outcome.status() == "StatusCode.INVALID_ARGUMENT"
            reason = contract.REJECT_INVALID_UTF8 if b"\xff" in payload else contract.REJECT_EMPTY_TEXT
            assert str(outcome.message()).startswith(reason)


def test_a_version_without_its_weights_refuses_to_load(exported: Path, tmp_path: Path) -> None:
    """Weights are not in git: a clone with the version folder but no weights/ must not serve MiniLM with a
    head trained for another model."""
    repository = tmp_path / "repository"
    shutil.copytree(exported.parent.parent, repository)
    shutil.rmtree(repository / "llmrec_encoder" / "2" / "weights")
    server = _server(repository, tmp_path / "state")
    try:
        with pytest.raises(ProcessError):
            server.start(timeout_s=90)
    finally:
        server.stop()
    assert "ExportMismatch" in server.log_path.read_text(errors="replace")
