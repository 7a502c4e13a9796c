"""The encoder served by a real Triton server (fixture ``triton_server``, started once per session).

Triton must answer exactly what the in-process encoder computes, reject bad inputs one request at a
time while their batch-mates succeed, and merge concurrent requests into fewer executions.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from deploy.process import free_port, free_ports, group_members, pid_alive, wait_until
from deploy.triton import TritonServer
from encoder_triton import contract
from encoder_triton.client import (
    EncoderClient,
    EncoderRejected,
    EncoderUnavailable,
    check_inference,
    encode_corpus,
)
from encoder_triton.encoder import Encoder
from encoder_triton.training.export import latest_version_dir
from llmrec.settings import TritonSettings
from tests.sample_reviews import review_texts

pytestmark = pytest.mark.integration

ATOL = 1e-4


def _reviews(count: int) -> list[str]:
    return review_texts(count)


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    """The model the repository serves (its highest version, learned sentiment head included), in-process."""
    return Encoder.from_version_dir(latest_version_dir(TritonSettings().repository))


@pytest.fixture
async def client(triton_server: TritonServer) -> AsyncIterator[EncoderClient]:
    async with EncoderClient(
        triton_server.grpc_url, triton_server.model_name, timeout_s=30.0
    ) as encoder_client:
        yield encoder_client


def _raw_request(payload: list[bytes]) -> grpcclient.InferInput:
    data = np.array([[item] for item in payload], dtype=np.object_)
    tensor = grpcclient.InferInput(contract.INPUT_TEXT, list(data.shape), contract.INPUT_TEXT_DTYPE)
    tensor.set_data_from_numpy(data)
    return tensor


def test_server_is_ready_with_a_real_inference(triton_server: TritonServer) -> None:
    assert triton_server.alive()
    assert triton_server.ready_after_s is not None and triton_server.ready_after_s > 0
    result = check_inference(triton_server.grpc_url, triton_server.model_name)
    assert result.embeddings.shape == (1, 384)


async def test_triton_matches_the_in_process_encoder(client: EncoderClient, encoder: Encoder) -> None:
    texts = [*_reviews(12), "Loved it!", "Boring, a waste of time.", "  Très   bien\n\n animé  "]
    served = await client.embed_and_score(texts)
    local = encoder.encode(texts)
    assert served.embeddings.shape == local.embeddings.shape == (len(texts), 384)
    np.testing.assert_allclose(served.embeddings, local.embeddings, atol=ATOL)
    np.testing.assert_allclose(served.sentiment, local.sentiment, atol=ATOL)
    assert await client.ready()


async def test_invalid_requests_fail_alone_while_batch_mates_succeed(
    triton_server: TritonServer, encoder: Encoder
) -> None:
    """Fired together so the dynamic batcher puts good and bad requests in the same executions."""
    payloads = [b"A gripping, beautiful show.", b"", b"\xff\xfe not utf-8", b"   \n ", b"Dull and slow."] * 4
    async with aioclient.InferenceServerClient(triton_server.grpc_url) as raw:

        async def send(payload: bytes) -> Any:
            try:
                return await raw.infer(
                    contract.DEFAULT_MODEL_NAME, [_raw_request([payload])], client_timeout=30
                )
            except InferenceServerException as exc:
                return exc

        outcomes = await asyncio.gather(*(send(p) for p in payloads))
    expected = encoder.encode(["A gripping, beautiful show.", "Dull and slow."])
    for payload, outcome in zip(payloads, outcomes, strict=True):
        if payload.strip() and payload.startswith((b"A", b"D")):
            assert not isinstance(outcome, Exception), f"{payload!r} failed: {outcome}"
            row = 0 if payload.startswith(b"A") else 1
            np.testing.assert_allclose(
                outcome.as_numpy(contract.OUTPUT_EMBEDDING)[0], expected.embeddings[row], atol=ATOL
            )
        else:
            assert isinstance(outcome, InferenceServerException), f"{payload!r} was accepted"
            assert outcome.status() == "StatusCode.INVALID_ARGUMENT"
            reason = contract.REJECT_INVALID_UTF8 if b"\xff" in payload else contract.REJECT_EMPTY_TEXT
            assert str(outcome.message()).startswith(reason), outcome.message()


async def test_client_reports_rejected_texts_with_the_others_results(
    client: EncoderClient, encoder: Encoder
) -> None:
    texts = ["Great fights and a moving story.", "   ", "Terrible pacing."]
    with pytest.raises(EncoderRejected) as info:
        await client.embed_and_score(texts)
    assert set(info.value.rejected) == {1}
    assert info.value.rejected[1].startswith(contract.REJECT_EMPTY_TEXT)
    partial = info.value.partial
    assert np.isnan(partial.embeddings[1]).all() and np.isnan(partial.sentiment[1])
    local = encoder.encode([texts[0], texts[2]])
    np.testing.assert_allclose(partial.embeddings[[0, 2]], local.embeddings, atol=ATOL)
    np.testing.assert_allclose(partial.sentiment[[0, 2]], local.sentiment, atol=ATOL)


async def test_concurrent_requests_of_different_lengths_are_batched(
    triton_server: TritonServer, client: EncoderClient
) -> None:
    stats_client = grpcclient.InferenceServerClient(triton_server.grpc_url)

    def counts() -> tuple[int, int]:
        stats = stats_client.get_inference_statistics(triton_server.model_name, as_json=True)["model_stats"][
            0
        ]
        return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))

    try:
        texts = [review[: 200 + 150 * i] for i, review in enumerate(_reviews(32))]
        assert len({len(t) for t in texts}) == len(texts)
        inferences_before, executions_before = counts()
        result = await client.embed_and_score(texts)
        # Triton updates the statistics after it has sent the responses: wait for the last execution.
        for _ in range(50):
            inferences_after, executions_after = counts()
            if inferences_after - inferences_before >= len(texts):
                break
            await asyncio.sleep(0.1)
    finally:
        stats_client.close()
    assert result.embeddings.shape == (32, 384)
    inferences = inferences_after - inferences_before
    executions = executions_after - executions_before
    assert inferences == 32
    assert executions < inferences / 2, f"{inferences} requests ran in {executions} executions"


async def test_encode_corpus_in_order(triton_server: TritonServer, encoder: Encoder) -> None:
    texts = [f"Episode {i}: " + review[:300] for i, review in enumerate(_reviews(20))]
    embeddings = await asyncio.to_thread(
        encode_corpus, texts, triton_server.grpc_url, triton_server.model_name, batch_size=8, progress=False
    )
    np.testing.assert_allclose(embeddings, encoder.encode(texts).embeddings, atol=ATOL)


async def test_unreachable_server_is_unavailable_not_rejected() -> None:
    port = free_port()
    async with EncoderClient(f"127.0.0.1:{port}", timeout_s=2.0, retries=2, backoff_s=0.01) as dead:
        assert not await dead.ready()
        with pytest.raises(EncoderUnavailable, match="after 3 tries"):
            await dead.embed_and_score(["anything"])


# --------------------------------------------------------------------------------------------------
# lifecycle, each on a server of its own (the session's server must stay healthy)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[TritonServer]:
    http_port, grpc_port, metrics_port = free_ports(3)
    server = TritonServer(
        repository=TritonSettings().repository,
        state_dir=tmp_path,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        grace_s=15.0,
    )
    server.start()
    yield server
    pid = server.pid
    server.stop(grace_s=3.0)
    assert not server.alive()
    assert pid is not None and not group_members(pid), "backend stubs outlived the server"


async def test_sigterm_drains_requests_in_flight(own_server: TritonServer) -> None:
    texts = [review[:1500] for review in _reviews(24)]
    async with EncoderClient(own_server.grpc_url, timeout_s=60.0, retries=0) as encoder_client:
        pending = asyncio.ensure_future(encoder_client.embed_and_score(texts))
        await asyncio.sleep(0.5)  # every request has reached the server's queue; few have run
        assert not pending.done()
        pid = own_server.pid
        stopping = asyncio.ensure_future(asyncio.to_thread(own_server.stop))
        result = await pending
        assert await stopping
    assert result.embeddings.shape == (24, 384)
    assert pid is not None and not pid_alive(pid)


def test_a_crashed_backend_stub_makes_the_server_not_ready(own_server: TritonServer) -> None:
    """Triton still says "ready" when its stubs die; only a real inference tells. Every instance's stub is
    killed: with one of two dead, requests routed to the live one still succeed."""
    assert own_server.pid is not None
    stubs = [
        pid
        for pid in group_members(own_server.pid)
        if b"triton_python_backend_stub" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert stubs, "no backend stub process found"
    for stub in stubs:
        os.kill(stub, signal.SIGKILL)
    assert wait_until(lambda: not any(pid_alive(stub) for stub in stubs), 10.0)
    raw = grpcclient.InferenceServerClient(own_server.grpc_url)
    try:
        assert raw.is_server_ready() and raw.is_model_ready(own_server.model_name)
    finally:
        raw.close()
    assert not own_server.ready(timeout_s=5.0)
    with pytest.raises(EncoderUnavailable, match="not healthy"):
        check_inference(own_server.grpc_url, own_server.model_name)
