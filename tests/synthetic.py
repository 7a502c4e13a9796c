"""Synthetic test data: item embeddings where genre means closeness, and users written into the in-memory
store (``llmrec.store.fake.FakeStore``) with the real preference math.

Used by the unit tests (no database) and by the integration tests (synthetic vectors over the real sample
catalogue, so the API is tested without the encoder).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from llmrec.events.schema import EventType, WatchStatus
from llmrec.preference_state import PreferenceState
from llmrec.store.fake import FakeStore
from llmrec.store.interface import LedgerEntry, StoredProfile
from ranker.preferences import Contribution, DecayPolicy, apply_contributions

FloatArray = npt.NDArray[np.float32]


def genre_embeddings(
    genres_per_item: Sequence[Sequence[str]], dim: int = 32, noise: float = 0.3, seed: int = 0
) -> FloatArray:
    """Unit vectors where items sharing genres are close: the sum of one random direction per genre plus
    noise. Stands in for the encoder so that "likes Sci-Fi" predictably means "gets Sci-Fi"."""
    rng = np.random.default_rng(seed)
    names = sorted({g for genres in genres_per_item for g in genres})
    basis = {g: rng.standard_normal(dim) for g in names}
    rows = []
    for genres in genres_per_item:
        vector = sum((basis[g] for g in genres), np.zeros(dim)) + noise * rng.standard_normal(dim)
        rows.append(vector / np.linalg.norm(vector))
    return np.asarray(rows, dtype=np.float32)


@dataclass(frozen=True)
class Interaction:
    """One thing a test user did: ``strength`` as the preference model would compute it. A rating when
    ``rating`` is given, else a watch event unless ``event_type`` says otherwise."""

    item_id: int  # the item's key (``llmrec.item_ids.item_key``), as the ledger and the index hold it
    strength: float
    time: datetime
    rating: float | None = None
    event_type: EventType | None = None
    status: WatchStatus | None = None

    @property
    def kind(self) -> EventType:
        if self.event_type is not None:
            return self.event_type
        return EventType.RATING if self.rating is not None else EventType.WATCH


def add_user(
    store: FakeStore,
    user_id: str,
    interactions: Iterable[Interaction],
    vectors: Mapping[int, FloatArray],
    decay: DecayPolicy | None = None,
) -> StoredProfile:
    """Apply the interactions to ``store`` as ledger entries, folded into the profile with the real
    preference math (``apply_contributions``); returns the stored profile."""
    entries = [
        LedgerEntry(
            event_id=f"{user_id}-{n}",
            user_id=user_id,
            item_id=i.item_id,
            event_type=i.kind,
            event_time=i.time,
            strength=i.strength,
            rating=i.rating,
            status=i.status.value if i.status is not None else None,
        )
        for n, i in enumerate(interactions)
    ]
    dim = len(next(iter(vectors.values())))
    policy = decay or DecayPolicy()

    def update(current: dict[str, PreferenceState], new: Sequence[LedgerEntry]) -> dict[str, PreferenceState]:
        contributions = [Contribution(vectors[e.item_id], e.strength, e.event_time.timestamp()) for e in new]
        return {
            user_id: apply_contributions(
                current.get(user_id, PreferenceState.empty(dim)), contributions, policy
            )
        }

    store.apply(entries, update)
    return store.profiles[user_id]
