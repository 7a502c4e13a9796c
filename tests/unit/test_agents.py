"""The Faust agents, in-process with ``test_context()``: batching, raw messages, retries and acks.

The app is built from settings whose broker is never dialled (``test_context`` feeds the agent through an
in-memory channel); ``store='memory://'`` and the web server off come from ``create_app``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest
from faust.types import TP, Message

from llmrec.settings import KafkaSettings, Settings, WorkerSettings
from stream.agents import handle_until_done, register_agents
from stream.app import broker_urls, create_app, declare_topics
from stream.processing import RawMessage
from stream.retry import Backoff

FAST = Backoff(initial_s=0.001, max_s=0.005, jitter=0.0)


def make_settings() -> Settings:
    return Settings(
        kafka=KafkaSettings(bootstrap="127.0.0.1:1", topic_prefix="unit"),
        worker=WorkerSettings(batch_size=3, batch_within_s=0.05),
    )


class Recorder:
    """A batch handler that records batches, can fail its first calls and can be held open."""

    def __init__(self, failures: int = 0) -> None:
        self.batches: list[list[RawMessage]] = []
        self.failures = failures
        self.calls = 0
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, batch: Sequence[RawMessage]) -> None:
        self.calls += 1
        await self.release.wait()
        if self.failures:
            self.failures -= 1
            raise RuntimeError("unexpected")
        self.batches.append(list(batch))


async def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def test_the_app_is_configured_for_a_safe_group_membership() -> None:
    settings = make_settings()
    app = create_app(settings)
    assert app.conf.id == settings.kafka.consumer_group
    assert app.conf.broker_session_timeout <= app.conf.broker_request_timeout
    assert app.conf.web_enabled is False
    assert app.conf.topic_partitions == settings.kafka.partitions
    assert broker_urls("a:1, b:2") == ["kafka://a:1", "kafka://b:2"]
    topics = declare_topics(app, settings.kafka)
    assert [t.get_topic_name() for t in topics.events] == list(settings.kafka.event_topics)
    assert topics.dead_letter.get_topic_name() == settings.kafka.dead_letter_topic


async def test_messages_reach_the_handler_in_batches_as_raw_bytes() -> None:
    settings = make_settings()
    app = create_app(settings)
    topics = declare_topics(app, settings.kafka)
    handler = Recorder()
    (agent,) = register_agents(app, topics.events[:1], handler, batch_size=3, within_s=0.05, backoff=FAST)
    async with agent.test_context() as ctx:
        events = [
            await ctx.put(json.dumps({"n": i}).encode(), key=b"alice", partition=1, wait=False)
            for i in range(5)
        ]
        await wait_for(lambda: sum(len(b) for b in handler.batches) == 5)
        await wait_for(lambda: all(e.message.acked for e in events))
    assert [len(b) for b in handler.batches] == [3, 2]
    first = handler.batches[0][0]
    assert (first.topic, first.partition, first.offset, first.key) == (
        settings.kafka.ratings_topic,
        1,
        0,
        b"alice",
    )
    assert json.loads(first.value or b"") == {"n": 0}


async def test_a_failing_batch_is_retried_and_the_agent_keeps_consuming() -> None:
    settings = make_settings()
    app = create_app(settings)
    topics = declare_topics(app, settings.kafka)
    handler = Recorder(failures=2)
    (agent,) = register_agents(app, topics.events[1:2], handler, batch_size=1, within_s=0.05, backoff=FAST)
    async with agent.test_context() as ctx:
        await ctx.put(b"one", key=b"k", wait=False)
        await wait_for(lambda: len(handler.batches) == 1)
        await ctx.put(b"two", key=b"k", wait=False)
        await wait_for(lambda: len(handler.batches) == 2)
    assert handler.calls == 4
    assert [b[0].value for b in handler.batches] == [b"one", b"two"]


class _Event:
    """What ``handle_until_done`` uses of a Faust event: the message and ``ack``."""

    def __init__(self, offset: int) -> None:
        self.message = Message(
            "llmrec.ratings.v1", 0, offset, 0.0, 0, None, b"k", b"{}", b"", 0, 0, TP("llmrec.ratings.v1", 0)
        )
        # The conductor's reference for the one stream that consumes the message.
        self.message.incref()

    def ack(self) -> bool:
        return self.message.ack(None)  # type: ignore[arg-type]


async def test_events_stay_unacked_until_the_batch_is_done_even_if_faust_acks_them() -> None:
    handler = Recorder()
    handler.release.clear()
    events = [_Event(i) for i in range(3)]
    task = asyncio.create_task(handle_until_done(events, handler, backoff=FAST))  # type: ignore[arg-type]
    await wait_for(lambda: handler.calls == 1)
    for e in events:  # what take_events does when the agent is cancelled or asks for the next batch
        e.message.ack(None)  # type: ignore[arg-type]
    assert not any(e.message.acked for e in events)
    handler.release.set()
    await task
    assert all(e.message.acked for e in events)


async def test_a_batch_interrupted_by_shutdown_is_never_acked() -> None:
    handler = Recorder()
    handler.release.clear()
    events = [_Event(i) for i in range(2)]
    task = asyncio.create_task(handle_until_done(events, handler, backoff=FAST))  # type: ignore[arg-type]
    await wait_for(lambda: handler.calls == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for e in events:
        e.message.ack(None)  # type: ignore[arg-type]
    assert not any(e.message.acked for e in events)
