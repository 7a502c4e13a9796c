"""Benchmark suite: ``python -m bench [--quick] [--out reports/bench.json]``.

Every figure is measured in the run that reports it, next to a baseline measured in the same run:
- ``bench.retrieval``: exact numpy search (baseline) vs FAISS flat / IVF / HNSW through ``ItemIndex``;
- ``bench.ingest``: a plain confluent-kafka consume loop (baseline) vs the stream worker applying the same
  events into PostgreSQL end to end, against a real Kafka broker and PostgreSQL started for the run.

Nothing here is a fixed figure: what is not measured is written as null with the reason.
"""
