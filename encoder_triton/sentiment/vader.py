"""The VADER lexicon baseline: compound score in [-1, 1] mapped to [0, 1] as (compound + 1) / 2."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from tqdm import tqdm
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer


def vader_scores(texts: Sequence[str], progress: bool = False) -> npt.NDArray[np.float32]:
    analyser = SentimentIntensityAnalyzer()
    items: Sequence[str] = texts
    if progress:
        items = tqdm(texts, desc="VADER", unit="text")
    out = [(analyser.polarity_scores(text)["compound"] + 1.0) / 2.0 for text in items]
    return np.asarray(out, dtype=np.float32)
