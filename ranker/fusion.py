"""The first ("plain") fusion ranker and the human-readable reasons behind each recommendation.

Plain fusion scores a candidate item for a user as

    score = SIMILARITY_WEIGHT * cos(user_vector, item_vector) + POPULARITY_WEIGHT * popularity_prior(item)

``popularity_prior`` is ``log(1 + members) / log(1 + max members in the catalogue)``, in [0, 1]: the log
because MAL member counts span five orders of magnitude, and dividing by the catalogue-wide maximum (not
the candidates') keeps the prior of an item the same in every response.

The learned fusion ranker (pairwise hinge loss over richer features) replaces this behind the ``Ranker``
Protocol; callers only see ``score(user_vector, candidates)``.

Example:
    >>> import numpy as np
    >>> prior = popularity_prior(np.array([0, 9, 99]))
    >>> [round(float(p), 2) for p in prior]
    [0.0, 0.5, 1.0]
    >>> fused = plain_fusion(np.array([0.5, 0.5, 0.4], np.float32), prior)
    >>> [round(float(s), 3) for s in fused]
    [0.5, 0.55, 0.5]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]

# Cosine similarity decides; popularity only breaks near-ties and nudges towards well-known titles. With
# 0.1 the most popular title gains at most 0.1, about the gap between a user's 1st and 20th nearest items
# in all-MiniLM-L6-v2's space, so a clearly closer niche title still wins.
SIMILARITY_WEIGHT = 1.0
POPULARITY_WEIGHT = 0.1
PLAIN_FUSION_VERSION = "plain-fusion-1"


def popularity_prior(members: npt.ArrayLike) -> FloatArray:
    """``log1p(members) / log1p(max(members))`` in [0, 1]; all zeros when nobody is a member of anything.
    Negative or missing counts (NaN) count as 0."""
    counts = np.nan_to_num(np.asarray(members, dtype=np.float64), nan=0.0)
    logs = np.log1p(np.clip(counts, 0.0, None))
    top = float(logs.max()) if logs.size else 0.0
    if top <= 0.0:
        return np.zeros(logs.shape, dtype=np.float32)
    return (logs / top).astype(np.float32)


def plain_fusion(
    similarity: npt.ArrayLike,
    popularity: npt.ArrayLike,
    similarity_weight: float = SIMILARITY_WEIGHT,
    popularity_weight: float = POPULARITY_WEIGHT,
) -> FloatArray:
    """Elementwise weighted sum of cosine similarities and popularity priors (same shapes)."""
    sim = np.asarray(similarity, dtype=np.float32)
    pop = np.asarray(popularity, dtype=np.float32)
    if sim.shape != pop.shape:
        raise ValueError(f"similarity {sim.shape} and popularity {pop.shape} differ in shape")
    return (similarity_weight * sim + popularity_weight * pop).astype(np.float32)


@dataclass(frozen=True)
class Candidates:
    """Items retrieved for one user, aligned row by row.

    ``similarity`` is the cosine between the user vector and each item (FAISS's inner product);
    ``popularity`` is each item's ``popularity_prior``; ``vectors`` are the items' unit embeddings.
    """

    item_ids: IdArray
    similarity: FloatArray
    popularity: FloatArray
    vectors: FloatArray

    def __len__(self) -> int:
        return len(self.item_ids)


class Ranker(Protocol):
    """Scores candidates for one user; higher is better. Implementations must be pure and thread-safe."""

    @property
    def version(self) -> str: ...

    def score(self, user_vector: FloatArray, candidates: Candidates) -> FloatArray: ...


@dataclass(frozen=True)
class PlainFusionRanker:
    similarity_weight: float = SIMILARITY_WEIGHT
    popularity_weight: float = POPULARITY_WEIGHT

    @property
    def version(self) -> str:
        return PLAIN_FUSION_VERSION

    def score(self, user_vector: FloatArray, candidates: Candidates) -> FloatArray:
        return plain_fusion(
            candidates.similarity, candidates.popularity, self.similarity_weight, self.popularity_weight
        )


def top_k(scores: npt.ArrayLike, k: int) -> IdArray:
    """Positions of the ``k`` highest scores, best first; ties keep the earlier position (stable)."""
    values = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-values, kind="stable")
    return order[: max(0, k)].astype(np.int64)


# -- explanations -------------------------------------------------------------------------------------------


class Interaction(StrEnum):
    """The strongest kind of evidence a user gave about an item, in the order reasons prefer them."""

    RATED = "rated"
    REVIEWED = "reviewed"
    COMPLETED = "completed"
    WATCHED = "watched"


@dataclass(frozen=True)
class Evidence:
    """One item the user interacted with, as an explanation needs it."""

    item_id: int
    title: str
    strength: float
    interaction: Interaction
    rating: float | None = None


def _format_rating(rating: float) -> str:
    return f"{rating:g}" if float(rating).is_integer() else f"{rating:.1f}"


def reason_from(evidence: Evidence) -> str:
    """``like Steins;Gate, which you rated 9`` and its review / completion / watch variants."""
    if evidence.interaction is Interaction.RATED and evidence.rating is not None:
        return f"like {evidence.title}, which you rated {_format_rating(evidence.rating)}"
    if evidence.interaction is Interaction.RATED:
        return f"like {evidence.title}, which you rated"
    return f"like {evidence.title}, which you {evidence.interaction.value}"


def cold_start_reason(item_genres: Sequence[str], requested_genres: Sequence[str] = ()) -> str:
    """``popular with Action fans`` for the first requested genre the item has, else the site-wide line."""
    wanted = {g.casefold() for g in requested_genres}
    for genre in item_genres:
        if genre.casefold() in wanted:
            return f"popular with {genre} fans"
    return "popular on MyAnimeList"


# When a user only has negative evidence, nothing they liked explains the pick; say where it came from.
PROFILE_REASON = "close to your taste profile"


def best_evidence(
    item_ids: npt.ArrayLike,
    item_vectors: npt.ArrayLike,
    seen_ids: npt.ArrayLike,
    seen_vectors: npt.ArrayLike,
    seen_strengths: npt.ArrayLike,
) -> IdArray:
    """For each recommended item, the position of the seen item maximising ``cos * strength``, or -1.

    Only pairs with positive similarity and positive strength count (a disliked item never explains a
    recommendation), and an item never explains itself (``include_seen`` answers).

    Shapes: ``item_vectors [k, dim]``, ``seen_vectors [s, dim]``, ``seen_strengths [s]``; returns ``[k]``.
    """
    rec_ids = np.asarray(item_ids, dtype=np.int64).reshape(-1)
    seen = np.asarray(seen_ids, dtype=np.int64).reshape(-1)
    if rec_ids.size == 0 or seen.size == 0:
        return np.full(rec_ids.size, -1, dtype=np.int64)
    sims = np.asarray(item_vectors, dtype=np.float32) @ np.asarray(seen_vectors, dtype=np.float32).T
    strengths = np.asarray(seen_strengths, dtype=np.float32).reshape(1, -1)
    support = np.where((sims > 0.0) & (strengths > 0.0), sims * strengths, 0.0)
    support[rec_ids[:, None] == seen[None, :]] = 0.0
    best = np.argmax(support, axis=1).astype(np.int64)
    return np.where(support[np.arange(len(rec_ids)), best] > 0.0, best, -1).astype(np.int64)


def explain(
    item_ids: npt.ArrayLike,
    item_vectors: npt.ArrayLike,
    evidence: Sequence[Evidence],
    evidence_vectors: npt.ArrayLike,
) -> list[str]:
    """One reason per recommended item from the user's seen items (``evidence`` aligned with
    ``evidence_vectors``); ``PROFILE_REASON`` where no positive evidence is similar."""
    ids = np.asarray(item_ids, dtype=np.int64).reshape(-1)
    best = best_evidence(
        ids,
        item_vectors,
        [e.item_id for e in evidence],
        evidence_vectors,
        [e.strength for e in evidence],
    )
    return [reason_from(evidence[int(b)]) if b >= 0 else PROFILE_REASON for b in best]
