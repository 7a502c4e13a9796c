"""The shipped sample: small enough, big enough for the demo, and a faithful, reproducible subset."""

from __future__ import annotations

from collections import Counter

from llmrec.data_source import SAMPLE_DIR, DataKind, has_mal_data, sample_source
from llmrec.datasets import AZATHOTH_LISTS, REVIEWS, WATCHLISTS, collect_events
from llmrec.events.schema import ReviewEvent
from llmrec.sample_data.build import SAMPLE_MAX_BYTES, sample_size


def test_shipped_sample_is_under_the_size_limit() -> None:
    sizes = sample_size(SAMPLE_DIR)
    assert "README.md" in sizes and "build.py" in sizes
    assert sum(sizes.values()) < SAMPLE_MAX_BYTES
    assert all(name.endswith((".gz", ".md", ".py")) for name in sizes)


def test_shipped_sample_replays_like_real_data() -> None:
    source = sample_source()
    assert source.kind is DataKind.SAMPLE and has_mal_data(source.path)
    replay = collect_events(source.path)
    users = Counter(e.user_id for e in replay.events)
    assert 200 <= len(users) <= 400
    assert len(replay.events) > 3000
    assert {source for source, _ in replay.summary.events} == {REVIEWS, WATCHLISTS, AZATHOTH_LISTS}
    reviewers = {e.user_id for e in replay.events if isinstance(e, ReviewEvent)}
    assert len(reviewers) > 150
    mixed = {e.user_id for e in replay.events if e.source == WATCHLISTS} & reviewers
    assert len(mixed) >= 5  # people with reviews and completed-list ratings
    known = {item.external_id for item in replay.catalogue}  # events name items "mal:<anime id>"
    assert all(e.item_id in known for e in replay.events)
    assert sum(1 for item in replay.catalogue if item.has_synopsis) > 1000


# Reproducibility and faithfulness against the full data are checked by
# `python -m llmrec.sample_data.build --check` (it needs ../shared/data, which a clone may not have).
