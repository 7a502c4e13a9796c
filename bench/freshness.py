"""Freshness: time from an event's publish to a ``Recommend`` answer that reflects it, while a background
stream of rating and watch events runs.

Everything is real and local: a Kafka broker and PostgreSQL (``bench.streaming``), Triton with the llmrec
encoder (``deploy.triton``; reviews are scored through it), the worker and the gRPC API as processes
(``deploy.stack``: ``llmrec worker``, ``llmrec serve``). The item index is the shipped sample catalogue
with random 384-d vectors (the embeddings do not matter here; Triton still scores every review).

"Reflects it", precisely: each probe is one event by a probe user about item X, where X is the first item
of that user's current ``Recommend`` answer (k=10, seen items excluded, the default). Seen items come
from the ledger, which commits in the same transaction as the profile update, so the first answer
without X is the first answer computed from the new state. The clock starts just before the probe is
handed to the producer (``linger.ms`` 0, acks from all in-sync replicas) and stops when a ``Recommend``
answer (polled every ``POLL_S`` by one client) no longer lists X; the figure is that answer's arrival,
so it includes one poll interval of resolution at most.

Probes run one at a time, alternating between ``PROBE_USERS`` users who were each given 3 ratings first
(so their answers are personalised). Ratings go to the ratings topic; reviews (rating plus a text) go to
the reviews topic and wait for Triton's sentiment. Meanwhile a thread publishes ``BACKGROUND_RATE``
events/s (3 ratings : 1 watch) for 500 other users; the achieved rate and the worker's consumer lag at the
end (its ``llmrec_worker_consumer_lag`` metric) are reported, so a worker that fell behind shows.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from confluent_kafka import Producer
from tqdm import tqdm

from bench.common import summary
from bench.streaming import Services, kafka_and_postgres, rating_watch_events, triton_for
from deploy import stack
from jobs.build_index import build_index
from llmrec.catalogue import load_catalogue
from llmrec.data_source import sample_source
from llmrec.events.producer import producer_config, topic_for
from llmrec.events.schema import RatingEvent, ReviewEvent
from llmrec.events.validation import AnyEvent, encode_event
from llmrec.metrics_http import scrape
from llmrec.settings import Settings, TritonSettings
from llmrec_client.client import RecommenderClient
from llmrec_client.errors import NotFound

PARTITIONS = 4
DIM = 384
PROBE_USERS = 5
BACKGROUND_RATE = 1000.0
BACKGROUND_USERS = 500
POLL_S = 0.02
PROBE_TIMEOUT_S = 30.0
REVIEW_TEXTS = (
    "A moving story with wonderful characters; I loved every episode.",
    "Dull and slow, the plot went nowhere and the ending was a letdown.",
    "Beautiful animation and a soundtrack I still listen to. Great fun.",
    "Not for me: the jokes fell flat and the pacing dragged on.",
)


def random_encoder(texts: Sequence[str]) -> npt.NDArray[np.float32]:
    """Deterministic random unit vectors: an index without running the encoder over the catalogue."""
    rng = np.random.default_rng(len(texts))
    vectors = rng.standard_normal((len(texts), DIM)).astype(np.float32)
    unit: npt.NDArray[np.float32] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit


class Background(threading.Thread):
    """Publishes ``rate`` events/s, in 20 ms ticks, until stopped."""

    def __init__(self, settings: Settings, prefix: str, item_ids: list[str], rate: float) -> None:
        super().__init__(name="freshness-background", daemon=True)
        self._settings = settings
        self._prefix = prefix
        self._items = item_ids
        self._rate = rate
        self._halt = threading.Event()
        self.published = 0
        self.elapsed_s = 0.0
        self.errors: list[str] = []

    def run(self) -> None:
        kafka = self._settings.kafka
        producer = Producer(producer_config(kafka, client_id="bench-background", extra={"linger.ms": 5}))

        def report(err: Any, _msg: Any) -> None:
            if err is not None and len(self.errors) < 5:
                self.errors.append(str(err))

        started = time.perf_counter()
        tick = 0.02
        while not self._halt.is_set():
            due = int((time.perf_counter() - started) * self._rate) - self.published
            if due > 0:
                for event in rating_watch_events(
                    self._prefix, due, self._items, BACKGROUND_USERS, start=self.published
                ):
                    producer.produce(
                        topic_for(kafka, event.event_type),
                        key=event.user_id.encode(),
                        value=encode_event(event),
                        on_delivery=report,
                    )
                self.published += due
            producer.poll(0)
            time.sleep(tick)
        self.elapsed_s = time.perf_counter() - started
        producer.flush(30)

    def stop(self) -> None:
        self._halt.set()
        self.join(60)


@dataclass
class Prober:
    settings: Settings
    client: RecommenderClient
    producer: Producer
    prefix: str
    sequence: int = 0

    def probe(self, user: str, kind: str) -> dict[str, Any]:
        before = self.client.recommend(user, k=10, timeout_s=5.0)
        if not before.items:
            raise RuntimeError(f"no recommendation for {user}")
        item = before.items[0].item_id
        self.sequence += 1
        when = datetime(2025, 6, 1, tzinfo=UTC) + timedelta(minutes=self.sequence)
        event_id = f"{self.prefix}p{self.sequence}"
        event: AnyEvent
        if kind == "rating":
            event = RatingEvent(event_id=event_id, user_id=user, item_id=item, event_time=when, rating=8.0)
        else:
            text = REVIEW_TEXTS[self.sequence % len(REVIEW_TEXTS)]
            event = ReviewEvent(
                event_id=event_id, user_id=user, item_id=item, event_time=when, rating=8.0, text=text
            )
        value = encode_event(event)
        topic = topic_for(self.settings.kafka, event.event_type)
        published = time.perf_counter()
        self.producer.produce(topic, key=user.encode(), value=value)
        self.producer.poll(0)
        polls = 0
        while True:
            answer = self.client.recommend(user, k=10, timeout_s=5.0)
            arrived = time.perf_counter()
            polls += 1
            if item not in {i.item_id for i in answer.items}:
                return {
                    "kind": kind,
                    "seconds": arrived - published,
                    "polls": polls,
                    "strategy": answer.strategy,
                }
            if arrived - published > PROBE_TIMEOUT_S:
                raise RuntimeError(f"{kind} probe {event_id} not reflected within {PROBE_TIMEOUT_S} s")
            self.producer.poll(0)
            time.sleep(POLL_S)


def _ratings(client: RecommenderClient, user: str) -> int:
    try:
        return client.user_profile(user, timeout_s=5.0).ratings
    except NotFound:
        return 0


def _worker_lag(settings: Settings) -> float | None:
    try:
        text = scrape(settings.worker.metrics_port)
    except OSError:
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith("llmrec_worker_consumer_lag{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def measure(services: Services, triton: TritonSettings, probes: int) -> dict[str, Any]:
    settings = services.settings("freshness", partitions=PARTITIONS, triton=triton)
    catalogue = load_catalogue(sample_source())
    build_index(settings, catalogue, random_encoder, progress=False)
    item_ids = [item.external_id for item in catalogue]
    prefix = f"f{uuid.uuid4().hex[:6]}-"
    stack.up(settings, only=("worker", "api"), quiet=True)
    background = Background(settings, f"{prefix}bg-", item_ids, BACKGROUND_RATE)
    try:
        producer = Producer(producer_config(settings.kafka, client_id="bench-probe", extra={"linger.ms": 0}))
        users = [f"{prefix}probe{n}" for n in range(PROBE_USERS)]
        seed = [
            RatingEvent(
                event_id=f"{prefix}seed{n}-{j}",
                user_id=user,
                item_id=item_ids[(n * 37 + j * 11) % len(item_ids)],
                event_time=datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=j),
                rating=9.0,
            )
            for n, user in enumerate(users)
            for j in range(3)
        ]
        for event in seed:
            producer.produce(
                topic_for(settings.kafka, event.event_type),
                key=event.user_id.encode(),
                value=encode_event(event),
            )
        producer.flush(30)
        with RecommenderClient(settings.api.target) as client:
            deadline = time.perf_counter() + 120
            while any(_ratings(client, u) < 3 for u in users):
                if time.perf_counter() > deadline:
                    raise RuntimeError("probe users' seed ratings not applied within 120 s")
                time.sleep(0.2)
            background.start()
            time.sleep(3.0)  # let the background stream reach its steady state
            prober = Prober(settings, client, producer, prefix)
            results: list[dict[str, Any]] = []
            plan = [("rating" if n % 2 == 0 else "review", users[n % len(users)]) for n in range(2 * probes)]
            for kind, user in tqdm(plan, desc="freshness probes"):
                results.append(prober.probe(user, kind))
        lag_at_end = _worker_lag(settings)
    finally:
        try:
            if background.is_alive():
                background.stop()
        finally:
            stack.down(settings, quiet=True)
    out: dict[str, Any] = {
        "probes_per_kind": probes,
        "poll_interval_s": POLL_S,
        "background_target_events_per_s": BACKGROUND_RATE,
        "background_published": background.published,
        "background_events_per_s": background.published / background.elapsed_s
        if background.elapsed_s
        else None,
        "background_errors": background.errors,
        "worker_consumer_lag_at_end": lag_at_end,
        "catalogue_items": len(item_ids),
    }
    for kind in ("rating", "review"):
        seconds = [r["seconds"] for r in results if r["kind"] == kind]
        out[kind] = {
            **summary(seconds),
            "p50": float(np.percentile(seconds, 50)),
            "p99": float(np.percentile(seconds, 99)),
            "samples_s": [round(s, 4) for s in seconds],
        }
    out["freshness_rating_p50_s"] = out["rating"]["p50"]
    out["freshness_rating_p99_s"] = out["rating"]["p99"]
    out["freshness_review_p50_s"] = out["review"]["p50"]
    out["freshness_review_p99_s"] = out["review"]["p99"]
    return out


def run(quick: bool) -> dict[str, Any]:
    probes = 10 if quick else 100
    keys = (
        "freshness_rating_p50_s",
        "freshness_rating_p99_s",
        "freshness_review_p50_s",
        "freshness_review_p99_s",
    )
    try:
        with kafka_and_postgres(PARTITIONS, "freshness") as services, triton_for(services) as started:
            triton, triton_start_s = started
            load_before = os.getloadavg()[0]
            result = {"triton_start_s": triton_start_s, **measure(services, triton, probes)}
            result["load_average_1m"] = [load_before, os.getloadavg()[0]]
    except Exception as exc:  # reported as null with the reason, never as a made-up number
        result = {key: None for key in keys}
        result["error"] = f"{type(exc).__name__}: {exc}"
    return result


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=2))
