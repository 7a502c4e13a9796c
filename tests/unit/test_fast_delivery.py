"""The fast path around Faust's per-message ``wait_first`` (stream/fast_delivery.py), against a fake
consumer that records which path each call took."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from mode.services import WaitResults

from stream.fast_delivery import fast_wait_first, install


class FakeConsumer:
    """The attributes the fast path reads, and a ``wait_first`` that races its arguments as mode's does
    (as tasks, first to finish wins)."""

    def __init__(self) -> None:
        self.suspend_flow = asyncio.Event()
        self._stopped = asyncio.Event()
        self._crashed = asyncio.Event()
        self.original_calls = 0

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        self.original_calls += 1
        tasks = [asyncio.ensure_future(c) for c in coros]
        done, pending = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        winners = [c for c, t in zip(coros, tasks, strict=True) if t in done]
        return WaitResults(winners, [t.result() for t in tasks if t in done], False)


async def never() -> None:
    await asyncio.Event().wait()


async def immediate(log: list[str]) -> str:
    log.append("ran")
    return "delivered"


async def test_a_coroutine_that_never_suspends_wins_without_the_race() -> None:
    consumer = FakeConsumer()
    wait_first = fast_wait_first(consumer, consumer.wait_first)
    log: list[str] = []
    second = never()
    result = await wait_first(immediate(log), second)
    assert result.results == ["delivered"] and not result.stopped
    assert log == ["ran"]
    assert consumer.original_calls == 0
    # The loser was closed unstarted: awaiting it again is an error, not a hang.
    with pytest.raises(RuntimeError):
        await second


async def test_a_coroutine_that_suspends_continues_inside_the_original_race() -> None:
    consumer = FakeConsumer()
    wait_first = fast_wait_first(consumer, consumer.wait_first)
    gate = asyncio.Event()
    steps: list[str] = []

    async def blocked_delivery() -> int:
        steps.append("before")
        await gate.wait()  # suspends: the buffer is full
        steps.append("after")
        await asyncio.sleep(0)  # a bare yield after the resume is handled too
        return 7

    asyncio.get_running_loop().call_later(0.01, gate.set)
    result = await wait_first(blocked_delivery(), never())
    assert result.results == [7]
    assert steps == ["before", "after"]
    assert consumer.original_calls == 1


async def test_a_suspension_that_loses_the_race_is_cancelled_inside_the_coroutine() -> None:
    consumer = FakeConsumer()
    wait_first = fast_wait_first(consumer, consumer.wait_first)
    cleanup: list[str] = []

    async def blocked_forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleanup.append("finally ran")

    async def rebalance() -> str:
        await asyncio.sleep(0.01)
        return "suspended"

    result = await wait_first(blocked_forever(), rebalance())
    assert result.results == ["suspended"]
    assert cleanup == ["finally ran"]


async def test_an_error_raised_before_any_suspension_propagates() -> None:
    consumer = FakeConsumer()
    wait_first = fast_wait_first(consumer, consumer.wait_first)

    async def broken() -> None:
        raise ValueError("bad message")

    second = never()
    with pytest.raises(ValueError, match="bad message"):
        await wait_first(broken(), second)
    second.close()


@pytest.mark.parametrize("flag", ["suspend_flow", "_stopped", "_crashed"])
async def test_a_suspended_stopped_or_crashed_consumer_takes_the_original_path(flag: str) -> None:
    consumer = FakeConsumer()
    getattr(consumer, flag).set()
    wait_first = fast_wait_first(consumer, consumer.wait_first)
    log: list[str] = []
    await wait_first(immediate(log), never())
    assert consumer.original_calls == 1


async def test_other_calls_take_the_original_path() -> None:
    consumer = FakeConsumer()
    wait_first = fast_wait_first(consumer, consumer.wait_first)
    log: list[str] = []
    await wait_first(immediate(log))
    await wait_first(immediate(log), never(), timeout=1.0)
    assert consumer.original_calls == 2


def test_install_wraps_once() -> None:
    consumer = FakeConsumer()
    install(consumer)
    wrapped = consumer.wait_first
    install(consumer)
    assert consumer.wait_first is wrapped
