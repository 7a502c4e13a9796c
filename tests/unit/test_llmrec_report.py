"""The llmrec report's summary across data sets, on hand-made records."""

from __future__ import annotations

from typing import Any

import pytest

from research.llmrec_markdown import overview_lines
from research.llmrec_summary import gains


def record(dataset: str, model: str, seed: int, ndcg: float, mrr: float) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "protocol": "user_random_80_10_10",
        "model": model,
        "seed": seed,
        "metrics": {"ndcg@10": ndcg, "mrr": mrr},
    }


RECORDS = [
    record("d1", "ease", 42, 0.30, 0.50),
    record("d1", "ease", 43, 0.32, 0.52),
    record("d1", "pop", 42, 0.10, 0.20),
    record("d1", "llmrec", 42, 0.33, 0.50),
    record("d1", "llmrec", 43, 0.33, 0.54),
    record("d1", "llmrec-no-pref", 42, 0.20, 0.40),
    record("d2", "pop", 42, 0.10, 0.20),  # no llmrec: no row
]


def test_gains_compare_means_with_the_best_baseline() -> None:
    g = gains(RECORDS, "d1", "user_random_80_10_10")
    assert g["best_baseline"] == "ease"
    assert g["ndcg@10_gain"] == pytest.approx(0.33 / 0.31 - 1.0)
    assert g["mrr_gain"] == pytest.approx(0.52 / 0.51 - 1.0)


def test_overview_has_one_row_per_evaluated_data_set_and_protocol() -> None:
    lines = overview_lines(RECORDS)
    rows = [line for line in lines[2:] if line.startswith("| d")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[:10] == [
        "d1", "user_random_80_10_10", "42,43", "ease", "0.3100", "0.3300", "+6.5%",
        "0.5100", "0.5200", "+2.0%",
    ]  # fmt: skip
    assert cells[10:] == ["0.2000", "", ""]  # no-pref measured; no-lm and no-fusion not in the records
