"""``run_worker(settings)``: the ``llmrec worker`` process.

Start order (each step before anything consumes): database schema, Kafka topics, item vectors (the
published index, caught up with the catalogue in PostgreSQL), the PostgreSQL pool and the Triton client,
then the Faust app: one agent per interaction topic and one for the items topic. ``worker ready``
(``llmrec.lifecycle``) is logged once the consumer has joined its group and received its partitions.
SIGTERM stops Faust first, which waits until every event taken from Kafka is applied or dead-lettered and
commits the offsets, then the pools close.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import faust
import psycopg
from faust.types import TP, EventT
from mode import Service

from encoder_triton.client import EncoderClient
from llmrec import tracing
from llmrec.events.topics import ensure_system_topics
from llmrec.lifecycle import WORKER_PARTITIONS_ASSIGNED, WORKER_READY
from llmrec.logs import configure_logging, get_logger
from llmrec.settings import Settings
from llmrec.store import migrate
from llmrec.store.postgres import PostgresStore
from stream import fast_delivery, metrics
from stream.agents import register_agents
from stream.app import TopicDeadLetterSink, create_app, declare_topics
from stream.item_processing import ItemBatchProcessor
from stream.item_vectors import ArrayItemVectors, LiveItemVectors
from stream.processing import (
    BatchProcessor,
    BatchResult,
    RawMessage,
    decay_from_settings,
    topic_event_types,
    weights_from_settings,
)

log = get_logger(__name__)

# How long the worker waits at start for PostgreSQL to answer (a stack starting all at once).
DATABASE_WAIT_S = 60.0


def migrate_when_reachable(dsn: str, timeout_s: float = DATABASE_WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            migrate(dsn)
            return
        except psycopg.OperationalError as exc:
            if time.monotonic() >= deadline:
                raise
            # psycopg's message names host and port, never the password.
            log.warning("database not reachable yet", error=str(exc).strip().splitlines()[0])
            time.sleep(1.0)


class WorkerResources(Service):
    """What the agents need, as a mode service that the Faust worker starts before the app and stops
    after it (children stop in reverse order)."""

    def __init__(self, settings: Settings, dead_letter_topic: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self._dead_letter_topic = dead_letter_topic
        self._store: PostgresStore | None = None
        self._encoder: EncoderClient | None = None
        self._processor: BatchProcessor | None = None
        self._item_processor: ItemBatchProcessor | None = None

    async def on_start(self) -> None:
        settings = self.settings
        await asyncio.to_thread(migrate_when_reachable, settings.postgres.conninfo())
        await asyncio.to_thread(ensure_system_topics, settings.kafka)
        try:
            indexed = await asyncio.to_thread(ArrayItemVectors.load, settings.index_dir)
        except FileNotFoundError as exc:
            raise RuntimeError(
                f"no item index in {settings.index_dir}: build it first (`llmrec build-index`)"
            ) from exc

        self._store = PostgresStore.from_settings(settings.postgres, name="llmrec-worker")
        await self._store.open()
        items = LiveItemVectors(indexed, self._store)
        await items.refresh()
        log.info(
            "item vectors loaded",
            indexed=len(indexed),
            from_catalogue=items.catalogue_items,
            catalogue_cursor=items.cursor,
            dim=items.dim,
            index_dir=str(settings.index_dir),
        )
        self._encoder = EncoderClient.from_settings(
            settings.triton, max_in_flight=settings.triton.max_in_flight
        )
        if not await self._encoder.ready():
            # Not fatal: ratings and watch events flow meanwhile; reviews wait for the encoder.
            log.warning("encoder not ready yet; reviews will wait for it", url=settings.triton.grpc_url)
        prefs = settings.preferences
        dead_letters = TopicDeadLetterSink(self._dead_letter_topic)
        self._processor = BatchProcessor(
            store=self._store,
            encoder=self._encoder,
            dead_letters=dead_letters,
            item_vectors=items,
            topic_types=topic_event_types(settings.kafka),
            weights=weights_from_settings(prefs),
            decay=decay_from_settings(prefs),
            refresh_items=items.refresh,
            unknown_item_wait_s=settings.worker.unknown_item_wait_s,
        )
        self._item_processor = ItemBatchProcessor(
            store=self._store,
            encoder=self._encoder,
            dead_letters=dead_letters,
            items=items,
            encoder_model=settings.triton.model_name,
        )
        metrics.serve(settings.worker.metrics_port, settings.worker.metrics_host)

    async def on_stop(self) -> None:
        if self._encoder is not None:
            await self._encoder.close()
        if self._store is not None:
            await self._store.close()
        log.info("worker stopped")

    async def handle(self, batch: Sequence[RawMessage]) -> BatchResult:
        if self._processor is None:
            raise RuntimeError("worker resources are not started")
        result = await self._processor.process(batch)
        if batch:
            metrics.observe(batch[0].topic, result)
        return result

    async def handle_items(self, batch: Sequence[RawMessage]) -> BatchResult:
        if self._item_processor is None:
            raise RuntimeError("worker resources are not started")
        result = await self._item_processor.process(batch)
        if batch:
            metrics.observe(batch[0].topic, result)
        return result


def lag_reporter(app: faust.App) -> Callable[[Sequence[EventT[Any]]], None]:
    """Set the consumer-lag gauge of each partition in a batch: the consumer's last seen high watermark
    minus the offset after the batch's last message from that partition."""

    def report(events: Sequence[EventT[Any]]) -> None:
        last: dict[tuple[str, int], int] = {}
        for event in events:
            key = (event.message.topic, event.message.partition)
            last[key] = max(last.get(key, -1), event.message.offset)
        for (topic, partition), offset in last.items():
            try:
                highwater = app.consumer.highwater(TP(topic, partition))
            except Exception:  # a metric must never stop consumption (no assignment yet, say)
                continue
            if highwater is not None:
                metrics.observe_lag(topic, partition, highwater - (offset + 1))

    return report


