"""The in-process encoder: text rules, sentiment math, and the real offline MiniLM on real MAL reviews."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from encoder_triton import contract
from encoder_triton.encoder import (
    DEFAULT_HEAD_TOKENS,
    DEFAULT_MAX_LENGTH,
    Encoder,
    EncoderOptions,
    InvalidText,
    anchor_sentiment,
    decode_text,
    head_tail_cut,
    normalise_text,
    validate_text,
)
from llmrec.settings import TritonSettings
from tests.sample_reviews import review_texts

CONFIG = TritonSettings().repository / contract.DEFAULT_MODEL_NAME / "config.pbtxt"


# --------------------------------------------------------------------------------------------------
# pure text rules


def test_normalise_text_collapses_whitespace_and_controls() -> None:
    assert normalise_text("  Great\t\tshow!\r\n\n10/10\x00 ") == "Great show! 10/10"


def test_normalise_text_is_nfc() -> None:
    decomposed = "Poke\u0301mon"  # e + combining acute accent
    assert normalise_text(decomposed) == "Pok\u00e9mon"
    assert normalise_text(normalise_text(decomposed)) == normalise_text(decomposed)


@pytest.mark.parametrize("text", ["", "   ", "\n\t\r", "\x00\x01"])
def test_validate_text_rejects_empty(text: str) -> None:
    with pytest.raises(InvalidText) as info:
        validate_text(text)
    assert info.value.reason == contract.REJECT_EMPTY_TEXT


def test_decode_text_rejects_invalid_utf8() -> None:
    with pytest.raises(InvalidText) as info:
        decode_text(b"good start \xff\xfe bad bytes")
    assert info.value.reason == contract.REJECT_INVALID_UTF8
    assert decode_text("  Très bien ".encode()) == "Très bien"


def test_head_tail_cut_keeps_short_texts_and_both_ends_of_long_ones() -> None:
    text = "a b c d e f g h"
    offsets = [(i * 2, i * 2 + 1) for i in range(8)]
    assert head_tail_cut(text, offsets, budget=8, head=2) == text
    assert head_tail_cut(text, offsets, budget=4, head=1) == "a f g h"
    assert head_tail_cut(text, offsets, budget=4, head=0) == "e f g h"
    assert head_tail_cut(text, offsets, budget=4, head=4) == "a b c d"


# --------------------------------------------------------------------------------------------------
# sentiment math


def test_anchor_sentiment_is_a_bounded_monotone_score() -> None:
    positive = np.array([[1.0, 0.0]], dtype=np.float32)
    negative = np.array([[0.0, 1.0]], dtype=np.float32)
    angles = np.linspace(0, np.pi / 2, 7)
    embeddings = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    scores = anchor_sentiment(embeddings, positive, negative, temperature=0.1, bias=0.0)
    assert scores.dtype == np.float32
    assert np.all((scores >= 0) & (scores <= 1))
    assert np.all(np.diff(scores) < 0), "closer to the negative anchor must score lower"
    assert scores[3] == pytest.approx(0.5, abs=1e-6), "equidistant means 0.5 when the bias is 0"
    with pytest.raises(ValueError):
        anchor_sentiment(embeddings, positive, negative, temperature=0.0)


# --------------------------------------------------------------------------------------------------
# the real model


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder.from_pretrained()


def _reviews(keep: int, low: int, high: int) -> list[str]:
    return review_texts(keep, low, high)


def test_embeddings_are_unit_norm_with_the_backbone_width(encoder: Encoder) -> None:
    texts = ["Loved it.", "A slow first arc, but the finale pays off.", *_reviews(2, 1, 10)]
    result = encoder.encode(texts)
    assert encoder.dim == 384
    assert result.embeddings.shape == (len(texts), 384)
    assert result.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, atol=1e-5)
    assert result.sentiment.shape == (len(texts),)
    assert np.all((result.sentiment >= 0) & (result.sentiment <= 1))


def test_encoding_is_deterministic_and_independent_of_batching(encoder: Encoder) -> None:
    texts = [*_reviews(3, 8, 10), "Short one.", "Another, slightly longer, short review of a show."]
    batched = encoder.encode(texts)
    again = encoder.encode(texts)
    np.testing.assert_array_equal(batched.embeddings, again.embeddings)
    one_by_one = [encoder.encode([text]) for text in texts]
    np.testing.assert_allclose(
        np.concatenate([r.embeddings for r in one_by_one]), batched.embeddings, atol=1e-5
    )
    np.testing.assert_allclose(
        np.concatenate([r.sentiment for r in one_by_one]), batched.sentiment, atol=1e-5
    )


def test_positive_reviews_score_higher_than_negative_ones(encoder: Encoder) -> None:
    """Real MAL reviews: the first ten scored 10/10 against the first ten scored 1 or 2 (sample order)."""
    loved = encoder.encode(_reviews(10, 10, 10)).sentiment
    hated = encoder.encode(_reviews(10, 1, 2)).sentiment
    assert loved.mean() > hated.mean() + 0.1
    pairs_in_order = float((loved[:, None] > hated[None, :]).mean())
    assert pairs_in_order >= 0.7, f"only {pairs_in_order:.0%} of (loved, hated) pairs ordered correctly"


def test_clear_statements_land_on_the_right_side(encoder: Encoder) -> None:
    scores = encoder.encode(
        [
            "An absolute masterpiece. The best anime I have seen in years, I loved every minute.",
            "Boring and pointless. I wasted twelve episodes on this and regret every one.",
        ]
    ).sentiment
    assert scores[0] > 0.8
    assert scores[1] < 0.2


def test_encode_names_the_first_invalid_text(encoder: Encoder) -> None:
    with pytest.raises(InvalidText, match="text 1") as info:
        encoder.encode(["fine", "   ", "also fine"])
    assert info.value.reason == contract.REJECT_EMPTY_TEXT


def test_long_texts_keep_head_and_tail_within_max_length(encoder: Encoder) -> None:
    long = "Opening premise. " + "filler words " * 400 + "Verdict: a wonderful show, ten out of ten."
    (fitted,) = encoder._fit([long])
    assert fitted.startswith("Opening premise.")
    assert fitted.endswith("ten out of ten.")
    ids = encoder.tokenizer(fitted, truncation=True, max_length=DEFAULT_MAX_LENGTH)["input_ids"]
    assert len(ids) <= DEFAULT_MAX_LENGTH
    plain = Encoder(encoder.backbone, encoder.tokenizer, EncoderOptions(head_tokens=None))
    assert plain._fit([long]) == [long]


# --------------------------------------------------------------------------------------------------
# the Triton config agrees with the contract and with the in-process defaults


def test_config_pbtxt_matches_the_contract() -> None:
    config = text_format.Parse(CONFIG.read_text(), model_config_pb2.ModelConfig())
    assert config.name == contract.DEFAULT_MODEL_NAME == TritonSettings().model_name == CONFIG.parent.name
    assert config.backend == "python"
    assert config.max_batch_size == contract.MAX_BATCH_SIZE
    dtype = {"BYTES": "TYPE_STRING", "FP32": "TYPE_FP32"}
    (text,) = config.input
    assert (text.name, model_config_pb2.DataType.Name(text.data_type), tuple(text.dims)) == (
        contract.INPUT_TEXT,
        dtype[contract.INPUT_TEXT_DTYPE],
        contract.INPUT_TEXT_DIMS,
    )
    outputs = {o.name: (model_config_pb2.DataType.Name(o.data_type), tuple(o.dims)) for o in config.output}
    assert outputs == {
        contract.OUTPUT_EMBEDDING: (dtype[contract.OUTPUT_EMBEDDING_DTYPE], contract.OUTPUT_EMBEDDING_DIMS),
        contract.OUTPUT_SENTIMENT: (dtype[contract.OUTPUT_SENTIMENT_DTYPE], contract.OUTPUT_SENTIMENT_DIMS),
    }
    assert config.HasField("dynamic_batching")
    assert 0 < config.dynamic_batching.max_queue_delay_microseconds <= 10_000
    params = {key: value.string_value for key, value in config.parameters.items()}
    # Triton must compute what the in-process default encoder computes.
    assert int(params["max_length"]) == EncoderOptions().max_length == DEFAULT_MAX_LENGTH
    assert int(params["head_tokens"]) == EncoderOptions().head_tokens == DEFAULT_HEAD_TOKENS
