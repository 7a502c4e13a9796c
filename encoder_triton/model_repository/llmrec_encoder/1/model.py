"""Triton Python backend for llmrec_encoder: decode requests -> encoder_triton.encoder -> responses.

Deliberately thin: the model, the text rules and the tensor names live in the ``encoder_triton``
package, which must be importable in the server's Python environment (the project installed there; see
encoder_triton/README.md). Weights come from ``weights/`` beside this file when present (what
``llmrec export-encoder`` writes), else from the offline all-MiniLM-L6-v2 package; sentiment from the learned
head in ``sentiment/`` when present, else from the anchor sentences. ``export.json`` (when present) pins
what the exporter saw: the model refuses to load if its weights compute something else.

Every request gets exactly one response, in order. A request with an invalid text gets its own
INVALID_ARG error while the rest of the batch is answered; a failure of the model itself fails only
the requests that reached it, and the stub process stays up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from encoder_triton import contract
from encoder_triton.encoder import (
    DEFAULT_HEAD_TOKENS,
    Encoder,
    EncoderOptions,
    InvalidText,
    decode_text,
    version_layout,
)


def _parameters(model_config: dict[str, Any]) -> dict[str, str]:
    return {key: value["string_value"] for key, value in model_config.get("parameters", {}).items()}


def _device(args: dict[str, str], requested: str) -> str:
    """``auto``: a KIND_GPU instance runs on its own GPU, a KIND_CPU instance on the CPU."""
    if requested != "auto":
        return requested
    if args["model_instance_kind"] == "GPU":
        if torch.cuda.is_available():
            return f"cuda:{args['model_instance_device_id']}"
        pb_utils.Logger.log_warn("KIND_GPU instance but torch sees no GPU: running on the CPU")
    return "cpu"


def _invalid(reason: str, detail: str) -> pb_utils.InferenceResponse:
    return pb_utils.InferenceResponse(
        output_tensors=[], error=pb_utils.TritonError(f"{reason}: {detail}", pb_utils.TritonError.INVALID_ARG)
    )


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = _parameters(config)
        threads = params.get("torch_threads", "1")
        head = params.get("head_tokens", str(DEFAULT_HEAD_TOKENS))
        options = EncoderOptions(
            max_length=int(params.get("max_length", "128")),
            head_tokens=None if head == "none" else int(head),
            batch_size=int(config.get("max_batch_size") or contract.MAX_BATCH_SIZE),
            torch_threads=None if threads == "default" else int(threads),
        )
        version_dir = Path(args["model_repository"]) / args["model_version"]
        path, head_dir = version_layout(version_dir)
        device = _device(args, params.get("device", "auto"))
        # Refuses (ExportMismatch) a version whose weights are not the exported ones (see manifest.py).
        self.encoder = Encoder.from_version_dir(version_dir, options=options, device=device)
        pb_utils.Logger.log_info(
            f"llmrec_encoder loaded weights={path} sentiment={head_dir or 'anchors'} device={device} "
            f"dim={self.encoder.dim} max_length={options.max_length} "
            f"torch_threads={torch.get_num_threads()} numpy={np.__version__}"
        )

    def _texts(self, request: pb_utils.InferenceRequest) -> list[str]:
        tensor = pb_utils.get_input_tensor_by_name(request, contract.INPUT_TEXT)
        if tensor is None:
            raise InvalidText(contract.REJECT_BAD_SHAPE, f"input {contract.INPUT_TEXT} is missing")
        values = tensor.as_numpy().reshape(-1)
        if values.size == 0:
            raise InvalidText(contract.REJECT_BAD_SHAPE, "request holds no text")
        return [decode_text(bytes(value)) for value in values]

    def execute(self, requests: list[pb_utils.InferenceRequest]) -> list[pb_utils.InferenceResponse]:
        responses: list[pb_utils.InferenceResponse | None] = [None] * len(requests)
        texts: list[str] = []
        spans: list[tuple[int, int, int]] = []  # (request index, first text, end)
        for index, request in enumerate(requests):
            try:
                decoded = self._texts(request)
            except InvalidText as exc:
                responses[index] = _invalid(exc.reason, exc.detail)
                continue
            spans.append((index, len(texts), len(texts) + len(decoded)))
            texts.extend(decoded)
        if spans:
            try:
                result = self.encoder.encode(texts)
            except Exception as exc:  # the stub must survive; only these requests fail
                pb_utils.Logger.log_error(f"llmrec_encoder batch of {len(texts)} failed: {exc!r}")
                error = pb_utils.TritonError(f"encoder failed: {exc}", pb_utils.TritonError.INTERNAL)
                for index, _, _ in spans:
                    responses[index] = pb_utils.InferenceResponse(output_tensors=[], error=error)
            else:
                sentiment = result.sentiment.reshape(-1, 1)
                for index, start, end in spans:
                    responses[index] = pb_utils.InferenceResponse(
                        output_tensors=[
                            pb_utils.Tensor(contract.OUTPUT_EMBEDDING, result.embeddings[start:end]),
                            pb_utils.Tensor(contract.OUTPUT_SENTIMENT, sentiment[start:end]),
                        ]
                    )
        return responses  # every slot was filled above: one response per request, in order

    def finalize(self) -> None:
        self.encoder = None  # type: ignore[assignment]
