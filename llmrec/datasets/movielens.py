"""MovieLens ``ratings.csv`` as rating events: users ``ml:<userId>``, items ``ml:<movieId>`` (the ids
``llmrec import-items --from movielens`` gives the movies), real timestamps, stable event ids."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

from llmrec.data_source import open_data_file
from llmrec.datasets.ids import stable_event_id
from llmrec.events.schema import RatingEvent
from llmrec.item_ids import MOVIELENS_NAMESPACE, namespaced_id

# MovieLens rates 0.5 to 5 stars in halves; the events' scale is 1 to 10.
RATING_SCALE = 2.0
_CODE = "ml"


def movielens_rating_events(path: Path) -> list[RatingEvent]:
    """Every row of a MovieLens ``ratings.csv`` (``userId,movieId,rating,timestamp``), in file order."""
    events: list[RatingEvent] = []
    with open_data_file(path) as handle:
        for row in csv.DictReader(handle):
            user, movie = row["userId"], row["movieId"]
            events.append(
                RatingEvent(
                    event_id=stable_event_id(_CODE, "rating", user, movie),
                    user_id=namespaced_id(MOVIELENS_NAMESPACE, user),
                    item_id=namespaced_id(MOVIELENS_NAMESPACE, movie),
                    event_time=datetime.fromtimestamp(int(row["timestamp"]), UTC),
                    rating=min(10.0, max(1.0, float(row["rating"]) * RATING_SCALE)),
                    source="movielens",
                )
            )
    return events
