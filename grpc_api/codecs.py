"""Domain answers (``llmrec_client.models``) as protobuf messages (``llmrec_client.v1.recommender_pb2``)."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from llmrec_client import models
from llmrec_client.v1 import recommender_pb2


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def _scored(item: models.ScoredItem) -> recommender_pb2.ScoredItem:
    return recommender_pb2.ScoredItem(
        item_id=item.item_id, title=item.title, genres=list(item.genres), score=item.score, reason=item.reason
    )


def encode_recommendations(answer: models.Recommendations) -> recommender_pb2.RecommendResponse:
    return recommender_pb2.RecommendResponse(
        user_id=answer.user_id,
        items=[_scored(i) for i in answer.items],
        strategy=answer.strategy,
        model_version=answer.model_version,
    )


def encode_similar(answer: models.SimilarItems) -> recommender_pb2.SimilarItemsResponse:
    return recommender_pb2.SimilarItemsResponse(
        item_id=answer.item_id, items=[_scored(i) for i in answer.items], model_version=answer.model_version
    )


def encode_profile(answer: models.UserProfile) -> recommender_pb2.UserProfile:
    return recommender_pb2.UserProfile(
        user_id=answer.user_id,
        ratings=answer.ratings,
        reviews=answer.reviews,
        watch_events=answer.watch_events,
        top_genres=[recommender_pb2.GenreWeight(genre=g.genre, weight=g.weight) for g in answer.top_genres],
        last_event_time=_timestamp(answer.last_event_time),
        updated_at=_timestamp(answer.updated_at),
    )
