"""Reading one sample from a Prometheus text page."""

from __future__ import annotations

from llmrec.metrics_http import sample_value

PAGE = """# HELP llmrec_api_request_seconds Recommend latency
# TYPE llmrec_api_request_seconds histogram
llmrec_api_request_seconds_count{code="OK",method="Recommend"} 24.0
llmrec_api_request_seconds_count{code="OK",method="SimilarItems"} 3.0
llmrec_api_index_items 1000.0
llmrec_api_index_items_total 7.0
"""


def test_sample_value_matches_name_and_labels_exactly() -> None:
    assert sample_value(PAGE, 'llmrec_api_request_seconds_count{code="OK",method="Recommend"}') == 24.0
    assert sample_value(PAGE, "llmrec_api_index_items") == 1000.0  # not the _total series after it
    assert sample_value(PAGE, "llmrec_api_request_seconds_count") is None  # labels are part of the name
    assert sample_value(PAGE, "absent") is None
