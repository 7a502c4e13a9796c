"""The harness's item text features for MAL sets come from the serving index, which is keyed by item keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llmrec.item_ids import item_key, mal_item_id
from ranker.interactions import InteractionData
from ranker.retrieval import ItemIndex
from research.datasets import MAL_COMPLETED
from research.item_text import item_text_features


def test_mal_items_find_their_vectors_by_key(tmp_path: Path) -> None:
    index_dir = tmp_path / "index"
    vectors = np.eye(3, dtype=np.float32)
    ItemIndex.build([item_key(mal_item_id(i)) for i in (30, 10, 20)], vectors).save(index_dir)
    data = InteractionData.from_records(MAL_COMPLETED, ["u", "u", "v"], [10, 20, 99])
    features = item_text_features(data, tmp_path, index_dir)
    # Rows follow the data set's sorted anime ids: 10, 20, then 99, which the index lacks (zeros).
    np.testing.assert_array_equal(features, [vectors[1], vectors[2], np.zeros(3)])
