"""The one definition of the interaction events on the wire.

Events are JSON objects on three versioned topics (ratings, reviews, watch events), keyed by user id.
Other languages use the JSON Schema generated from these models (``proto/events/v1/``, written by
``llmrec schema``). Every event carries an ``event_id`` (idempotency key: the worker applies an id at most
once) and an ``event_time`` (when the user acted; it drives the time decay, not the arrival order).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

SCHEMA_VERSION: Literal[1] = 1
MAX_TEXT_CHARS = 20_000
# Far-future event times are almost always a unit mistake (ms for s); a day of clock skew is tolerated.
MAX_FUTURE_SKEW = timedelta(days=1)
MIN_EVENT_TIME = datetime(1970, 1, 2, tzinfo=UTC)

Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@\-]*$")]
ItemId = Annotated[int, Field(ge=1, le=2**53)]
Score = Annotated[float, Field(ge=1.0, le=10.0, allow_inf_nan=False)]


class EventType(StrEnum):
    RATING = "rating"
    REVIEW = "review"
    WATCH = "watch"


class WatchStatus(StrEnum):
    WATCHING = "watching"
    COMPLETED = "completed"
    ON_HOLD = "on_hold"
    DROPPED = "dropped"
    PLAN_TO_WATCH = "plan_to_watch"


class ReviewTag(StrEnum):
    RECOMMENDED = "recommended"
    MIXED = "mixed"
    NOT_RECOMMENDED = "not_recommended"


class _EventBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Identifier
    user_id: Identifier
    item_id: ItemId
    event_time: datetime
    source: Annotated[str, Field(max_length=64)] | None = None

    @field_validator("event_time")
    @classmethod
    def _event_time_in_range(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("event_time must carry a timezone (use RFC 3339 with Z or an offset)")
        try:
            value = value.astimezone(UTC)
        except OverflowError:
            # "9999-12-31T23:59:59-14:00" parses, but lies beyond datetime's range once in UTC.
            raise ValueError("event_time is out of range") from None
        if value < MIN_EVENT_TIME:
            raise ValueError(f"event_time {value.isoformat()} is before {MIN_EVENT_TIME.date()}")
        if value > datetime.now(UTC) + MAX_FUTURE_SKEW:
            raise ValueError(f"event_time {value.isoformat()} is in the future")
        return value

    @field_validator(
        "schema_version", "rating", "episodes_watched", "total_episodes", mode="before", check_fields=False
    )
    @classmethod
    def _number_not_bool(cls, value: Any) -> Any:
        # Lax mode turns JSON true into 1 ("rating": true would be the strongest dislike); JSON Schema
        # does not count booleans as numbers, and neither does the worker.
        if isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")
        return value

    @field_validator("item_id", mode="before")
    @classmethod
    def _item_id_not_bool(cls, value: Any) -> Any:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("item_id must be an integer")
        return value


class RatingEvent(_EventBase):
    """An explicit score on MAL's 1 to 10 scale (other scales are mapped onto it by the producer)."""

    event_type: Literal[EventType.RATING] = EventType.RATING
    rating: Score


class ReviewEvent(_EventBase):
    """Free text; the worker scores its sentiment through the encoder. Score and tag are optional."""

    event_type: Literal[EventType.REVIEW] = EventType.REVIEW
    text: Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]
    rating: Score | None = None
    tag: ReviewTag | None = None

    @field_validator("text")
    @classmethod
    def _text_has_words(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is blank")
        if any(ord(ch) < 32 and ch not in "\t\n\r" for ch in value):
            raise ValueError("text contains control characters")
        return value


class WatchEvent(_EventBase):
    """Progress on a title: episodes watched so far and the list status."""

    event_type: Literal[EventType.WATCH] = EventType.WATCH
    status: WatchStatus
    episodes_watched: Annotated[int, Field(ge=0, le=100_000)]
    total_episodes: Annotated[int, Field(ge=1, le=100_000)] | None = None


Event = Annotated[RatingEvent | ReviewEvent | WatchEvent, Field(discriminator="event_type")]
EVENT_ADAPTER: TypeAdapter[RatingEvent | ReviewEvent | WatchEvent] = TypeAdapter(Event)

EVENT_CLASSES: dict[EventType, type[RatingEvent] | type[ReviewEvent] | type[WatchEvent]] = {
    EventType.RATING: RatingEvent,
    EventType.REVIEW: ReviewEvent,
    EventType.WATCH: WatchEvent,
}


def normalised_rating(rating: float) -> float:
    """Map MAL's 1..10 score onto [0, 1]."""
    if not math.isfinite(rating):
        raise ValueError("rating must be finite")
    return min(1.0, max(0.0, (rating - 1.0) / 9.0))


def json_schemas() -> dict[str, dict[str, Any]]:
    """The published JSON Schema of each event type, keyed by file name.

    ``event_type`` has a default in Python for convenience, but on the wire it is required: the worker
    routes and validates on it.
    """
    schemas = {}
    for kind, cls in EVENT_CLASSES.items():
        body = cls.model_json_schema()
        body["required"] = sorted({*body.get("required", []), "event_type"})
        body["$id"] = f"https://llmrec.dev/schemas/events/v{SCHEMA_VERSION}/{kind.value}.schema.json"
        schemas[f"{kind.value}.schema.json"] = body
    return schemas
