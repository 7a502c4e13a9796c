"""The behaviour map: the language model's item vectors aligned with what users do.

Raw text vectors say what a title *is about*; two titles about the same thing need not share an audience.
The behaviour map ``W`` ([dim, dim]) is fitted so that a user's text profile predicts the items they
consume: with ``P`` the users' profiles (unit rows of ``binary history @ vectors``: the preference vector
without ratings or decay) and ``X`` the interacted-with items' vectors, centred,

    minimise  || R - P W X' ||^2  +  lam || W ||^2

over the training matrix ``R`` (users x interacted-with items). A user's score for any item ``j``,
interacted with or not, is ``(p W) . x_j``: one query vector per user (``behaviour_queries``) searched
by inner product in the same item index the API already has, and a brand-new item is placed by its text
alone. The items' similarity under the map is ``x_i' W x_j``: a learned metric in which an item's nearest
neighbours are the items its audience also consumes (``features.cold_neighbours``).

This is a bilinear (two-sided) ridge regression, a linear relative of the attribute-to-feature mappings of
Gantner et al. 2010 and of Sedhain et al. 2017 ("Low-rank linear cold-start recommendation from social
data", AAAI), fitted on co-consumption instead of onto factors: in closed form from two ``dim x dim``
eigendecompositions, never an item x item matrix, so its cost is linear in users and items.

Items with no interactions are left out of ``X``: their empty columns would teach the map that titles like
them are unwanted, when they are only unseen. ``lam`` is relative to the product of the two Gram matrices'
largest eigenvalues, so one value means the same at any data size.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatMatrix = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def text_profiles(history: npt.NDArray[np.floating], vectors: npt.NDArray[np.floating]) -> F64:
    """Unit rows of ``history @ vectors`` (zeros for an empty history)."""
    raw = np.asarray(history @ vectors, dtype=np.float64)
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    out: F64 = np.divide(raw, norms, out=np.zeros_like(raw), where=norms > 0)
    return out


def fit_behaviour_map(train: npt.NDArray[np.floating], vectors: FloatMatrix, reg: float) -> FloatMatrix:
    """``W`` [dim, dim] from a binary user x item ``train`` and the items' unit ``vectors`` [n, dim]; all
    zeros when nobody interacted with anything."""
    dim = vectors.shape[1]
    warm = np.asarray(train.sum(axis=0)).ravel() > 0
    if not warm.any():
        return np.zeros((dim, dim), dtype=np.float32)
    binary = (np.asarray(train[:, warm]) > 0).astype(np.float64)
    items = vectors[warm].astype(np.float64)
    items = items - items.mean(axis=0)
    profiles = text_profiles(binary, vectors[warm].astype(np.float64))
    # || R - P W X' ||^2 + lam ||W||^2 is solved in the eigenbases of P'P and X'X: with W = U Z V',
    # Z = (U' P' R X V) / (s_p s_x' + lam) elementwise.
    s_p, u = np.linalg.eigh(profiles.T @ profiles)
    s_x, v = np.linalg.eigh(items.T @ items)
    cross = profiles.T @ (binary @ items)
    lam = reg * max(float(s_p.max()), 1e-12) * max(float(s_x.max()), 1e-12)
    z = (u.T @ cross @ v) / (np.outer(np.maximum(s_p, 0.0), np.maximum(s_x, 0.0)) + lam)
    out: FloatMatrix = (u @ z @ v.T).astype(np.float32)
    return out


def behaviour_queries(preference: FloatMatrix, behaviour: FloatMatrix) -> FloatMatrix:
    """[b, dim] each user's query ``p W``: its inner product with an item's vector is the user's
    behaviour score for that item (up to a per-user constant from the centring, which no ranking sees)."""
    out: FloatMatrix = np.ascontiguousarray(preference @ behaviour, dtype=np.float32)
    return out
