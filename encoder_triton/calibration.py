"""Fit the anchor sentiment's bias and temperature for a backbone, from reviews labelled good or bad.

The defaults in ``encoder.py`` came from this for all-MiniLM-L6-v2 (then rounded). A new backbone places
texts differently relative to the anchors, so run it again and put the printed pair in ``EncoderOptions``:

    python -m encoder_triton.calibration ../shared/data/mal-reviews-matthew1906 [--model PATH]

The labels are the MAL review tags (Recommended / Mixed Feelings / Not Recommended) of the Matthew1906
scrape: ``;``-separated files ``reviews_*.csv`` without a header, text in column 6 and tag in column 7.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from encoder_triton.encoder import Encoder, FloatArray, validate_text


@dataclass(frozen=True)
class Calibration:
    bias: float
    temperature: float
    auc: float  # how well the raw margin separates good from bad reviews (0.5: not at all)


def fit(good: FloatArray, bad: FloatArray, target: float = 0.73) -> Calibration:
    """Centre the score between the two medians; scale so the median good review scores ``target``."""
    good_median, bad_median = float(np.median(good)), float(np.median(bad))
    if good_median <= bad_median:
        raise ValueError("good reviews are not closer to the positive anchors than bad ones")
    bias = (good_median + bad_median) / 2
    temperature = (good_median - bias) / math.log(target / (1 - target))
    auc = float((good[:, None] > bad[None, :]).mean() + 0.5 * (good[:, None] == bad[None, :]).mean())
    return Calibration(bias=bias, temperature=temperature, auc=auc)


def margins(encoder: Encoder, texts: Sequence[str]) -> FloatArray:
    """Mean cosine to the positive anchors minus mean cosine to the negative ones (before the logistic)."""
    embeddings = encoder.embed([validate_text(text) for text in texts])
    margin: FloatArray = (embeddings @ encoder._positive.T).mean(axis=1) - (
        embeddings @ encoder._negative.T
    ).mean(axis=1)
    return margin


def load_tagged_reviews(folder: Path) -> dict[str, list[str]]:
    csv.field_size_limit(sys.maxsize)
    by_tag: dict[str, list[str]] = {"good": [], "bad": []}
    for path in sorted(folder.glob("reviews_*.csv")):
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.reader(handle, delimiter=";"):
                if len(row) >= 7 and row[5].strip():
                    tag = row[6].strip()
                    if tag == "Recommended":
                        by_tag["good"].append(row[5])
                    elif tag == "Not Recommended":
                        by_tag["bad"].append(row[5])
    return by_tag


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("reviews", type=Path, help="folder with the Matthew1906 reviews_*.csv files")
    parser.add_argument("--model", type=Path, default=None, help="local Hugging Face model folder")
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    reviews = load_tagged_reviews(args.reviews)
    rng = random.Random(args.seed)
    encoder = Encoder.from_pretrained(args.model, device=None)
    good = margins(encoder, rng.sample(reviews["good"], min(args.per_class, len(reviews["good"]))))
    bad = margins(encoder, rng.sample(reviews["bad"], min(args.per_class, len(reviews["bad"]))))
    result = fit(good, bad)
    print(f"bias={result.bias:.4f} temperature={result.temperature:.4f} margin AUC={result.auc:.3f}")
    for name, values in (("good", good), ("bad", bad)):
        deciles = np.percentile(values, [10, 50, 90])
        scores = 1 / (1 + np.exp(-(deciles - result.bias) / result.temperature))
        print(f"{name}: margin deciles 10/50/90 = {np.round(deciles, 3)} -> scores {np.round(scores, 2)}")


if __name__ == "__main__":
    main()
