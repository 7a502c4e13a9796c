"""The pure helpers of bench/catalogue.py: the change plan, served recall, twins and probes (no timings)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.catalogue import (
    backlog_events,
    change_plan,
    embedding_text,
    percentiles,
    probe_of,
    served_mask,
    served_recall,
    twin_events,
    unit_vectors,
)


def test_change_plan_draws_disjoint_rows_of_each_kind() -> None:
    plan = change_plan(1000, 0.05, 0.05)
    assert len(plan.changed) == 50 and len(plan.removed) == 50
    assert not set(plan.changed.tolist()) & set(plan.removed.tolist())
    assert all(0 <= r < 1000 for r in (*plan.changed.tolist(), *plan.removed.tolist()))
    assert plan.changed.tolist() == sorted(set(plan.changed.tolist()))
    again = change_plan(1000, 0.05, 0.05)
    assert np.array_equal(plan.changed, again.changed) and np.array_equal(plan.removed, again.removed)


def test_change_plan_refuses_more_changes_than_items() -> None:
    with pytest.raises(ValueError):
        change_plan(10, 0.6, 0.5)


def test_served_recall_drops_retired_and_unservable_hits() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=np.int64)
    servable = np.array([1, 2, 3, 4, 5, 6, 7, 8], dtype=np.int64)
    assert served_recall(truth.copy(), truth, servable) == 1.0
    found = np.array([[1, 2, -1, 9], [5, 6, 7, 8]], dtype=np.int64)
    assert served_recall(found, truth, servable) == pytest.approx((2 + 4) / 8)
    # A hit on an item the snapshot no longer serves does not count, even if the truth lists it.
    assert served_recall(truth.copy(), truth, np.array([1, 2, 5, 6], dtype=np.int64)) == pytest.approx(0.5)
    assert served_mask(found, servable).tolist() == [[True, True, False, False], [True, True, True, True]]


def test_probe_repeats_its_twins_embedding_text_and_vector() -> None:
    vectors = unit_vectors(3, 8, np.random.default_rng(0))
    twins = twin_events("x-", 3, vectors)
    assert len({t.item_id for t in twins}) == 3
    assert len({embedding_text(t) for t in twins}) == 3
    probe = probe_of(twins[1], "x-probe")
    assert probe.item_id == "x-probe" and probe.event_id != twins[1].event_id
    assert embedding_text(probe) == embedding_text(twins[1])
    assert probe.vector == twins[1].vector
    assert twin_events("y-", 2)[0].vector is None


def test_backlog_events_are_new_items_with_optional_vectors() -> None:
    events = backlog_events("b-", 5, unit_vectors(5, 4, np.random.default_rng(1)))
    assert len({e.item_id for e in events}) == 5
    assert all(e.vector is not None and len(e.vector) == 4 for e in events)
    assert all(e.vector is None and e.text for e in backlog_events("b-", 2))


def test_percentiles_of_a_sample() -> None:
    out = percentiles([1.0, 2.0, 3.0])
    assert out["p50"] == 2.0 and out["n"] == 3 and out["samples_s"] == [1.0, 2.0, 3.0]
