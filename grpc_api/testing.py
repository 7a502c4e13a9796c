"""Test doubles for the API: an in-memory ``ProfileReader`` and synthetic item embeddings.

Used by the unit tests (no database) and by the integration tests (synthetic vectors over the real sample
catalogue, so the API is tested without the encoder). Not imported by production code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from llmrec.preference_state import PreferenceState
from llmrec.store.interface import SeenItem, StoredProfile, StoreUnavailable
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
    """One thing a test user did: ``strength`` as the preference model would compute it."""

    item_id: int
    strength: float
    time: datetime
    rating: float | None = None


@dataclass
class InMemoryProfiles:
    """``ProfileReader`` over dicts. ``unavailable`` simulates a database outage, ``delay_s`` a slow one."""

    profiles: dict[str, StoredProfile] = field(default_factory=dict)
    seen: dict[str, list[SeenItem]] = field(default_factory=dict)
    unavailable: bool = False
    delay_s: float = 0.0
    calls: int = 0
    closed: bool = False

    async def _enter(self) -> None:
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.unavailable:
            raise StoreUnavailable("simulated outage")

    async def get_profile(self, user_id: str) -> StoredProfile | None:
        await self._enter()
        return self.profiles.get(user_id)

    async def seen_items(self, user_id: str, limit: int = 1000) -> list[SeenItem]:
        await self._enter()
        return self.seen.get(user_id, [])[:limit]

    async def read_user(
        self, user_id: str, seen_limit: int = 1000
    ) -> tuple[StoredProfile | None, list[SeenItem]]:
        await self._enter()
        return self.profiles.get(user_id), self.seen.get(user_id, [])[:seen_limit]

    async def ping(self) -> None:
        await self._enter()

    async def close(self) -> None:
        self.closed = True

    def add_user(
        self,
        user_id: str,
        interactions: Iterable[Interaction],
        vectors: Mapping[int, FloatArray],
        decay: DecayPolicy | None = None,
    ) -> StoredProfile:
        """Fold the interactions into a profile with the real preference math and store it."""
        done = list(interactions)
        dim = len(next(iter(vectors.values())))
        state = apply_contributions(
            PreferenceState.empty(dim),
            [Contribution(vectors[i.item_id], i.strength, i.time.timestamp()) for i in done],
            decay or DecayPolicy(),
        )
        profile = StoredProfile(
            user_id=user_id,
            state=state,
            ratings=sum(1 for i in done if i.rating is not None),
            reviews=0,
            watch_events=sum(1 for i in done if i.rating is None),
            last_event_time=max((i.time for i in done), default=None),
            updated_at=datetime.now(UTC),
        )
        self.profiles[user_id] = profile
        self.seen[user_id] = sorted(
            (SeenItem(i.item_id, i.strength, i.time, i.rating) for i in done),
            key=lambda s: (-s.strength, s.item_id),
        )
        return profile
