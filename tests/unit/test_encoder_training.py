"""The encoder training pipeline's parts on a tiny random RoBERTa (hidden 32, 2 layers): no weights needed."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from encoder_triton.encoder import Encoder, EncoderOptions, version_layout
from encoder_triton.manifest import PROBE_TEXT, ExportMismatch, check_probe, read_manifest
from encoder_triton.training.backbones import encoder_of, lm_head, scratch_roberta, train_bpe_tokenizer
from encoder_triton.training.contrastive import info_nce, train_contrastive
from encoder_triton.training.corpus import Corpus, Pair
from encoder_triton.training.export import export_encoder, latest_version_dir, versions
from encoder_triton.training.mlm import mask_tokens, perplexity, tokenize, train_mlm
from encoder_triton.training.plots import smooth
from encoder_triton.training.presets import PAPER, PRESETS, TINY
from encoder_triton.training.retrieval import ranks_of_truth, retrieval_metrics
from llmrec.catalogue import Item
from tests.sample_reviews import review_texts
from tests.tiny_encoder import copy_repository, make_tiny_run

TEXTS = review_texts(40)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """A tiny model gains nothing from threads; on a busy machine their spin-waits cost seconds per step."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer() -> object:
    return train_bpe_tokenizer(TEXTS, TINY.scratch.vocab_size, 64)


def _model(tokenizer: object, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return scratch_roberta(tokenizer, TINY.scratch, 64)


def test_paper_preset_is_table_1() -> None:
    assert (PAPER.mlm.mask_fraction, PAPER.mlm.epochs, PAPER.mlm.batch_size, PAPER.mlm.lr) == (
        0.15,
        10,
        32,
        2e-5,
    )
    assert (PAPER.mlm.max_length, PAPER.mlm.warmup_steps, PAPER.mlm.weight_decay) == (512, 10_000, 0.01)
    c = PAPER.contrastive
    assert (c.epochs, c.batch_size, c.lr, c.max_length, c.warmup_steps, c.weight_decay) == (
        20,
        128,
        5e-5,
        256,
        1_000,
        0.1,
    )
    assert {"paper", "cpu-small", "tiny"} <= set(PRESETS)


def test_bpe_tokenizer_is_roberta_style(tokenizer: object) -> None:
    tok: object = tokenizer
    ids = tok("A quiet story", return_offsets_mapping=True)  # type: ignore[operator]
    assert ids["input_ids"][0] == tok.bos_token_id and ids["input_ids"][-1] == tok.eos_token_id  # type: ignore[attr-defined]
    assert 100 < len(tok) <= TINY.scratch.vocab_size  # type: ignore[arg-type]
    assert tok.mask_token == "<mask>"  # type: ignore[attr-defined]


def test_masking_is_seeded_and_spares_special_tokens(tokenizer: object) -> None:
    batch = tokenize(tokenizer, TEXTS[:8], 64)
    first = mask_tokens(batch, tokenizer, 0.15, torch.Generator().manual_seed(3))
    again = mask_tokens(batch, tokenizer, 0.15, torch.Generator().manual_seed(3))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    ids, labels = first
    chosen = labels != -100
    assert not bool((chosen & (batch["special_tokens_mask"] == 1)).any())
    assert not bool((chosen & (batch["attention_mask"] == 0)).any())
    candidates = int(((batch["attention_mask"] == 1) & (batch["special_tokens_mask"] == 0)).sum())
    assert 0.08 < int(chosen.sum()) / candidates < 0.22
    assert torch.equal(labels[chosen], batch["input_ids"][chosen])
    assert (ids[chosen] == tokenizer.mask_token_id).float().mean() > 0.6  # type: ignore[attr-defined]
    assert torch.equal(ids[~chosen], batch["input_ids"][~chosen])


def test_mlm_lowers_perplexity_and_reruns_identically(tokenizer: object) -> None:
    config = replace(TINY.mlm, steps=12, probe_steps=3, eval_every=6, lr=3e-3)
    results = []
    for _ in range(2):
        model = _model(tokenizer)
        torch.manual_seed(1)
        results.append(train_mlm(model, tokenizer, TEXTS[:32], TEXTS[32:], config, seed=5, progress=False))
    a, b = results
    assert a["history"]["train_loss"] == b["history"]["train_loss"]
    assert a["perplexity_adapted"] == b["perplexity_adapted"]
    assert a["history"]["phase"].count("probe") == 3 and a["history"]["phase"].count("adapt") == 12
    # A random model is near-uniform over the vocabulary; twelve steps on in-domain text must beat that.
    assert a["perplexity_base"] > a["perplexity_adapted"]
    assert math.isfinite(a["perplexity_adapted"]) and a["perplexity_adapted"] > 1.0


def test_probe_trains_the_head_only(tokenizer: object) -> None:
    model = _model(tokenizer)
    before = {n: p.detach().clone() for n, p in encoder_of(model).named_parameters()}
    config = replace(TINY.mlm, steps=1, probe_steps=2, lr=0.0)
    train_mlm(model, tokenizer, TEXTS[:16], TEXTS[16:20], config, seed=0, progress=False)
    after = dict(encoder_of(model).named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before)  # lr 0 in the adapt phase
    assert isinstance(lm_head(model), torch.nn.Module)


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size(tokenizer: object) -> None:
    model = _model(tokenizer)
    head = lm_head(model)
    with torch.no_grad():
        for p in head.parameters():
            p.zero_()
    assert perplexity(model, tokenizer, TEXTS[:4], TINY.mlm) == pytest.approx(len(tokenizer), rel=1e-4)  # type: ignore[arg-type]


def test_info_nce_prefers_the_diagonal_and_drops_false_negatives() -> None:
    eye = torch.eye(3)
    assert float(info_nce(eye, eye, 0.05)) < 1e-6
    keys = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]])
    same = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])
    # Rows 0 and 1 share an item: with the mask the duplicate column is not a negative.
    assert float(info_nce(keys, keys, 0.05, same)) < float(info_nce(keys, keys, 0.05))


