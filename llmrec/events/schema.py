"""The one definition of the events on the wire: interaction events and item (catalogue) events.

Interaction events are JSON objects on three versioned topics (ratings, reviews, watch events), keyed by
user id. Item events (``upsert``, ``hide``, ``unhide``, ``delete``: a union on ``op``) are JSON objects on
the items topic, keyed by item id; their ``item_id`` is an opaque string the catalogue's owner chooses
(``ExternalItemId``: ``mal:5114``, ``sku-123``). Other languages use the JSON Schema generated from these
models (``proto/events/v1/``, written by ``llmrec schema``). Every event carries an ``event_id``
(idempotency key: the worker applies an id at most once) and an ``event_time`` (when the user acted, or
when the item changed; for interactions it drives the time decay, not the arrival order).
"""

from __future__ import annotations

import json
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
Score = Annotated[float, Field(ge=1.0, le=10.0, allow_inf_nan=False)]
# An item id chosen by the catalogue's owner: opaque, 1..256 printable characters, no whitespace at either
# end (the items topic's key; "mal:5114", "ml:1", "sku-123", "Café crème 250 g" are all fine).
ExternalItemId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=256,
        pattern=r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$",
        examples=["mal:5114", "sku-123"],
    ),
]
MAX_TITLE_CHARS = 1_000
MAX_CATEGORIES = 64
MAX_CATEGORY_CHARS = 100
MAX_ATTRIBUTE_KEY_CHARS = 100
MAX_ATTRIBUTES_BYTES = 16 * 1024  # the attributes object as compact UTF-8 JSON
# A sanity bound only; the worker checks the configured embedding dimension (``check_item_vector``).
MAX_VECTOR_DIM = 4_096
AttributeScalar = str | int | Annotated[float, Field(allow_inf_nan=False)] | bool
AttributeValue = AttributeScalar | list[AttributeScalar]
AttributeKey = Annotated[str, Field(min_length=1, max_length=MAX_ATTRIBUTE_KEY_CHARS)]


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


def check_event_time(value: datetime) -> datetime:
    """The rules every event's ``event_time`` follows: with a timezone, in UTC, after 1970-01-02, not in
    the future (beyond ``MAX_FUTURE_SKEW``)."""
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


def _check_text(value: str, field: str) -> str:
    if any(ord(ch) < 32 and ch not in "\t\n\r" for ch in value):
        raise ValueError(f"{field} contains control characters")
    return value


