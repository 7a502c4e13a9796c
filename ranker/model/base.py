"""The contract every recommender implements, the served llmrec model and the research baselines alike.

``fit(train)`` takes the dense binary user x item training matrix (and optionally a ``FitContext`` with side
information); ``score(users)`` returns a dense ``(len(users), n_items)`` float32 score matrix, higher =
better; ``score_history`` folds in users absent from training. Scores are not masked: callers remove each
user's known items.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np
import numpy.typing as npt

from ranker.interactions import IntArray, InteractionData

Matrix = npt.NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class FitContext:
    """What a model may use beyond the binary training matrix. The evaluator fills every field; a model that
    needs one that is missing raises. ``sequences[u]`` holds user ``u``'s training item indices oldest first
    (time order where the data has timestamps, else the source's row order); ``item_features`` is an
    item x dim array of text embeddings (rows of zeros for items without text); ``data`` and ``train_rows``
    give access to side columns (ratings, timestamps, raw ids) of the training interactions."""

    sequences: Sequence[IntArray] | None = None
    item_features: npt.NDArray[np.float32] | None = None
    data: InteractionData | None = None
    train_rows: IntArray | None = None


class Recommender(ABC):
    name: str = "base"
    # Whether the model reads a user's history when it scores (the sequential models) rather than keeping
    # what it learnt per user. Such a model is tested on every item known before the test part (train and
    # validation) as its input, as RecBole feeds a sequential model the validation item when testing; the
    # other models score from what they were fitted on.
    reads_history_at_test: bool = False
    # Whether the model's ranking depends on which items may be ranked (a two-stage model generates its
    # candidates among them, as the API does for a filtered request): the evaluator then scores it with
    # ``score_within`` and the items of the ranking. Scoring every item and dropping the others afterwards
    # is the same thing for any model that scores each item on its own.
    ranks_within_allowed: bool = False

    def __init__(self) -> None:
        self._n_items: int | None = None
        self._context = FitContext()

    @property
    def n_items(self) -> int:
        if self._n_items is None:
            raise RuntimeError(f"{self.name} is not fitted")
        return self._n_items

    def fit(self, train: Matrix, context: FitContext | None = None) -> Self:
        if train.ndim != 2:
            raise ValueError("train must be a 2-D user x item matrix")
        self._n_items = int(train.shape[1])
        self._context = context or FitContext()
        self._fit(np.asarray(train, dtype=np.float32))
        return self

    def score(self, users: IntArray) -> Matrix:
        scores = self._score(np.asarray(users, dtype=np.int64))
        return np.asarray(scores, dtype=np.float32)

    def score_within(self, users: IntArray, allowed: npt.NDArray[np.bool_]) -> Matrix:
        """Scores of ``users`` when only the items ``allowed`` ([len(users), n_items]) may be ranked; only
        the allowed items' scores are meaningful. By default ``score``."""
        return self.score(users)

    def score_history(self, history: Matrix, sequences: Sequence[IntArray] | None = None) -> Matrix:
        """Fold-in: scores for users unseen in training, one row of ``history`` (binary, n x items) each;
        ``sequences`` gives the same items in time order for the sequential models."""
        if history.ndim != 2 or history.shape[1] != self.n_items:
            raise ValueError(f"history must be n x {self.n_items}")
        scores = self._score_history(np.asarray(history, dtype=np.float32), sequences)
        return np.asarray(scores, dtype=np.float32)

    def _score_history(self, history: Matrix, sequences: Sequence[IntArray] | None) -> Matrix:
        raise NotImplementedError(f"{self.name} cannot fold in new users")

    @abstractmethod
    def _fit(self, train: Matrix) -> None: ...

    @abstractmethod
    def _score(self, users: IntArray) -> Matrix: ...
