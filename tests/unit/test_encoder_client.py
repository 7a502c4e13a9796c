"""EncoderClient's error handling against a fake gRPC client: what is retried, what is whose fault."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from encoder_triton import contract
from encoder_triton.client import (
    EncoderClient,
    EncoderError,
    EncodeResult,
    EncoderRejected,
    EncoderUnavailable,
    TextEncoder,
)

DIM = 4


class FakeResult:
    def __init__(self, embedding: np.ndarray, sentiment: float) -> None:
        self.outputs = {
            contract.OUTPUT_EMBEDDING: embedding.reshape(1, -1).astype(np.float32),
            contract.OUTPUT_SENTIMENT: np.array([[sentiment]], dtype=np.float32),
        }

    def as_numpy(self, name: str) -> np.ndarray | None:
        return self.outputs.get(name)


def _text_of(inputs: list[Any]) -> str:
    # InferInput keeps the serialised request; the fake reads the text back from the raw BYTES content.
    raw = inputs[0]._get_content()
    return bytes(raw[4:]).decode()


def good(text: str) -> FakeResult:
    vector = np.zeros(DIM, dtype=np.float32)
    vector[len(text) % DIM] = 1.0
    return FakeResult(vector, 0.25)


class FakeGrpc:
    """Answers with ``behaviour(text, call_number)``: a result to return or an exception to raise."""

    def __init__(self, behaviour: Callable[[str, int], Any]) -> None:
        self.behaviour = behaviour
        self.calls: dict[str, int] = {}

    async def infer(self, model_name: str, inputs: list[Any], **kwargs: Any) -> Any:
        text = _text_of(inputs)
        self.calls[text] = self.calls.get(text, 0) + 1
        outcome = self.behaviour(text, self.calls[text])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def close(self) -> None:
        pass


def make_client(behaviour: Callable[[str, int], Any], retries: int = 3) -> tuple[EncoderClient, FakeGrpc]:
    fake = FakeGrpc(behaviour)
    client = EncoderClient("fake:1", retries=retries, backoff_s=0.001, timeout_s=1.0)
    client._client = fake  # type: ignore[assignment]
    return client, fake


def error(status: str, message: str = "boom") -> InferenceServerException:
    return InferenceServerException(msg=message, status=f"StatusCode.{status}")


async def test_results_come_back_in_order() -> None:
    client, _ = make_client(lambda text, n: good(text))
    result = await client.embed_and_score(["a", "bb", "ccc"])
    assert result.embeddings.shape == (3, DIM)
    assert [int(np.argmax(row)) for row in result.embeddings] == [1, 2, 3]
    np.testing.assert_array_equal(result.sentiment, [0.25, 0.25, 0.25])


async def test_empty_input_is_an_empty_result() -> None:
    client, fake = make_client(lambda text, n: good(text))
    result = await client.embed_and_score([])
    assert len(result) == 0 and not fake.calls


@pytest.mark.parametrize("status", ["UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"])
async def test_transient_failures_are_retried(status: str) -> None:
    client, fake = make_client(lambda text, n: error(status) if n < 3 else good(text))
    result = await client.embed_and_score(["hello"])
    assert fake.calls["hello"] == 3
    assert result.embeddings.shape == (1, DIM)


async def test_persistent_unavailability_raises_after_the_retries() -> None:
    client, fake = make_client(lambda text, n: error("UNAVAILABLE"), retries=2)
    with pytest.raises(EncoderUnavailable, match="after 3 tries"):
        await client.embed_and_score(["hello"])
    assert fake.calls["hello"] == 3


async def test_a_crashed_backend_is_unavailable_without_retries() -> None:
    client, fake = make_client(lambda text, n: error("INTERNAL", "Stub process 'x' is not healthy."))
    with pytest.raises(EncoderUnavailable, match="not healthy"):
        await client.embed_and_score(["hello"])
    assert fake.calls["hello"] == 1


async def test_rejected_texts_are_reported_with_the_others_results() -> None:
    def behaviour(text: str, n: int) -> Any:
        return error("INVALID_ARGUMENT", "empty_text: text is empty") if text == "bad" else good(text)

    client, fake = make_client(behaviour)
    with pytest.raises(EncoderRejected) as info:
        await client.embed_and_score(["a", "bad", "ccc"])
    assert info.value.rejected == {1: "empty_text: text is empty"}
    assert fake.calls["bad"] == 1, "a rejected input is never retried"
    partial = info.value.partial
    assert np.isnan(partial.embeddings[1]).all() and np.isnan(partial.sentiment[1])
    assert [int(np.argmax(partial.embeddings[i])) for i in (0, 2)] == [1, 3]


async def test_unavailability_wins_over_rejection() -> None:
    def behaviour(text: str, n: int) -> Any:
        return error("INVALID_ARGUMENT") if text == "bad" else error("UNAVAILABLE")

    client, _ = make_client(behaviour, retries=0)
    with pytest.raises(EncoderUnavailable):
        await client.embed_and_score(["bad", "other"])


async def test_a_malformed_response_is_a_contract_error() -> None:
    client, _ = make_client(lambda text, n: FakeResult(np.array([3.0, 0, 0, 0]), 0.5))
    with pytest.raises(EncoderError) as info:
        await client.embed_and_score(["x"])
    assert not isinstance(info.value, EncoderUnavailable | EncoderRejected)


async def test_fakes_satisfy_the_text_encoder_protocol() -> None:
    class Fixed:
        async def embed_and_score(self, texts: list[str]) -> EncodeResult:
            return EncodeResult(np.ones((len(texts), 2), np.float32), np.full(len(texts), 0.5, np.float32))

    encoder: TextEncoder = Fixed()
    assert len(await encoder.embed_and_score(["a", "b"])) == 2
