"""EASE (Steck 2019): closed-form item-item ridge regression with a zero diagonal.

``B = I - P / diag(P)`` (off-diagonal ``-P_ij / P_jj``) where ``P = (X^T X + reg I)^-1``: column ``j`` of
``B`` is the ridge regression of item ``j``'s column of the binary training matrix ``X`` on the other items'
columns. It is written once, here: the llmrec model's collaborative branch (``features.ItemSide``) and the
harness's EASE baseline (``research.baselines.EASE``) both call ``ease_matrix``, so the headline comparison
of llmrec against EASE compares the model against its own collaborative branch.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatMatrix = npt.NDArray[np.float32]


def ease_matrix(train: FloatMatrix, reg: float) -> FloatMatrix:
    """EASE's item x item matrix ``B`` for the user x item training matrix ``train``, diagonal zeroed.
    The inverse is taken in float64: a Gram matrix of thousands of items is poorly conditioned for a small
    ``reg``."""
    gram = train.T.astype(np.float64) @ train.astype(np.float64)
    gram[np.diag_indices_from(gram)] += reg
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)
