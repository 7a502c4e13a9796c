"""Async gRPC client of the Triton-served encoder, with typed errors, timeouts and retries.

One request per text: Triton's dynamic batcher merges concurrent requests into one execution, and a
bad text fails only its own request, so the caller learns exactly which inputs were rejected.

Errors a caller must tell apart:

* ``EncoderUnavailable``: transient (server down, overloaded, timed out, model not loaded or crashed).
  Retry later; never dead-letter the event for it.
* ``EncoderRejected``: these inputs are bad (empty text, invalid UTF-8). Retrying cannot help; the
  exception carries which indices failed and the results of the others.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tqdm import tqdm
from tritonclient.utils import InferenceServerException

from encoder_triton import contract
from llmrec import tracing

FloatArray = npt.NDArray[np.float32]

# Codes that say "try again": the server is starting, overloaded, or the call ran out of time.
_RETRYABLE: Final = frozenset(
    {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.RESOURCE_EXHAUSTED"}
)
_REJECTED: Final = "StatusCode.INVALID_ARGUMENT"
PROBE_TEXT: Final = "A wonderful story with great characters; I enjoyed every episode."


class EncoderError(Exception):
    """Base class; raised as such only for a malformed response (a contract mismatch, i.e. a bug)."""


class EncoderUnavailable(EncoderError):
    """The encoder could not answer now (server down, timeout, overload, model not ready or crashed)."""


class EncoderRejected(EncoderError):
    """Some inputs are invalid. ``rejected`` maps input index -> reason ("<code>: <detail>").

    ``partial`` holds the results of the whole call; the rows of rejected inputs are NaN.
    """

    def __init__(self, rejected: Mapping[int, str], partial: EncodeResult) -> None:
        first = min(rejected)
        super().__init__(f"{len(rejected)} of {len(partial)} texts rejected; text {first}: {rejected[first]}")
        self.rejected = dict(rejected)
        self.partial = partial


@dataclass(frozen=True)
class EncodeResult:
    embeddings: FloatArray  # [n, dim], unit L2 norm (dim = backbone hidden size, 384 for MiniLM)
    sentiment: FloatArray  # [n], in [0, 1]

    def __len__(self) -> int:
        return int(self.sentiment.shape[0])


class TextEncoder(Protocol):
    """What the stream worker and the API need from an encoder; tests pass fakes."""

    async def embed_and_score(self, texts: Sequence[str]) -> EncodeResult: ...


class TritonTarget(Protocol):
    """The part of ``llmrec.settings.TritonSettings`` the client reads (no import: no layering cycle)."""

    @property
    def grpc_url(self) -> str: ...

    model_name: str
    timeout_s: float
    retries: int


def _text_input(texts: Sequence[str]) -> Any:
    data = np.array([[text.encode("utf-8")] for text in texts], dtype=np.object_)
    tensor = grpcclient.InferInput(contract.INPUT_TEXT, list(data.shape), contract.INPUT_TEXT_DTYPE)
    tensor.set_data_from_numpy(data)
    return tensor


def _outputs() -> list[Any]:
    return [
        grpcclient.InferRequestedOutput(contract.OUTPUT_EMBEDDING),
        grpcclient.InferRequestedOutput(contract.OUTPUT_SENTIMENT),
    ]


def parse_result(result: Any, expected: int) -> EncodeResult:
    """Check a Triton response against the contract: shapes, finiteness, unit norm, range."""
    embeddings = result.as_numpy(contract.OUTPUT_EMBEDDING)
    sentiment = result.as_numpy(contract.OUTPUT_SENTIMENT)
    if embeddings is None or sentiment is None:
        raise EncoderError("response lacks an output tensor")
    if embeddings.ndim != 2 or embeddings.shape[0] != expected or embeddings.shape[1] == 0:
        raise EncoderError(f"EMBEDDING has shape {embeddings.shape}, expected [{expected}, dim]")
    if sentiment.shape != (expected, 1):
        raise EncoderError(f"SENTIMENT has shape {sentiment.shape}, expected [{expected}, 1]")
    scores = sentiment.reshape(-1)
    if not (np.isfinite(embeddings).all() and np.isfinite(scores).all()):
        raise EncoderError("response holds NaN or infinity")
    if (
        np.abs(np.linalg.norm(embeddings, axis=1) - 1.0).max() > 1e-3
        or scores.min() < 0.0
        or scores.max() > 1.0
    ):
        raise EncoderError("response breaks the contract (embedding norm != 1 or sentiment outside [0, 1])")
    return EncodeResult(
        embeddings=embeddings.astype(np.float32, copy=False), sentiment=scores.astype(np.float32)
    )


def check_inference(
    url: str, model_name: str = contract.DEFAULT_MODEL_NAME, timeout_s: float = 10.0
) -> EncodeResult:
    """Synchronous health check with a real inference; raises ``EncoderError`` subclasses with the cause.

    "Server ready" alone is not health: a crashed Python backend stub leaves the server ready and every
    request failing.
    """
    client = grpcclient.InferenceServerClient(url)
    try:
        if not client.is_server_ready(client_timeout=timeout_s):
            raise EncoderUnavailable(f"server at {url} is not ready")
        if not client.is_model_ready(model_name, client_timeout=timeout_s):
            raise EncoderUnavailable(f"model {model_name} is not ready")
        result = client.infer(
            model_name, [_text_input([PROBE_TEXT])], outputs=_outputs(), client_timeout=timeout_s
        )
        return parse_result(result, 1)
    except InferenceServerException as exc:
        raise EncoderUnavailable(f"probe inference failed: {exc.status()} {exc.message()}") from exc
    finally:
        client.close()


def channel_args() -> list[tuple[str, int]]:
    """tritonclient's default channel options plus a short reconnect backoff.

    gRPC's default reconnect backoff grows to 120 s, so after a Triton restart the channel could wait
    minutes before trying again while the server is already back; capped at 2 s, reviews resume within
    seconds of the restart.
    """
    keepalive = grpcclient.KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", int(keepalive.keepalive_permit_without_calls)),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]


class EncoderClient:
    """``TextEncoder`` over Triton gRPC (asyncio). Create and use it inside one event loop.

    ``timeout_s`` bounds every call; a call that fails with a retryable code is retried ``retries``
    times with exponential backoff (``backoff_s`` doubling, with jitter, capped at ``max_backoff_s``).
    ``max_in_flight`` caps concurrent requests so a burst cannot queue unbounded work in the server.
    """

    def __init__(
        self,
        url: str,
        model_name: str = contract.DEFAULT_MODEL_NAME,
        *,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.1,
        max_backoff_s: float = 2.0,
        max_in_flight: int = 128,
    ) -> None:
        self.url = url
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._limit = asyncio.Semaphore(max_in_flight)
        self._client: aioclient.InferenceServerClient | None = None

    @classmethod
    def from_settings(cls, triton: TritonTarget, **kwargs: Any) -> EncoderClient:
        return cls(
            triton.grpc_url, triton.model_name, timeout_s=triton.timeout_s, retries=triton.retries, **kwargs
        )

    def _grpc(self) -> aioclient.InferenceServerClient:
        # Created on first use so that the gRPC channel belongs to the running event loop.
        if self._client is None:
            self._client = aioclient.InferenceServerClient(self.url, channel_args=channel_args())
        return self._client

    async def _infer_once(self, text: str) -> EncodeResult:
        async with self._limit:
            result = await self._grpc().infer(
                self.model_name,
                [_text_input([text])],
                outputs=_outputs(),
                client_timeout=self.timeout_s,
                # The trace context (None when tracing is off): a Triton with OpenTelemetry tracing on
                # continues the trace inside the server.
                headers=tracing.inject({}) or None,
            )
        return parse_result(result, 1)

    async def _infer(self, text: str) -> EncodeResult:
        """One text, with retries; raises EncoderRejected-style ``_Rejected`` or EncoderUnavailable."""
        attempt = 0
        while True:
            try:
                return await asyncio.wait_for(self._infer_once(text), timeout=self.timeout_s + 1.0)
            except InferenceServerException as exc:
                status = str(exc.status())
                if status == _REJECTED:
                    raise _Rejected(str(exc.message())) from None
                failure = f"{status} {exc.message()}"
                retryable = status in _RETRYABLE
            except TimeoutError:
                failure, retryable = f"no answer within {self.timeout_s}s", True
            if not retryable or attempt >= self.retries:
                raise EncoderUnavailable(
                    f"{self.url} model {self.model_name}: {failure} (after {attempt + 1} tries)"
                )
            delay = min(self.max_backoff_s, self.backoff_s * 2**attempt)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            attempt += 1

    async def embed_and_score(self, texts: Sequence[str]) -> EncodeResult:
        """Embeddings [n, dim] and sentiment [n] for ``texts``, in order.

        Raises ``EncoderUnavailable`` if any text could not be answered for a transient reason (the
        whole call is worth retrying), else ``EncoderRejected`` if some texts are invalid.
        """
        if not texts:
            return EncodeResult(np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.float32))
        # One span for the call (its texts go as concurrent requests); an unavailable encoder marks it failed.
        with tracing.child_span(
            f"triton infer {self.model_name}",
            kind=tracing.SpanKind.CLIENT,
            attributes={
                "server.address": self.url,
                "llmrec.triton.model": self.model_name,
                "llmrec.triton.texts": len(texts),
            },
        ):
            return await self._embed_and_score(texts)

    async def _embed_and_score(self, texts: Sequence[str]) -> EncodeResult:
        outcomes = await asyncio.gather(*(self._infer(text) for text in texts), return_exceptions=True)
        unavailable = [o for o in outcomes if isinstance(o, EncoderUnavailable)]
        if unavailable:
            raise unavailable[0]
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, _Rejected):
                raise outcome
        good = [o for o in outcomes if isinstance(o, EncodeResult)]
        dim = good[0].embeddings.shape[1] if good else 0
        embeddings = np.full((len(texts), dim), np.nan, dtype=np.float32)
        sentiment = np.full(len(texts), np.nan, dtype=np.float32)
        rejected: dict[int, str] = {}
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, EncodeResult):
                if outcome.embeddings.shape[1] != dim:
                    raise EncoderError("responses disagree on the embedding size")
                embeddings[index] = outcome.embeddings[0]
                sentiment[index] = outcome.sentiment[0]
            else:
                rejected[index] = str(outcome)
        result = EncodeResult(embeddings=embeddings, sentiment=sentiment)
        if rejected:
            raise EncoderRejected(rejected, result)
        return result

    async def ready(self) -> bool:
        """Server and model ready and one real inference answered well-formed; never raises."""
        try:
            client = self._grpc()
            if not await client.is_server_ready(client_timeout=self.timeout_s):
                return False
            if not await client.is_model_ready(self.model_name, client_timeout=self.timeout_s):
                return False
            await self._infer_once(PROBE_TEXT)
        except Exception:  # any failure of the probe means "not ready"
            return False
        return True

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def __aenter__(self) -> EncoderClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _Rejected(Exception):
    """Internal: one text was refused by the server (collected into ``EncoderRejected``)."""


def encode_corpus(
    texts: Sequence[str],
    url: str,
    model_name: str = contract.DEFAULT_MODEL_NAME,
    *,
    batch_size: int = 256,
    timeout_s: float = 60.0,
    retries: int = 3,
    progress: bool = True,
) -> FloatArray:
    """Embeddings [n, dim] of a whole corpus (offline jobs such as the catalogue index), with a progress bar.

    Synchronous: runs its own event loop, so call it from plain code, not from a coroutine. Sends
    ``batch_size`` texts at a time as concurrent requests; a rejected text raises ``EncoderRejected``
    (clean the corpus first: every text must be non-empty UTF-8). The timeout is generous because a
    full batch queues behind the others on a small CPU.
    """

    async def run() -> FloatArray:
        parts: list[FloatArray] = []
        async with EncoderClient(
            url, model_name, timeout_s=timeout_s, retries=retries, max_in_flight=batch_size
        ) as client:
            with tqdm(total=len(texts), unit="text", desc="encode", disable=not progress) as bar:
                for start in range(0, len(texts), batch_size):
                    chunk = texts[start : start + batch_size]
                    try:
                        parts.append((await client.embed_and_score(chunk)).embeddings)
                    except EncoderRejected as exc:
                        raise EncoderRejected(
                            {start + index: reason for index, reason in exc.rejected.items()}, exc.partial
                        ) from None
                    bar.update(len(chunk))
        if not parts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(parts, axis=0)

    return asyncio.run(run())
