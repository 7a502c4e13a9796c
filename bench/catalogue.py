"""The live catalogue: how soon a published item is served, how fast the worker applies item events, and
what live changes cost the index (issue 13's benchmark keys).

Three measurements, each against a baseline from the same run:

1. **Visibility** (``item_visible_p50_s`` / ``_p99_s``): a real Kafka broker and PostgreSQL
   (``bench.streaming``), Triton with the llmrec encoder on CPU (``deploy.triton``), the worker and one API
   process (``deploy.stack``). The API starts from the shipped sample catalogue (random 384-d vectors, as in
   ``bench.freshness``); ``twins`` are then published through the items topic and awaited. A probe is an
   upsert of a new item whose title, text, categories and attributes equal one twin's (so the encoder gives
   it the twin's vector and it is the twin's nearest neighbour); the clock starts just before the upsert
   is handed to ``EventProducer.publish_item`` (``linger.ms`` 0) and stops at the arrival of the first
   ``SimilarItems(twin, k=10)`` answer that lists it, polled every ``POLL_S``. One probe at a time, each
   with its own twin, while ``bench.freshness.Background`` publishes ``BACKGROUND_RATE`` rating and watch
   events/s. The same again with probes that carry a user-supplied vector (their twins' vectors, also
   user-supplied): no embedding, the baseline for the embedding's share. The share itself is an
   estimate: the median time of ``EncoderClient.embed_and_score`` for one probe text on the same Triton,
   in the same run, over the median visibility time.
2. **Ingest** (``item_ingest_per_s_user_vectors``, ``item_ingest_per_s_embedded``): a backlog of upserts
   of new items is published as fast as the producer goes (worker and API running, no background
   traffic); the figure is events / (zero consumer lag on the items topic − the first publish), the lag
   read with ``llmrec.events.lag.consumer_lag`` every ``LAG_POLL_S``. ``item_ingest_per_s`` (the issue's
   key) is the user-vector figure.
3. **Live index** at 100k and 1M items (``--quick``: 100k): an ``ItemIndex`` of the kind the API would
   build (``ranker.retrieval.choose_kind``) over real item vectors tiled (``bench.retrieval.item_vectors``)
   under the keys of ids ``bench:1..n``, served as a ``grpc_api.service.Snapshot``; then 10% of the items
   change through ``grpc_api.live_catalogue.apply_catalogue_rows`` (the API's own path): 5% get a new
   vector (their old row is retired and a new one appended) and 5% are deleted. Measured on the live
   snapshot and, as the baseline, on a fresh ``ItemIndex.build`` of exactly the served items (kind and
   default parameters the same): memory (FAISS serialised size + the embeddings and ids arrays), single
   query latency (``search_single_threaded``, k=100: the API's call; the two indexes' repeats
   interleaved, so the shared machine's load weighs on both alike), and recall@100 of what can be served
   (hits that are retired or not servable dropped) against the exact top 100 over the served items. Also
   the cost one catalogue poll pays at that size, after the burst's new rows are merged into the FAISS
   index (``merge_s``, what the API's follower does in the background): ``apply_catalogue_rows`` with 100
   new items (index and snapshot derived from the last ones) and ``with_changes`` alone, each over
   ``repeats`` polls in a row. Above
   ``bench.retrieval.QUERY_SCALE_ITEMS`` items the timed queries shrink in proportion, as in the
   retrieval section.

The machine is small and shared (2 cores): the 1-minute load average is reported with each section.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import os
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.common import spread, summary
from bench.freshness import Background, random_encoder
from bench.retrieval import QUERY_SCALE_ITEMS, exact_topk, index_bytes, item_vectors, make_queries
from bench.streaming import Services, kafka_and_postgres, synthetic_items, triton_for
from deploy import stack
from encoder_triton.client import EncoderClient
from grpc_api.live_catalogue import LiveItem, adopt_merged, apply_catalogue_rows
from grpc_api.service import Snapshot
from jobs.build_index import build_index
from llmrec.catalogue import load_catalogue
from llmrec.data_source import sample_source
from llmrec.events.lag import consumer_lag
from llmrec.events.producer import EventProducer
from llmrec.events.schema import UpsertItemEvent
from llmrec.item_ids import item_keys
from llmrec.item_text import embedding_text_of
from llmrec.settings import Settings, TritonSettings, load_settings
from llmrec.store.interface import StoredItem, Version
from llmrec_client.client import RecommenderClient
from llmrec_client.errors import NotFound
from ranker.retrieval import IndexKind, ItemIndex, choose_kind, index_kind

PARTITIONS = 4
DIM = 384
BACKGROUND_RATE = 200.0
POLL_S = 0.02
SIMILAR_K = 10
PROBE_TIMEOUT_S = 60.0
SETUP_TIMEOUT_S = 300.0
LAG_POLL_S = 0.2
K = 100
CHANGED_FRACTION = 0.05
REMOVED_FRACTION = 0.05
POLL_ITEMS = 100
CHANGE_NOISE_STD = 0.05
CATEGORIES = tuple(f"shelf{n}" for n in range(12))
T0 = datetime(2025, 7, 1, tzinfo=UTC)

# Twin texts: every twin differs from the others in its subject, angle and number, so twins are distinct
# items to the encoder; a probe repeats one twin's fields exactly.
SUBJECTS = (
    "growing vegetables in a small garden",
    "baking sourdough bread at home",
    "the stars, planets and galaxies of the night sky",
    "repairing old bicycles",
    "the history of sailing ships",
    "cooking with seasonal mushrooms",
    "training a young sheepdog",
    "building furniture from reclaimed wood",
    "birdwatching on coastal marshes",
    "writing short detective stories",
    "keeping bees through the winter",
    "restoring vintage radios",
)
ANGLES = (
    "A beginner's guide to",
    "A practical handbook on",
    "Stories and lessons about",
    "An illustrated history of",
    "Common mistakes in",
    "A year of",
)


@dataclasses.dataclass(frozen=True)
class Plan:
    probes: int
    ingest_user_vectors: int
    ingest_embedded: int
    index_sizes: tuple[int, ...]
    recall_queries: int
    latency_queries: int
    repeats: int


QUICK = Plan(
    probes=10,
    ingest_user_vectors=2_000,
    ingest_embedded=500,
    index_sizes=(100_000,),
    recall_queries=200,
    latency_queries=300,
    repeats=3,
)
FULL = Plan(
    probes=100,
    ingest_user_vectors=20_000,
    ingest_embedded=2_000,
    index_sizes=(100_000, 1_000_000),
    recall_queries=500,
    latency_queries=1_000,
    repeats=5,
)

# The figures of one poll (``poll_cost``).
POLL_KEYS = ("with_changes_100_s", "apply_100_rows_s")

HEADLINE_KEYS = (
    "item_visible_p50_s",
    "item_visible_p99_s",
    "item_visible_uservector_p50_s",
    "item_visible_uservector_p99_s",
    "item_visible_embed_share",
    "item_ingest_per_s",
    "item_ingest_per_s_user_vectors",
    "item_ingest_per_s_embedded",
)


# -- pure helpers (tests/unit/test_bench_catalogue.py) ---------------------------------------------------


def unit_vectors(count: int, dim: int, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    out: npt.NDArray[np.float32] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return out


def twin_events(
    prefix: str, count: int, vectors: npt.NDArray[np.float32] | None = None
) -> list[UpsertItemEvent]:
    """``count`` distinct items ``{prefix}twin{n}`` with text; with ``vectors``, each carries its row."""
    events = []
    for n in range(count):
        subject = SUBJECTS[n % len(SUBJECTS)]
        angle = ANGLES[(n // len(SUBJECTS)) % len(ANGLES)]
        events.append(
            UpsertItemEvent(
                event_id=f"{prefix}twin{n}-v1",
                item_id=f"{prefix}twin{n}",
                event_time=T0 + timedelta(seconds=n),
                title=f"{angle} {subject}, part {n}",
                text=f"{angle} {subject}. Part {n} of the series, with notes and examples from chapter {n}.",
                categories=(CATEGORIES[n % len(CATEGORIES)],),
                attributes={"pages": 100 + n},
                vector=None if vectors is None else tuple(float(x) for x in vectors[n]),
            )
        )
    return events


def probe_of(twin: UpsertItemEvent, item_id: str) -> UpsertItemEvent:
    """A new item with every field of ``twin`` but its id: the same embedding text (or vector)."""
    return twin.model_copy(update={"item_id": item_id, "event_id": f"{item_id}-v1"})


def embedding_text(event: UpsertItemEvent) -> str:
    """The text the worker embeds for ``event``."""
    return embedding_text_of(event.title, event.categories, event.text or "", event.attributes)


def backlog_events(
    prefix: str, count: int, vectors: npt.NDArray[np.float32] | None = None
) -> list[UpsertItemEvent]:
    """``count`` new items ``{prefix}b{n}``, with text; with ``vectors``, each carries its row."""
    return [
        UpsertItemEvent(
            event_id=f"{prefix}b{n}-v1",
            item_id=f"{prefix}b{n}",
            event_time=T0 + timedelta(seconds=n),
            title=f"Backlog item {n}",
            text=f"{ANGLES[n % len(ANGLES)]} {SUBJECTS[n % len(SUBJECTS)]}, volume {n}.",
            categories=(CATEGORIES[n % len(CATEGORIES)],),
            vector=None if vectors is None else tuple(float(x) for x in vectors[n]),
        )
        for n in range(count)
    ]


@dataclasses.dataclass(frozen=True)
class ChangePlan:
    """Rows (positions in the catalogue) whose vector changes, and rows that are deleted; disjoint."""

    changed: npt.NDArray[np.int64]
    removed: npt.NDArray[np.int64]


def change_plan(n: int, changed_fraction: float, removed_fraction: float, seed: int = 11) -> ChangePlan:
    """``round(n * fraction)`` distinct rows of each kind, drawn without replacement, sorted."""
    changed = round(n * changed_fraction)
    removed = round(n * removed_fraction)
    if changed + removed > n:
        raise ValueError(f"{changed} + {removed} changes for {n} items")
    picks = np.random.default_rng(seed).permutation(n)[: changed + removed]
    return ChangePlan(np.sort(picks[:changed]).astype(np.int64), np.sort(picks[changed:]).astype(np.int64))


def served_mask(found: npt.NDArray[np.int64], servable: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """Which ``found`` ids can be served: >= 0 and in ``servable`` (one ``isin`` over the whole matrix: a
    per-row one sorts the million servable keys again for every query)."""
    mask: npt.NDArray[np.bool_] = (found >= 0) & np.isin(found, servable)
    return mask


def served_recall(
    found: npt.NDArray[np.int64], truth: npt.NDArray[np.int64], servable: npt.NDArray[Any]
) -> float:
    """Mean recall@k (k = ``truth.shape[1]``) of ``found`` ids after dropping what cannot be served:
    ids < 0 (no hit, or a retired row) and ids not in ``servable`` (the keys a snapshot serves)."""
    usable = served_mask(found, servable)
    hits = [len(np.intersect1d(f[m], t)) for f, m, t in zip(found, usable, truth, strict=True)]
    return float(np.mean(hits) / truth.shape[1])


def percentiles(samples: Sequence[float]) -> dict[str, Any]:
    return {
        **summary(list(samples)),
        "p50": float(np.percentile(samples, 50)) if len(samples) else None,
        "p99": float(np.percentile(samples, 99)) if len(samples) else None,
        "samples_s": [round(s, 4) for s in samples],
    }


def _load() -> float:
    return os.getloadavg()[0]


# -- 1 and 2: the running stack ----------------------------------------------------------------------------


def _similar(client: RecommenderClient, item_id: str) -> list[str] | None:
    try:
        return [i.item_id for i in client.similar_items(item_id, k=SIMILAR_K, timeout_s=5.0).items]
    except NotFound:
        return None


def _publish(settings: Settings, events: Sequence[UpsertItemEvent]) -> float:
    t0 = time.perf_counter()
    with EventProducer(settings.kafka, client_id="bench-catalogue", extra_config={"linger.ms": 20}) as p:
        for event in events:
            p.publish_item(event)
        p.flush(120)
    return time.perf_counter() - t0


def _await_served(client: RecommenderClient, item_ids: Sequence[str], timeout_s: float) -> float:
    t0 = time.perf_counter()
    pending = list(item_ids)
    while pending:
        pending = [i for i in pending if _similar(client, i) is None]
        if pending and time.perf_counter() - t0 > timeout_s:
            raise RuntimeError(f"{len(pending)} items not served within {timeout_s} s: {pending[:3]}")
        if pending:
            time.sleep(0.2)
    return time.perf_counter() - t0


def _probe(
    client: RecommenderClient, producer: EventProducer, event: UpsertItemEvent, twin: str
) -> dict[str, Any]:
    published = time.perf_counter()
    producer.publish_item(event)
    polls = 0
    while True:
        answer = _similar(client, twin) or []
        arrived = time.perf_counter()
        polls += 1
        if event.item_id in answer:
            return {"seconds": arrived - published, "polls": polls, "rank": answer.index(event.item_id)}
        if arrived - published > PROBE_TIMEOUT_S:
            raise RuntimeError(f"probe {event.item_id} not listed by {twin} within {PROBE_TIMEOUT_S} s")
        time.sleep(POLL_S)


def _embed_one(triton: TritonSettings, text: str, repeats: int) -> list[float]:
    async def go() -> list[float]:
        times = []
        async with EncoderClient(triton.grpc_url, triton.model_name) as client:
            await client.embed_and_score([text])  # warm-up (connection)
            for _ in range(repeats):
                t0 = time.perf_counter()
                await client.embed_and_score([text])
                times.append(time.perf_counter() - t0)
        return times

    return asyncio.run(go())


def _ingest(settings: Settings, events: Sequence[UpsertItemEvent], timeout_s: float) -> dict[str, Any]:
    topic = settings.kafka.items_topic
    if consumer_lag(settings.kafka, [topic])[topic]:
        raise RuntimeError("the items topic has a backlog before the ingest run")
    t0 = time.perf_counter()
    publish_s = _publish(settings, events)
    polls = 0
    while True:
        lag = consumer_lag(settings.kafka, [topic])[topic]
        polls += 1
        if lag == 0:
            break
        if time.perf_counter() - t0 > timeout_s:
            raise RuntimeError(f"items topic lag still {lag} after {timeout_s} s")
        time.sleep(LAG_POLL_S)
    total = time.perf_counter() - t0
    return {
        "events": len(events),
        "publish_s": publish_s,
        "publish_to_zero_lag_s": total,
        "items_per_s": len(events) / total,
        "lag_polls": polls,
    }


def measure_stack(services: Services, triton: TritonSettings, plan: Plan) -> dict[str, Any]:
    settings = services.settings("catalogue", partitions=PARTITIONS, triton=triton)
    catalogue = load_catalogue(sample_source())
    build_index(settings, catalogue, random_encoder, progress=False)
    item_ids = [item.external_id for item in catalogue]
    prefix = f"c{uuid.uuid4().hex[:6]}-"
    rng = np.random.default_rng(5)
    text_twins = twin_events(f"{prefix}t-", plan.probes)
    vector_twins = twin_events(f"{prefix}v-", plan.probes, unit_vectors(plan.probes, DIM, rng))
    out: dict[str, Any] = {
        "catalogue_items_at_start": len(item_ids),
        "probes_per_kind": plan.probes,
        "poll_interval_s": POLL_S,
        "similar_k": SIMILAR_K,
        "catalogue_poll_s": settings.api.catalogue_poll_s,
        "worker_item_batch_size": settings.worker.item_batch_size,
        "worker_batch_within_s": settings.worker.batch_within_s,
        "background_target_events_per_s": BACKGROUND_RATE,
    }
    stack.up(settings, only=("worker", "api"), quiet=True)
    background = Background(settings, f"{prefix}bg-", item_ids, BACKGROUND_RATE)
    try:
        with RecommenderClient(settings.api.target, timeout_s=10) as client:
            out["twins_publish_s"] = _publish(settings, [*text_twins, *vector_twins])
            out["twins_served_after_s"] = _await_served(
                client, [t.item_id for t in (*text_twins, *vector_twins)], SETUP_TIMEOUT_S
            )
            background.start()
            time.sleep(3.0)  # the background stream's steady state
            load_before = _load()
            results: dict[str, list[dict[str, Any]]] = {"embedded": [], "user_vector": []}
            with EventProducer(settings.kafka, client_id="bench-probe", extra_config={"linger.ms": 0}) as p:
                for n in range(plan.probes):
                    for kind, twins in (("embedded", text_twins), ("user_vector", vector_twins)):
                        twin = twins[n]
                        probe = probe_of(twin, f"{twin.item_id}-probe")
                        results[kind].append(_probe(client, p, probe, twin.item_id))
            # The embedding alone, on the same Triton, under the same background traffic.
            embed_s = _embed_one(triton, embedding_text(text_twins[0]), plan.probes)
            background.stop()
            out["visible_load_average_1m"] = [load_before, _load()]
            out["background_published"] = background.published
            out["background_events_per_s"] = (
                background.published / background.elapsed_s if background.elapsed_s else None
            )
            out["background_errors"] = background.errors
            for kind, rows in results.items():
                out[kind] = {
                    **percentiles([r["seconds"] for r in rows]),
                    "polls": [r["polls"] for r in rows],
                    "rank_in_answer": [r["rank"] for r in rows],
                }
            out["embed_one_text_s"] = percentiles(embed_s)

            # Ingest: user vectors first (the key), then text through Triton.
            load_before = _load()
            vectors = unit_vectors(plan.ingest_user_vectors, DIM, rng)
            out["ingest_user_vectors"] = _ingest(
                settings, backlog_events(f"{prefix}iu-", plan.ingest_user_vectors, vectors), 900
            )
            out["ingest_embedded"] = _ingest(
                settings, backlog_events(f"{prefix}ie-", plan.ingest_embedded), 900
            )
            out["ingest_load_average_1m"] = [load_before, _load()]
    finally:
        try:
            if background.is_alive():
                background.stop()
        finally:
            stack.down(settings, quiet=True)
    embedded = out["embedded"]
    out["item_visible_p50_s"] = embedded["p50"]
    out["item_visible_p99_s"] = embedded["p99"]
    out["item_visible_uservector_p50_s"] = out["user_vector"]["p50"]
    out["item_visible_uservector_p99_s"] = out["user_vector"]["p99"]
    out["item_visible_embed_share"] = out["embed_one_text_s"]["median"] / embedded["median"]
    out["item_ingest_per_s_user_vectors"] = out["ingest_user_vectors"]["items_per_s"]
    out["item_ingest_per_s_embedded"] = out["ingest_embedded"]["items_per_s"]
    out["item_ingest_per_s"] = out["item_ingest_per_s_user_vectors"]
    return out


def run_stack(plan: Plan) -> dict[str, Any]:
    try:
        with kafka_and_postgres(PARTITIONS, "catalogue") as services, triton_for(services) as started:
            triton, triton_start_s = started
            return {
                "services_start_s": services.start_s,
                "triton_start_s": triton_start_s,
                **measure_stack(services, triton, plan),
            }
    except Exception as exc:  # reported as null with the reason, never as a made-up number
        result: dict[str, Any] = {key: None for key in HEADLINE_KEYS}
        result["error"] = f"{type(exc).__name__}: {exc}"
        return result


# -- 3: the live index -------------------------------------------------------------------------------------


def _stored(item_id: str, vector: npt.NDArray[np.float32] | None, seq: int, deleted: bool) -> StoredItem:
    version = Version(T0 + timedelta(days=1), f"{item_id}-v2")
    return StoredItem(
        item_id=item_id,
        title=None if deleted else f"Item {item_id}",
        text=None,
        categories=() if deleted else (CATEGORIES[seq % len(CATEGORIES)],),
        attributes={},
        vector=vector,
        vector_source=None if vector is None else "user",
        content_hash=None,
        hidden=False,
        deleted=deleted,
        body_version=version,
        hidden_version=None,
        change_seq=seq,
        updated_at=T0,
    )


def _latency_ms(
    indexes: dict[str, ItemIndex], queries: npt.NDArray[np.float32], repeats: int
) -> dict[str, dict[str, Any]]:
    """Single-query latency of each index, the indexes' repeats interleaved (in alternating order), so
    the load of this shared machine weighs on each alike."""
    for index in indexes.values():
        for q in queries[:20]:
            index.search_single_threaded(q, K)
    p50s: dict[str, list[float]] = {name: [] for name in indexes}
    p99s: dict[str, list[float]] = {name: [] for name in indexes}
    for repeat in range(repeats):
        names = list(indexes) if repeat % 2 == 0 else list(reversed(indexes))
        for name in names:
            index = indexes[name]
            times = []
            for q in queries:
                t0 = time.perf_counter()
                index.search_single_threaded(q, K)
                times.append((time.perf_counter() - t0) * 1000)
            p50s[name].append(float(np.percentile(times, 50)))
            p99s[name].append(float(np.percentile(times, 99)))
    return {
        name: {
            "p50_ms": summary(p50s[name]),
            "p99_ms": summary(p99s[name]),
            "queries_per_repeat": len(queries),
        }
        for name in indexes
    }


def _memory_mb(index: ItemIndex) -> dict[str, float]:
    faiss_mb = index_bytes(index) / 2**20
    arrays_mb = (index.embeddings.nbytes + index.item_ids.nbytes) / 2**20
    return {"faiss_serialised_mb": faiss_mb, "arrays_mb": arrays_mb, "total_mb": faiss_mb + arrays_mb}


def _evaluate(
    index: ItemIndex,
    servable: npt.NDArray[np.int64],
    recall_q: npt.NDArray[np.float32],
    truth: npt.NDArray[np.int64],
) -> dict[str, Any]:
    _, found = index.search(recall_q, K)
    usable = served_mask(found, servable).sum(axis=1).astype(np.float64)
    return {
        "rows": len(index),
        "retired_rows": index.retired_rows,
        "params": dict(index.meta.params),
        **_memory_mb(index),
        "recall100": served_recall(found, truth, servable),
        "servable_hits_per_query": summary(usable),
    }


def index_size(
    n: int, plan: Plan, embeddings_path: Path, seed: int = 7, poll_only: bool = False
) -> dict[str, Any]:
    """One size of the live-index section; ``poll_only``: up to the poll cost, without the recall,
    latency and rebuild comparison (the 1M run of that takes most of an hour on 2 shared cores)."""
    rng = np.random.default_rng(seed)
    kind: IndexKind = choose_kind(n)
    vectors, source = item_vectors(n, embeddings_path, rng)
    external, keys = synthetic_items(n)
    out: dict[str, Any] = {"n": n, "kind": kind, "vectors": source, "k": K}
    print(f"catalogue: n={n}: building {kind} ...", flush=True)
    t0 = time.perf_counter()
    base = ItemIndex.build(keys, vectors, kind)
    out["build_s"] = time.perf_counter() - t0
    items = [
        LiveItem(int(key), ext, f"Item {ext}", (CATEGORIES[i % len(CATEGORIES)],), 0)
        for i, (key, ext) in enumerate(zip(keys.tolist(), external, strict=True))
    ]
    t0 = time.perf_counter()
    snapshot = Snapshot(base, items)
    out["snapshot_s"] = time.perf_counter() - t0
    del items, base

    # 10% of the items change: 5% get another vector (a neighbour's, perturbed), 5% are deleted.
    changes = change_plan(n, CHANGED_FRACTION, REMOVED_FRACTION, seed)
    donors = rng.permutation(n)[: len(changes.changed)]
    new_vectors = vectors[donors] + rng.normal(0.0, CHANGE_NOISE_STD, (len(donors), vectors.shape[1])).astype(
        np.float32
    )
    new_vectors /= np.linalg.norm(new_vectors, axis=1, keepdims=True)
    rows = [
        _stored(external[r], new_vectors[j], j, deleted=False) for j, r in enumerate(changes.changed.tolist())
    ]
    rows += [
        _stored(external[r], None, len(rows) + j, deleted=True)
        for j, r in enumerate(changes.removed.tolist())
    ]
    print(f"catalogue: n={n}: applying {len(rows)} changed rows ...", flush=True)
    t0 = time.perf_counter()
    live = apply_catalogue_rows(snapshot, rows, cursor=len(rows))
    out["apply_10pct_s"] = time.perf_counter() - t0
    out["changes"] = {"vector_changed": len(changes.changed), "deleted": len(changes.removed)}
    del snapshot, rows
    gc.collect()
    # The burst's new rows, merged into the FAISS index as the API's follower does in the background.
    live, out["merge_s"] = merge_delta(live)
    if poll_only:
        dim = int(vectors.shape[1])
        del vectors, new_vectors
        gc.collect()
        out.update(poll_cost(live, dim, plan.repeats, rng))
        return out

    # What is served now, and the exact top 100 over it.
    current = vectors.copy()
    current[changes.changed] = new_vectors
    keep = np.ones(n, dtype=bool)
    keep[changes.removed] = False
    served_keys = keys[keep]
    served_vectors = current[keep]
    dim = int(vectors.shape[1])
    del current, vectors, new_vectors
    gc.collect()
    servable = np.sort(np.fromiter(live.items.keys(), dtype=np.int64))
    if not np.array_equal(servable, np.sort(served_keys)):
        raise RuntimeError("the live snapshot does not serve exactly the expected items")
    recall_q = make_queries(served_vectors, plan.recall_queries, rng)
    # As in bench.retrieval: fewer timed queries above QUERY_SCALE_ITEMS keep a 1M-item run in minutes.
    latency_n = max(100, int(plan.latency_queries * min(1.0, QUERY_SCALE_ITEMS / n)))
    latency_q = make_queries(served_vectors, latency_n, rng)
    t0 = time.perf_counter()
    truth_rows = exact_topk(served_vectors, recall_q, K)
    out["ground_truth_s"] = time.perf_counter() - t0
    truth = served_keys[truth_rows]

    print(f"catalogue: n={n}: rebuilding {kind} over the served items ...", flush=True)
    t0 = time.perf_counter()
    rebuilt = ItemIndex.build(served_keys, served_vectors, index_kind(kind))
    out["rebuild_s"] = time.perf_counter() - t0
    del served_vectors
    gc.collect()
    out["live"] = _evaluate(live.index, servable, recall_q, truth)
    out["rebuild"] = _evaluate(rebuilt, servable, recall_q, truth)
    latency = _latency_ms({"live": live.index, "rebuild": rebuilt}, latency_q, plan.repeats)
    for name, figures in latency.items():
        out[name].update(figures)
    del rebuilt
    gc.collect()
    for key, name in (("total_mb", "memory"), ("recall100", "recall100")):
        out[f"{name}_live_vs_rebuild"] = out["live"][key] / out["rebuild"][key]
    for key in ("p50_ms", "p99_ms"):
        out[f"{key}_live_vs_rebuild"] = out["live"][key]["median"] / out["rebuild"][key]["median"]

    out.update(poll_cost(live, dim, plan.repeats, rng))
    del live
    gc.collect()
    return out


def merge_delta(live: Snapshot) -> tuple[Snapshot, float]:
    """``live`` with its delta rows merged into the FAISS index, as the API's follower does in the
    background after a burst (``ItemIndex.merged`` then ``adopt_merged``), and the seconds it took."""
    t0 = time.perf_counter()
    merged = adopt_merged(live, live.index.merged())
    return merged, time.perf_counter() - t0


def poll_cost(live: Snapshot, dim: int, repeats: int, rng: np.random.Generator) -> dict[str, Any]:
    """The cost of one poll at this size: ``POLL_ITEMS`` new items, ``repeats`` polls in a row, each derived
    from the previous one as the API does (``apply_catalogue_rows``: index and snapshot), then the same
    through ``ItemIndex.with_changes`` alone."""
    snapshot = live
    times = []
    for r in range(repeats):
        ids = [f"bench:poll{r}-{j}" for j in range(POLL_ITEMS)]
        vectors = unit_vectors(POLL_ITEMS, dim, rng)
        rows = [_stored(i, vectors[j], j, deleted=False) for j, i in enumerate(ids)]
        gc.collect()
        t0 = time.perf_counter()
        snapshot = apply_catalogue_rows(snapshot, rows, cursor=r + 1)
        times.append(time.perf_counter() - t0)
    out: dict[str, Any] = {"apply_100_rows_s": summary(times)}
    index = snapshot.index
    times = []
    for r in range(repeats):
        keys = item_keys([f"bench:index-poll{r}-{j}" for j in range(POLL_ITEMS)])
        vectors = unit_vectors(POLL_ITEMS, dim, rng)
        gc.collect()
        t0 = time.perf_counter()
        index = index.with_changes(keys, vectors, [], f"poll{r}")
        times.append(time.perf_counter() - t0)
    out["with_changes_100_s"] = summary(times)
    out["poll_delta_rows"] = index.delta_rows
    return out


def run_index(plan: Plan, embeddings_path: Path, poll_only: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"sizes": {}}
    for n in plan.index_sizes:
        t0 = time.perf_counter()
        load_before = _load()
        try:
            entry = index_size(n, plan, embeddings_path, poll_only=poll_only)
        except Exception as exc:
            entry = {"error": f"{type(exc).__name__}: {exc}"}
        entry["wall_s"] = time.perf_counter() - t0
        entry["load_average_1m"] = [load_before, _load()]
        out["sizes"][str(n)] = entry
        gc.collect()
    return out


def run(quick: bool, embeddings_path: Path | None = None) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    path = embeddings_path or load_settings().index_dir / "embeddings.npy"
    t0 = time.perf_counter()
    result: dict[str, Any] = {"plan": dataclasses.asdict(plan), **run_stack(plan)}
    result["stack_wall_s"] = time.perf_counter() - t0
    result["index"] = run_index(plan, path)
    return result


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=1))


# -- report --------------------------------------------------------------------------------------------------

INDEX_HEADLINE = {"100000": "100k", "1000000": "1m"}


def catalogue_keys() -> tuple[str, ...]:
    """The headline keys of this section, in report order."""
    per_size = tuple(
        f"live_index_{name}_{label}"
        for label in INDEX_HEADLINE.values()
        for name in ("recall100", "recall100_vs_rebuild", "memory_vs_rebuild", "p99_ms_vs_rebuild")
    )
    return (*HEADLINE_KEYS, *per_size)


def catalogue_headline(report: dict[str, Any], reasons: dict[str, str]) -> dict[str, Any]:
    section = report.get("catalogue") or {}
    out: dict[str, Any] = {key: section.get(key) for key in HEADLINE_KEYS}
    for key, value in out.items():
        if value is None:
            reasons[key] = section.get("error", "not measured")
    sizes = (section.get("index") or {}).get("sizes", {})
    for n, label in INDEX_HEADLINE.items():
        entry = sizes.get(n) or {}
        values = {
            f"live_index_recall100_{label}": (entry.get("live") or {}).get("recall100"),
            f"live_index_recall100_vs_rebuild_{label}": entry.get("recall100_live_vs_rebuild"),
            f"live_index_memory_vs_rebuild_{label}": entry.get("memory_live_vs_rebuild"),
            f"live_index_p99_ms_vs_rebuild_{label}": entry.get("p99_ms_live_vs_rebuild"),
        }
        for key, value in values.items():
            out[key] = value
            if value is None:
                if entry.get("error"):
                    reasons[key] = entry["error"]
                elif section.get("error") and not sizes:
                    reasons[key] = section["error"]
                else:
                    reasons[key] = (
                        "1M items are only run without --quick" if n == "1000000" else "not measured"
                    )
    return out


def _pair(entry: dict[str, Any], key: str, digits: int = 3) -> str:
    values = entry.get(key) or [None, None]
    return " → ".join("?" if v is None else f"{v:.{digits}f}" for v in values)


def markdown_lines(report: dict[str, Any]) -> list[str]:
    c = report.get("catalogue")
    lines = ["## Live catalogue: item visibility, item ingest, live index", ""]
    if not c:
        return [*lines, "Not run.", ""]
    if c.get("error"):
        lines += [f"Error: {c['error']}", ""]
    if c.get("embedded"):
        e, u = c["embedded"], c["user_vector"]
        lines += [
            f"Real Kafka, PostgreSQL, Triton (llmrec encoder, CPU), `llmrec worker` and one `llmrec serve` "
            f"(catalogue poll every {c['catalogue_poll_s']} s; worker item batches of up to "
            f"{c['worker_item_batch_size']}, closed after {c['worker_batch_within_s']} s). Each probe: an "
            "upsert of a new item with exactly the fields (or the user-supplied vector) of a twin item "
            "published earlier, handed to `EventProducer.publish_item` (linger 0); stopped at the first "
            f"`SimilarItems(twin, k={c['similar_k']})` answer listing it (polled every "
            f"{c['poll_interval_s']} s). "
            f"One probe at a time, {c['probes_per_kind']} per kind, alternating kinds, with background "
            f"rating/watch traffic at {c['background_events_per_s'] or 0:.0f} events/s "
            f"(target {c['background_target_events_per_s']:.0f}). Load average (1 min): "
            f"{_pair(c, 'visible_load_average_1m', 1)}.",
            "",
            "| probe | p50 s | p99 s | median [min–max] s |",
            "|---|---|---|---|",
            f"| text, embedded by the worker through Triton | {e['p50']:.3f} | {e['p99']:.3f} "
            f"| {spread(e, 3)} |",
            f"| user-supplied vector (no embedding; baseline) | {u['p50']:.3f} | {u['p99']:.3f} "
            f"| {spread(u, 3)} |",
            "",
            f"Embedding's share (an estimate): one probe text through `EncoderClient.embed_and_score` on the "
            f"same Triton, same run: median {c['embed_one_text_s']['median'] * 1000:.1f} ms "
            f"(n={c['embed_one_text_s']['n']}) = {c['item_visible_embed_share']:.1%} of the median "
            f"visibility; the median difference embedded − user vector is "
            f"{(e['median'] - u['median']) * 1000:.0f} ms.",
            "",
        ]
    if c.get("ingest_user_vectors"):
        iu, ie = c["ingest_user_vectors"], c["ingest_embedded"]
        lines += [
            "Item ingest: a backlog of upserts of new items, published as fast as the producer goes to a "
            "running worker (and API); items/s = events / (zero consumer lag on the items topic − first "
            f"publish), lag read every {LAG_POLL_S} s. Load average: "
            f"{_pair(c, 'ingest_load_average_1m', 1)}.",
            "",
            "| backlog | events | publish s | publish → zero lag s | items/s |",
            "|---|---|---|---|---|",
            f"| user-supplied 384-d vectors | {iu['events']:,} | {iu['publish_s']:.2f} "
            f"| {iu['publish_to_zero_lag_s']:.2f} | {iu['items_per_s']:.0f} |",
            f"| text embedded through Triton | {ie['events']:,} | {ie['publish_s']:.2f} "
            f"| {ie['publish_to_zero_lag_s']:.2f} | {ie['items_per_s']:.0f} |",
            "",
            "`item_ingest_per_s` is the user-vector figure (the issue's key: no embedding); "
            "`item_ingest_per_s_embedded` is the text one.",
            "",
        ]
    for n, s in (c.get("index") or {}).get("sizes", {}).items():
        lines += [f"### Live index, {int(n):,} items", ""]
        if s.get("error"):
            lines += [f"Error: {s['error']}", ""]
            continue
        lines += [
            f"`{s['kind']}` (`choose_kind`), {s['vectors']}. Built in {s['build_s']:.1f} s; 10% changed "
            f"through `apply_catalogue_rows` ({s['changes']['vector_changed']:,} new vectors, "
            f"{s['changes']['deleted']:,} deletes) in {s['apply_10pct_s']:.1f} s; rebuild over the served "
            f"items {s['rebuild_s']:.1f} s. Load average: {_pair(s, 'load_average_1m', 1)}.",
            "",
            "| index | FAISS rows | retired rows | memory MB (FAISS + arrays) | recall@100 served "
            "| servable hits of 100 | p50 ms | p99 ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name in ("live", "rebuild"):
            e = s[name]
            lines.append(
                f"| {name}{' (baseline)' if name == 'rebuild' else ''} | {e['rows']:,} "
                f"| {e['retired_rows']:,} "
                f"| {e['total_mb']:.0f} ({e['faiss_serialised_mb']:.0f} + {e['arrays_mb']:.0f}) "
                f"| {e['recall100']:.4f} | {spread(e['servable_hits_per_query'], 1)} "
                f"| {spread(e['p50_ms'], 3)} | {spread(e['p99_ms'], 3)} |"
            )
        lines += [
            "",
            "Recall counts only what a snapshot can serve: FAISS still holds the retired rows (changed "
            "vectors' old rows and deleted items' rows, id -1; runs before deletes retired their rows "
            "counted only the former, the deleted rows being masked as not servable), and they take "
            "result slots that the answer then drops (servable hits of 100 above). The rebuild is "
            "`ItemIndex.build` over exactly the served items (what `compacted()` builds when every removed "
            "row is retired).",
            "",
            f"Live / rebuild: memory {s['memory_live_vs_rebuild']:.3f}×, recall@100 "
            f"{s['recall100_live_vs_rebuild']:.4f}×, p50 {s['p50_ms_live_vs_rebuild']:.2f}×, p99 "
            f"{s['p99_ms_live_vs_rebuild']:.2f}×.",
            "",
            *_poll_lines(s),
        ]
    return lines


def _poll_lines(s: dict[str, Any]) -> list[str]:
    text = (
        f"One poll's cost at this size, {POLL_ITEMS} new items, polls in a row (each derived from the last, "
        f"as the API does): `apply_catalogue_rows` (index and snapshot) "
        f"{spread(s['apply_100_rows_s'], 3)} s, of which `ItemIndex.with_changes` alone "
        f"{spread(s['with_changes_100_s'], 3)} s."
    )
    if s.get("merge_s") is not None:
        text += (
            f" Before the polls, the burst's new rows were merged into the FAISS index as the API's "
            f"follower does in the background (`ItemIndex.merged`, {s['merge_s']:.1f} s); the polls' rows "
            "are searched exactly next to it until the next merge."
        )
    again = s.get("poll_remeasured")
    if again:
        text += (
            f" These poll figures were remeasured at {again['at']} by `python -m bench.catalogue_index "
            f"--poll-only` (the same build; full snapshot {again['snapshot_s']:.1f} s, the "
            f"10% changes {again['apply_10pct_s']:.1f} s, the merge, then the polls; no recall, latency or "
            f"rebuild; load average {_pair(again, 'load_average_1m', 1)}); the other figures of this size "
            "are from the report's own run."
        )
    before = s.get("poll_before")
    if before:
        text += (
            f" Before issue 13's incremental snapshots (a copy of the FAISS index and every row's metadata "
            f"per poll): `apply_catalogue_rows` {spread(before.get('apply_100_rows_s'), 3)} s, "
            f"`with_changes` {spread(before.get('with_changes_100_s'), 3)} s."
        )
    return [text, ""]