def announce_assignment(group: str, partitions: int, *, first: bool) -> None:
    """Log a partition assignment: the first one is the readiness line the process harness waits for."""
    if first:
        log.info(WORKER_READY, group=group, partitions=partitions)
    else:
        log.info(WORKER_PARTITIONS_ASSIGNED, partitions=partitions)


def build_worker(settings: Settings) -> tuple[faust.App, WorkerResources]:
    app = create_app(settings)
    if settings.worker.fast_delivery:
        fast_delivery.install(app.consumer)
    topics = declare_topics(app, settings.kafka)
    resources = WorkerResources(settings, topics.dead_letter)
    register_agents(
        app,
        topics.events,
        resources.handle,
        batch_size=settings.worker.batch_size,
        within_s=settings.worker.batch_within_s,
        topic_batch_sizes={settings.kafka.reviews_topic: settings.worker.review_batch_size},
        on_batch=lag_reporter(app),
    )
    register_agents(
        app,
        (topics.items,),
        resources.handle_items,
        batch_size=settings.worker.item_batch_size,
        within_s=settings.worker.batch_within_s,
        on_batch=lag_reporter(app),
    )
    ready_logged = False

    async def on_partitions_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        nonlocal ready_logged
        assigned = len(args[0]) if args else 0
        announce_assignment(settings.kafka.consumer_group, assigned, first=not ready_logged)
        ready_logged = True

    app.on_partitions_assigned.connect(on_partitions_assigned)
    return app, resources


def run_worker(settings: Settings) -> NoReturn:
    """Run until SIGTERM or SIGINT, then exit the process (Faust's worker calls ``sys.exit``)."""
    configure_logging(settings.log_level, settings.log_json)
    tracing.configure("llmrec-worker")  # off unless OTEL_* asks for it (llmrec.tracing)
    # Faust's worker runs on the current event loop; give it a fresh one it owns.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app, resources = build_worker(settings)
    worker = faust.Worker(
        app,
        resources,
        loop=loop,
        loglevel=settings.log_level,
        quiet=True,
        # Logging is configured above (structlog); Faust must not replace the root handlers.
        override_logging=False,
        redirect_stdouts=False,
    )
    # Faust's terminal spinner writes cursor escape codes into the log; the log is for machines too.
    worker.spinner = None
    worker.execute_from_commandline()
