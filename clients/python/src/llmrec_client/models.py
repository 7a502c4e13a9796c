"""The answers of the recommendation API as plain frozen dataclasses.

The server's ``RecommendationService`` (grpc_api.service) returns them and ``RecommenderClient`` decodes
responses into them, so backend services, the demo, the CLI and tests handle the same types whether they
call the service in-process or over gRPC. This module imports nothing but the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Strategy = Literal["personalized", "cold_start"]
PERSONALIZED: Strategy = "personalized"
COLD_START: Strategy = "cold_start"

# What ordered a Recommend answer: the trained llmrec ranker, the plain fusion of similarity and
# popularity, or popularity alone (cold start).
RankerPath = Literal["learned", "fusion", "popularity"]
LEARNED: RankerPath = "learned"
FUSION: RankerPath = "fusion"
POPULARITY: RankerPath = "popularity"


@dataclass(frozen=True)
class ScoredItem:
    item_id: str
    title: str
    genres: tuple[str, ...]
    # Higher is better; comparable within one answer only.
    score: float
    reason: str


@dataclass(frozen=True)
class Recommendations:
    user_id: str
    items: tuple[ScoredItem, ...]
    strategy: Strategy
    model_version: str
    # Known where the answer is made (RecommendationService); the response does not carry it, so a
    # client's decoded answer has None.
    ranker: RankerPath | None = None


@dataclass(frozen=True)
class SimilarItems:
    item_id: str
    items: tuple[ScoredItem, ...]
    model_version: str


@dataclass(frozen=True)
class GenreWeight:
    genre: str
    weight: float


@dataclass(frozen=True)
class UserProfile:
    user_id: str
    ratings: int
    reviews: int
    watch_events: int
    top_genres: tuple[GenreWeight, ...]
    last_event_time: datetime | None
    updated_at: datetime | None
