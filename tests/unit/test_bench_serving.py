"""The serving benchmark's pure parts: growth exponents, the synthetic catalogue, the report rendering."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import serving
from bench.report import headline, markdown
from llmrec.catalogue import Catalogue, Item
from llmrec.item_ids import item_key, item_keys, mal_item_id


def test_growth_exponent_names_the_shape() -> None:
    sizes = [1e4, 1e5, 1e6]
    assert serving.exponent(sizes, [1.0, 10.0, 100.0]) == pytest.approx(1.0)
    assert serving.describe(serving.exponent(sizes, [1.0, 10.0, 100.0])) == "linear"
    assert serving.describe(serving.exponent(sizes, [2.0, 4.0, 8.0])) == "sub-linear"
    assert serving.describe(serving.exponent(sizes, [5.0, 5.0, 5.0])) == "flat (|b| < 0.1)"
    assert serving.describe(serving.exponent(sizes, [8.0, 4.0, 2.0])) == "decreasing"
    assert serving.exponent([1e4], [3.0]) is None


def test_catalogue_copies_keep_genres_and_popularity_under_new_ids() -> None:
    items = [
        Item(item_id=i, title=f"T{i}", genres=("Drama",) if i % 2 else ("Action",), members=i) for i in (5, 8)
    ]
    base = serving.Base(
        item_keys(["mal:5", "mal:8"]), np.array([5, 8]), Catalogue.from_items(items), Path("nowhere.npy"), "x"
    )
    keys, catalogue = serving.catalogue_for(base, 5)
    native = [5, 8, 5 + serving.ID_STRIDE, 8 + serving.ID_STRIDE, 5 + 2 * serving.ID_STRIDE]
    # The index gets the copies' keys, row for row; the catalogue knows them by their (new) MAL ids.
    assert keys.tolist() == [item_key(mal_item_id(i)) for i in native]
    assert sorted(catalogue.item_ids) == native
    copy = catalogue[8 + serving.ID_STRIDE]
    assert (copy.title, copy.genres, copy.members) == ("T8 #1", ("Action",), 8)
    assert copy.key == keys[3]


def _point(p99: float, qps: float, rss: float) -> dict[str, Any]:
    s = {"n": 3, "median": p99, "p25": p99, "p75": p99, "min": p99, "max": p99}
    q = {**s, "median": qps, "min": qps, "max": qps}
    return {
        "users_in_db": 100,
        "p50_ms": s,
        "p90_ms": s,
        "p99_ms": s,
        "qps": q,
        "errors": {},
        "rss_mb": rss,
        "peak_rss_mb": rss,
    }


def test_headline_takes_the_api_figures_and_the_markdown_renders() -> None:
    report: dict[str, Any] = {
        "command": "python -m bench",
        "mode": "full",
        "started_at": "now",
        "wall_s": 1.0,
        "machine": {
            "cpu_model": "x",
            "logical_cores": 2,
            "usable_cores": 2,
            "memory_gib": 1,
            "os": "linux",
            "python": "3.11",
            "packages": {},
        },
        "retrieval": {"sizes": {}, "error": "skipped"},
        "ingest": {"error": "skipped"},
        "serving": {
            "plan": {"interactions": 10, "requests": 100, "repeats": 3},
            "concurrency": 8,
            "k": 10,
            "users_sweep_items": 100_000,
            "indexes": {
                "100000": {"kind": "hnsw", "params": {"m": 32}, "built_in_this_run": False},
                "1000000": {
                    "kind": "ivf",
                    "params": {"nprobe": 64},
                    "built_in_this_run": True,
                    "build_s": 40.0,
                    "tuning": [{"nprobe": 32, "recall100": 0.9}, {"nprobe": 64, "recall100": 0.96}],
                },
            },
            "items": {"100000": _point(12.0, 900.0, 500.0), "1000000": _point(30.0, 200.0, 3500.0)},
            "users": {"100": _point(12.0, 900.0, 500.0)},
            "user_inserts": [{"from": 0, "to": 100, "users_per_s": 1000.0}],
        },
    }
    report.update(headline(report))
    assert report["recommend_p99_ms_100k"] == 12.0 and report["recommend_qps_100k"] == 900.0
    assert report["api_rss_mb_1m"] == 3500.0 and report["ann_recall100_1m"] == 0.96
    text = markdown(report)
    assert "Serving: Recommend through the gRPC API" in text and "| 1,000,000 | ivf" in text
