"""Readers that turn the real data sets into typed events (see ``replay`` for the merged stream)."""

from llmrec.datasets.azathoth import AZATHOTH_LISTS, read_azathoth
from llmrec.datasets.matthew1906 import REVIEWS, WATCHLISTS, TitleIndex, read_reviews, read_watchlists
from llmrec.datasets.replay import ALL_SOURCES, Replay, collect_events, event_order, replay_events
from llmrec.datasets.summary import ReplaySummary, SkipReason

__all__ = [
    "ALL_SOURCES",
    "AZATHOTH_LISTS",
    "REVIEWS",
    "WATCHLISTS",
    "Replay",
    "ReplaySummary",
    "SkipReason",
    "TitleIndex",
    "collect_events",
    "event_order",
    "read_azathoth",
    "read_reviews",
    "read_watchlists",
    "replay_events",
]
