"""Faust agents: one per event topic, each a thin loop that hands batches of raw messages to a handler.

Acknowledgement. Faust acks an event even when the agent raises, and ``take_events`` acks a whole batch
as soon as the agent asks for the next one or is cancelled. An ack lets the consumer commit the offset,
so an event acked before it is applied would be lost by a crash. The agent therefore holds one extra
reference on each message of the batch and releases it only after the handler returned, i.e. once every
event is applied or dead-lettered. If the worker dies first, the offsets stay uncommitted and Kafka
redelivers the batch; the ledger makes that harmless.

The loop never dies: a failed batch is logged and retried with backoff (services being down are already
retried inside the handler; what reaches this loop is unexpected, and retrying keeps the events rather
than dropping them). Partitions wait meanwhile, which the per-batch error log makes visible.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

import faust
from faust.streams import Stream
from faust.types import AgentT, EventT, StreamT, TopicT

from llmrec import tracing
from llmrec.logs import get_logger
from stream.processing import RawMessage, offset_ranges
from stream.retry import Backoff, Sleep

log = get_logger(__name__)

BatchHandler = Callable[[Sequence[RawMessage]], Awaitable[object]]


def raw_message(event: EventT[Any]) -> RawMessage:
    message = event.message
    return RawMessage(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers=_headers(message.headers) if tracing.enabled() else (),
    )


def _headers(
    headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes] | None,
) -> tuple[tuple[str, bytes], ...]:
    """A message's headers as pairs (aiokafka gives a sequence; Faust's type also allows a mapping)."""
    if not headers:
        return ()
    return tuple(headers.items()) if isinstance(headers, Mapping) else tuple(headers)


async def handle_until_done(
    events: Sequence[EventT[Any]],
    handler: BatchHandler,
    *,
    backoff: Backoff,
    sleep: Sleep = asyncio.sleep,
) -> None:
    """Run ``handler`` on the batch until it succeeds, then ack the events. See the module docstring."""
    for event in events:
        event.message.incref()
    batch = [raw_message(event) for event in events]
    attempt = 0
    while True:
        try:
            await handler(batch)
            break
        except asyncio.CancelledError:
            # Stopping mid-batch: keep the hold, so these offsets are not committed and get redelivered.
            raise
        except Exception as exc:
            delay = backoff.delay(attempt)
            attempt += 1
            log.error(
                "batch failed, retrying",
                topic=batch[0].topic if batch else None,
                offsets=offset_ranges(batch),
                size=len(batch),
                attempt=attempt,
                retry_in_s=round(delay, 3),
                error=f"{type(exc).__name__}: {exc}",
                exc_info=True,
            )
            await sleep(delay)
    for event in events:
        event.ack()


def register_agents(
    app: faust.App,
    topics: Sequence[TopicT],
    handler: BatchHandler,
    *,
    batch_size: int,
    within_s: float,
    backoff: Backoff | None = None,
    topic_batch_sizes: Mapping[str, int] | None = None,
    on_batch: Callable[[Sequence[EventT[Any]]], None] | None = None,
) -> list[AgentT[Any]]:
    """Declare one agent per topic. Separate agents keep an encoder outage (reviews wait for Triton) from
    holding up ratings and watch events. ``topic_batch_sizes`` overrides ``batch_size`` by topic name;
    ``on_batch`` sees each batch as it is taken (metrics)."""
    policy = backoff or Backoff(initial_s=1.0, max_s=60.0)
    agents: list[AgentT[Any]] = []
    for topic in topics:
        name = topic.get_topic_name()
        size = (topic_batch_sizes or {}).get(name, batch_size)
        consume = _consumer(size, within_s, handler, policy, on_batch)
        agents.append(app.agent(topic, name=f"consume:{name}")(consume))
    return agents


def _consumer(
    size: int,
    within_s: float,
    handler: BatchHandler,
    policy: Backoff,
    on_batch: Callable[[Sequence[EventT[Any]]], None] | None,
) -> Callable[[StreamT[bytes]], Awaitable[None]]:
    async def consume(stream: StreamT[bytes]) -> None:
        # take_events (not take): the batch keeps each message's topic, partition, offset and key.
        async for events in cast("Stream[bytes]", stream).take_events(size, within=within_s):
            if on_batch is not None:
                on_batch(events)
            await handle_until_done(events, handler, backoff=policy)

    return consume