def _corpus() -> Corpus:
    items = {
        i: Item(item_id=i, title=f"Show {i}", genres=("Drama",), synopsis=TEXTS[30 + i]) for i in range(6)
    }
    pairs = [Pair(TEXTS[i], i % 6) for i in range(24)]
    # Retrieval candidates are a subset; training pairs may name any catalogue item.
    candidates = {i: items[i] for i in range(2)}
    return Corpus("synthetic", [], [], [p.review for p in pairs], pairs, pairs[:2], candidates, [], items)


def test_contrastive_trains_deterministically(tokenizer: object) -> None:
    config = replace(TINY.contrastive, steps=3, batch_size=6)
    runs = []
    for _ in range(2):
        encoder = Encoder(
            encoder_of(_model(tokenizer)), tokenizer, EncoderOptions(max_length=64, torch_threads=None)
        )
        before = encoder.embed(["A quiet story"])
        runs.append((train_contrastive(encoder, _corpus(), config, seed=2, progress=False), before, encoder))
    (a, before, encoder), (b, _, _) = runs
    assert a["loss"] == b["loss"] and a["supervised_pairs"]
    assert all(math.isfinite(x) for x in a["loss"])
    assert not np.allclose(encoder.embed(["A quiet story"]), before)


def test_retrieval_ranks_hand_computed() -> None:
    similarity = np.array([[0.9, 0.1, 0.3], [0.5, 0.2, 0.8], [0.1, 0.1, 0.1]])
    ranks = ranks_of_truth(similarity, np.array([0, 1, 2]))
    assert ranks.tolist() == [1, 3, 3]  # a tie counts against the truth
    metrics = retrieval_metrics(ranks, 3)
    assert metrics["recall@1"] == pytest.approx(1 / 3)
    assert metrics["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 3) / 3)
    assert metrics["chance_recall@10"] == 1.0


def test_smooth_is_a_trailing_mean() -> None:
    assert smooth([1.0, 3.0, 5.0, 7.0], window=2).tolist() == [1.0, 2.0, 4.0, 6.0]


def test_export_writes_a_loadable_version_that_guards_its_weights(tmp_path: Path) -> None:
    run = make_tiny_run(tmp_path / "run")
    repository = copy_repository(tmp_path / "repo")
    target = export_encoder(run, repository)
    assert target.name == "2" and versions(repository) == [1, 2] and latest_version_dir(repository) == target
    assert (target / "model.py").read_text() == (repository / "llmrec_encoder" / "1" / "model.py").read_text()
    weights, head = version_layout(target)
    assert weights == target / "weights" and head == target / "sentiment"
    encoder = Encoder.from_version_dir(target)
    manifest = read_manifest(target)
    assert manifest is not None and manifest["dim"] == 32 and manifest["origin"] == "train-encoder"
    check_probe(manifest, encoder.embed([PROBE_TEXT]))
    result = encoder.encode(["Loved it.", "Dull."])
    assert result.embeddings.shape == (2, 32)
    assert result.sentiment.shape == (2,) and np.all((result.sentiment > 0) & (result.sentiment < 1))
    with pytest.raises(FileExistsError):
        export_encoder(run, repository, version=2)
    # Weights lost (they are not in git) or replaced: the version refuses to load.
    with pytest.raises(ExportMismatch):
        check_probe(manifest, np.roll(encoder.embed([PROBE_TEXT]), 1))
    shutil.rmtree(target / "weights")
    with pytest.raises(ExportMismatch, match="weights/ is missing"):
        Encoder.from_version_dir(target)
