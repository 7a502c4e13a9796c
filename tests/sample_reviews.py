"""Real MAL review texts from the shipped sample, which every clone has (the full data may be absent)."""

from __future__ import annotations

import functools

from llmrec.data_source import sample_source
from llmrec.datasets.matthew1906 import REVIEWS
from llmrec.datasets.replay import collect_events
from llmrec.events.schema import ReviewEvent


@functools.cache
def sample_reviews() -> tuple[ReviewEvent, ...]:
    events = collect_events(sample_source().path, sources=(REVIEWS,)).events
    return tuple(event for event in events if isinstance(event, ReviewEvent))


def review_texts(keep: int, low: float = 1.0, high: float = 10.0) -> list[str]:
    """The first ``keep`` sample reviews whose score lies in [low, high]."""
    rows = [r for r in sample_reviews() if r.rating is not None and low <= r.rating <= high]
    assert len(rows) >= keep, f"the sample holds only {len(rows)} reviews scored {low}..{high}"
    return [r.text for r in rows[:keep]]
