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
import scipy.sparse as sp

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


def prune_rows(
    matrix: FloatMatrix | sp.spmatrix, m: int, *, by_magnitude: bool = False, block: int = 256
) -> sp.csr_matrix:
    """Each row's ``m`` largest entries (by value, or by absolute value with ``by_magnitude``) as a CSR
    matrix; zeros (and, by value, non-positive entries) are never kept. Row ``i`` of an item-item matrix
    is item ``i``'s neighbours. A dense input is read ``block`` rows at a time (no dense-sized copy)."""
    if sp.issparse(matrix):
        return _prune_sparse_rows(sp.csr_matrix(matrix, dtype=np.float32), m, by_magnitude)
    dense = np.asarray(matrix)
    n_rows, n_cols = dense.shape
    k = min(m, n_cols)
    parts: list[sp.csr_matrix] = []
    for start in range(0, n_rows, block):
        values = np.ascontiguousarray(dense[start : start + block], dtype=np.float32)
        key = np.abs(values) if by_magnitude else values
        top = np.argpartition(-key, k - 1, axis=1)[:, :k] if k < n_cols else np.argsort(-key, axis=1)
        kept = np.take_along_axis(values, top, axis=1)
        keep = kept != 0 if by_magnitude else kept > 0
        rows = np.repeat(np.arange(values.shape[0]), top.shape[1])[keep.ravel()]
        parts.append(
            sp.csr_matrix((kept[keep], (rows, top[keep])), shape=(values.shape[0], n_cols), dtype=np.float32)
        )
    out = sp.vstack(parts, format="csr") if parts else sp.csr_matrix((n_rows, n_cols), dtype=np.float32)
    out.sort_indices()
    return sp.csr_matrix(out)


def _prune_sparse_rows(csr: sp.csr_matrix, m: int, by_magnitude: bool) -> sp.csr_matrix:
    csr.eliminate_zeros()
    n_rows = csr.shape[0]
    keep_idx: list[npt.NDArray[np.int32]] = []
    keep_val: list[npt.NDArray[np.float32]] = []
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    for row in range(n_rows):
        lo, hi = csr.indptr[row], csr.indptr[row + 1]
        values, columns = csr.data[lo:hi], csr.indices[lo:hi]
        key = np.abs(values) if by_magnitude else values
        if not by_magnitude:
            positive = key > 0
            values, columns, key = values[positive], columns[positive], key[positive]
        if key.size > m:
            top = np.argpartition(-key, m - 1)[:m]
            values, columns = values[top], columns[top]
        order = np.argsort(columns)
        keep_idx.append(columns[order].astype(np.int32))
        keep_val.append(values[order].astype(np.float32))
        indptr[row + 1] = indptr[row] + columns.size
    data = np.concatenate(keep_val) if keep_val else np.zeros(0, np.float32)
    indices = np.concatenate(keep_idx) if keep_idx else np.zeros(0, np.int32)
    return sp.csr_matrix((data, indices, indptr), shape=csr.shape)