class _EventBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Identifier
    user_id: Identifier
    # The catalogue's string id, as on the items topic; a bare number is refused rather than guessed
    # into a namespace (5114 is not "mal:5114").
    item_id: ExternalItemId
    event_time: datetime
    source: Annotated[str, Field(max_length=64)] | None = None

    @field_validator("event_time")
    @classmethod
    def _event_time_in_range(cls, value: datetime) -> datetime:
        return check_event_time(value)

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
    def _item_id_is_text(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError(f"item_id must be the catalogue's string id (e.g. 'mal:5114'), not {value!r}")
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


class ItemOp(StrEnum):
    UPSERT = "upsert"
    HIDE = "hide"
    UNHIDE = "unhide"
    DELETE = "delete"


class _ItemEventBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Identifier
    item_id: ExternalItemId
    event_time: datetime
    source: Annotated[str, Field(max_length=64)] | None = None

    @field_validator("event_time")
    @classmethod
    def _event_time_in_range(cls, value: datetime) -> datetime:
        return check_event_time(value)

    @field_validator("schema_version", mode="before")
    @classmethod
    def _version_not_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")
        return value


class UpsertItemEvent(_ItemEventBase):
    """Create an item or replace all of its fields (a field left out is cleared, not kept).

    ``vector`` is an optional embedding of the caller's own; its dimension must equal the configured
    embedding dimension, which the schema cannot know: the worker checks it with
    ``llmrec.events.validation.check_item_vector``.
    """

    op: Literal[ItemOp.UPSERT] = ItemOp.UPSERT
    title: Annotated[str, Field(min_length=1, max_length=MAX_TITLE_CHARS)]
    text: Annotated[str, Field(max_length=MAX_TEXT_CHARS)] | None = None
    categories: Annotated[
        tuple[Annotated[str, Field(min_length=1, max_length=MAX_CATEGORY_CHARS)], ...],
        Field(max_length=MAX_CATEGORIES),
    ] = ()
    attributes: dict[AttributeKey, AttributeValue] = Field(
        default_factory=dict,
        description=f"Free-form scalars or lists of scalars, at most {MAX_ATTRIBUTES_BYTES} bytes as JSON.",
    )
    vector: (
        Annotated[
            tuple[Annotated[float, Field(strict=True, allow_inf_nan=False)], ...],
            Field(min_length=1, max_length=MAX_VECTOR_DIM),
        ]
        | None
    ) = None

    @field_validator("title")
    @classmethod
    def _title_has_words(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("title is blank")
        return _check_text(value, "title")

    @field_validator("text")
    @classmethod
    def _text_printable(cls, value: str | None) -> str | None:
        return None if value is None else _check_text(value, "text")

    @field_validator("categories")
    @classmethod
    def _categories_printable(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for category in value:
            if not category.strip():
                raise ValueError("a category is blank")
            _check_text(category, "a category")
        return value

    @field_validator("attributes")
    @classmethod
    def _attributes_fit(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        if size > MAX_ATTRIBUTES_BYTES:
            raise ValueError(f"attributes take {size} bytes as JSON, more than {MAX_ATTRIBUTES_BYTES}")
        return value

    @field_validator("vector", mode="before")
    @classmethod
    def _vector_numbers_not_bool(cls, value: Any) -> Any:
        if isinstance(value, list | tuple) and any(isinstance(x, bool) for x in value):
            raise ValueError("vector holds numbers, not booleans")
        return value


class HideItemEvent(_ItemEventBase):
    """Stop recommending the item (out of stock, withdrawn); its fields and vector are kept."""

    op: Literal[ItemOp.HIDE] = ItemOp.HIDE


class UnhideItemEvent(_ItemEventBase):
    """Recommend a hidden item again."""

    op: Literal[ItemOp.UNHIDE] = ItemOp.UNHIDE


class DeleteItemEvent(_ItemEventBase):
    """Remove the item for good.

    Deleting an id the catalogue does not hold is not a validation error: the event is valid on the wire,
    and what to do with it (most likely nothing) is the worker's decision, as for any item the worker has
    not seen yet.
    """

    op: Literal[ItemOp.DELETE] = ItemOp.DELETE


AnyItemEvent = UpsertItemEvent | HideItemEvent | UnhideItemEvent | DeleteItemEvent
ItemEvent = Annotated[AnyItemEvent, Field(discriminator="op")]
ITEM_EVENT_ADAPTER: TypeAdapter[AnyItemEvent] = TypeAdapter(ItemEvent)
ITEM_EVENT_CLASSES: dict[
    ItemOp, type[UpsertItemEvent] | type[HideItemEvent] | type[UnhideItemEvent] | type[DeleteItemEvent]
] = {
    ItemOp.UPSERT: UpsertItemEvent,
    ItemOp.HIDE: HideItemEvent,
    ItemOp.UNHIDE: UnhideItemEvent,
    ItemOp.DELETE: DeleteItemEvent,
}
ITEM_SCHEMA_FILE = "item.schema.json"


def normalised_rating(rating: float) -> float:
    """Map MAL's 1..10 score onto [0, 1]."""
    if not math.isfinite(rating):
        raise ValueError("rating must be finite")
    return min(1.0, max(0.0, (rating - 1.0) / 9.0))


def json_schemas() -> dict[str, dict[str, Any]]:
    """The published JSON Schema of each event type and of the item events, keyed by file name.

    ``event_type`` (``op`` for item events) has a default in Python for convenience, but on the wire it is
    required: the worker routes and validates on it.
    """
    schemas = {}
    for kind, cls in EVENT_CLASSES.items():
        body = cls.model_json_schema()
        body["required"] = sorted({*body.get("required", []), "event_type"})
        body["$id"] = f"https://llmrec.dev/schemas/events/v{SCHEMA_VERSION}/{kind.value}.schema.json"
        schemas[f"{kind.value}.schema.json"] = body
    schemas[ITEM_SCHEMA_FILE] = item_json_schema()
    return schemas


def item_json_schema() -> dict[str, Any]:
    """The items topic's JSON Schema: one of the four ops, told apart by ``op`` (required on the wire)."""
    body = ITEM_EVENT_ADAPTER.json_schema()
    for definition in body["$defs"].values():
        if "op" in definition.get("properties", {}):
            definition["required"] = sorted({*definition.get("required", []), "op"})
    body["title"] = "ItemEvent"
    body["description"] = (
        "An item (catalogue) event on the items topic, keyed by item_id: upsert, hide, unhide or delete."
    )
    body["$id"] = f"https://llmrec.dev/schemas/events/v{SCHEMA_VERSION}/{ITEM_SCHEMA_FILE}"
    return body
