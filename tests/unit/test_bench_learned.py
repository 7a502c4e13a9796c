"""The pure helpers of the learned-path benchmark (bench/learned.py, bench/learned_report.py,
bench/floor_server.py) and the ingest store baseline's rows (bench/ingest.py); no timings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from bench.floor_server import fixed_response
from bench.ingest import ledger_rows
from bench.learned import answers_by_ranker, counter_delta, nearest_pools, taste_histories
from bench.learned_report import learned_headline, learned_lines
from llmrec.events.schema import RatingEvent, WatchEvent, WatchStatus


def unit(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    out: np.ndarray = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def test_nearest_pools_match_exact_search_across_chunks() -> None:
    vectors = unit(500, 16)
    anchors = np.array([3, 77, 499], dtype=np.int64)
    pools = nearest_pools(vectors, anchors, 20, chunk=64)
    exact = np.argsort(-(vectors[anchors] @ vectors.T), axis=1, kind="stable")[:, :20]
    assert pools.shape == (3, 20)
    assert np.array_equal(pools, exact)
    assert pools[:, 0].tolist() == anchors.tolist()  # a unit vector is its own nearest


def test_nearest_pools_cap_at_the_catalogue() -> None:
    assert nearest_pools(unit(5, 4), np.array([0], dtype=np.int64), 50).shape == (1, 5)


def test_taste_histories_draw_distinct_pool_items_and_noise() -> None:
    pools = np.arange(40, dtype=np.int64).reshape(4, 10)
    rng = np.random.default_rng(1)
    histories = taste_histories(200, pools, 6, 2, 1000, rng)
    assert len(histories) == 200
    for rows, ratings in histories:
        assert len(set(rows.tolist())) == rows.size and rows.size == ratings.size
        liked = rows[:6]
        assert any(set(liked.tolist()) <= set(p.tolist()) for p in pools)  # one taste
        assert ratings[:6].min() >= 6 and ratings.max() <= 10 and ratings.min() >= 1
        assert 6 <= rows.size <= 8
    # Tastes are skewed: the first is picked more often than the last.
    firsts = [int(rows[0] // 10) for rows, _ in histories]
    assert firsts.count(0) > firsts.count(3)


def test_answers_by_ranker_sums_by_label_pair() -> None:
    text = "\n".join(
        [
            "# HELP llmrec_api_recommendations_total Recommend answers",
            'llmrec_api_recommendations_total{ranker="learned",strategy="personalized"} 12.0',
            'llmrec_api_recommendations_total{ranker="popularity",strategy="cold_start"} 3.0',
            'llmrec_api_recommendations_created{ranker="learned",strategy="personalized"} 1.7e9',
        ]
    )
    before = answers_by_ranker(text)
    assert before == {"learned/personalized": 12.0, "popularity/cold_start": 3.0}
    after = {**before, "learned/personalized": 20.0}
    assert counter_delta(before, after) == {"learned/personalized": 8.0}


def test_floor_answer_has_ten_items() -> None:
    answer = fixed_response()
    assert len(answer.items) == 10 and answer.strategy == "personalized"
    assert answer.SerializeToString()


def test_ledger_rows_carry_the_workers_columns() -> None:
    when = datetime(2025, 1, 1, tzinfo=UTC)
    events: list[Any] = [
        RatingEvent(event_id="e1", user_id="u1", item_id="bench:1", event_time=when, rating=9),
        WatchEvent(
            event_id="e2",
            user_id="u1",
            item_id="bench:2",
            event_time=when,
            status=WatchStatus.COMPLETED,
            episodes_watched=12,
            total_episodes=12,
        ),
    ]
    rows = ledger_rows(events, {"rating": "t.ratings", "watch": "t.watch"})
    assert [r[0] for r in rows] == ["e1", "e2"]
    assert rows[0][3] == "rating" and rows[0][6] == 9 and rows[0][10] == "t.ratings"
    assert rows[1][3] == "watch" and rows[1][8] == "completed" and rows[1][9] == 12
    assert rows[0][5] > 0 and rows[1][5] > 0  # strengths as the worker computes them
    assert all(len(r) == 13 for r in rows)


def _point(qps: float, p99: float) -> dict[str, Any]:
    def s(v: float) -> dict[str, Any]:
        return {"n": 1, "median": v, "p25": v, "p75": v, "min": v, "max": v}

    return {"qps": s(qps), "p99_ms": s(p99), "p50_ms": s(p99 / 2), "errors": {}, "strategies": {}}


def _size(qps8: float) -> dict[str, Any]:
    return {
        "index": {"kind": "hnsw", "params": {"m": 32}, "tuning": [{"nprobe": 8, "recall100": 0.96}]},
        "training": {
            "fit_s": 12.0,
            "users": 10,
            "items": 100,
            "interactions": 500,
            "artifact_bytes": 2**20,
            "artifact_bytes_per_item": 1000.0,
        },
        "ledger_interactions": 600,
        "distinct_items_touched": 150,
        "user_write_s": 1.0,
        "api_startup_s": 5.0,
        "scoring_threads": 1,
        "check": {
            "checked": 5,
            "model_version_matches": 5,
            "personalized": 5,
            "k_items": 5,
            "example_model_version": "i/r",
        },
        "answers_during_load": {"learned/personalized": 30.0},
        "learned_share_during_load": 1.0,
        "concurrency": {"1": _point(50, 10), "8": _point(qps8, 30), "32": _point(90, 200)},
        "floor": {"concurrency": 8, **_point(1000, 5)},
        "floor_ratio": qps8 / 1000,
        "api_cpu_ms_per_request": 10.0,
        "rss_mb": 900.0,
        "peak_rss_mb": 950.0,
    }


def test_learned_headline_reads_the_section_and_explains_gaps() -> None:
    report: dict[str, Any] = {
        "learned": {
            "sizes": {"100000": _size(80.0)},
            "fit_scaling": {
                "source": "x",
                "points": [
                    {"fraction": f, "fit_s": 10 * f, "users": 1, "items": 2, "interactions": 3}
                    for f in (0.25, 0.5, 0.75, 1.0)
                ],
                "exponent": 1.0,
                "growth": "linear",
            },
        },
        "machine": {"usable_cores": 2},
    }
    reasons: dict[str, str] = {}
    out = learned_headline(report, reasons, {})
    assert out["recommend_learned_qps_100k"] == 80.0 and out["recommend_learned_p99_ms_100k"] == 30.0
    assert out["recommend_learned_qps_100k_c1"] == 50.0 and out["recommend_learned_qps_100k_c32"] == 90.0
    assert out["recommend_floor_ratio_100k"] == 0.08
    assert out["ranker_fit_s_mal_100"] == 10.0 and out["ranker_fit_exponent"] == 1.0
    assert out["ranker_fit_s_ledger_100k"] == 12.0 and out["ranker_artifact_bytes_per_item"] == 1000.0
    assert out["recommend_learned_qps_1m"] is None
    assert "without --quick" in reasons["recommend_learned_qps_1m"]
    assert "api_rss_mb_1m" not in out  # the serving section's figure stays when 1M did not run here
    report["learned"]["sizes"]["1000000"] = _size(40.0)
    out = learned_headline(report, {}, {})
    assert out["api_rss_mb_1m"] == 900.0 and out["ann_recall100_1m"] == 0.96
    text = "\n".join(learned_lines(report))
    assert "served learned path" in text and "floor" in text and "b = 1.00" in text


def test_learned_headline_when_the_section_was_skipped() -> None:
    reasons: dict[str, str] = {}
    out = learned_headline({"learned": {"error": "skipped (--skip-learned)"}}, reasons, {})
    assert out["recommend_learned_p99_ms_100k"] is None
    assert reasons["recommend_learned_p99_ms_100k"] == "skipped (--skip-learned)"
    assert reasons["ranker_fit_s_mal_25"] == "skipped (--skip-learned)"
