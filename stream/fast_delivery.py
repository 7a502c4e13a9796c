"""A fast path for Faust's per-message delivery, the worker's largest single cost once batching was in.

Faust's fetcher hands every fetched message to the streams with
``await consumer.wait_first(deliver(message), consumer.suspend_flow.wait())``: a race between the delivery
and a rebalance suspending the flow. ``mode``'s ``wait_first`` wraps both coroutines, plus the consumer's
stopped and crashed events, in four asyncio tasks and cancels the three losers: about a quarter of the
worker's CPU at a few thousand events/s (py-spy profile, ``python -m bench.ingest --quick --profile``).

Almost always the delivery finishes without suspending (the stream's buffer has room), and then the race
is decided before it starts. ``install`` wraps the consumer's ``wait_first`` so that a two-coroutine race
first runs the first coroutine up to its first suspension, synchronously:
- it finished: it won, exactly as it would have as a task (the flow was not suspended and the consumer
  neither stopped nor crashed, which is checked first); the second coroutine is closed unstarted;
- it suspended (a full buffer, say): the rest of it continues as a task inside the original race, so a
  rebalance still interrupts it as before.
Anything else (other arities, a timeout, a suspended flow) goes to the original ``wait_first``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from mode.services import WaitResults

WaitFirst = Callable[..., Awaitable[WaitResults]]


class _Resumed:
    """Awaitable that continues a coroutine which already yielded ``pending`` to the caller: the event
    loop sees ``pending`` (the future it waits on) first, then the coroutine's further yields, and
    ``send``/``throw`` reach the coroutine as if it had been awaited from the start."""

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coro = coro
        self._pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        pending = self._pending
        while True:
            try:
                sent = yield pending
            except BaseException as exc:  # cancellation included: the coroutine handles it
                try:
                    pending = self._coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = self._coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def _run_resumed(coro: Coroutine[Any, Any, Any], pending: Any) -> Any:
    return await _Resumed(coro, pending)


def fast_wait_first(consumer: Any, original: WaitFirst) -> WaitFirst:
    """``consumer.wait_first`` with the fast path described in the module docstring."""

    async def wait_first(*coros: Any, timeout: Any = None) -> WaitResults:
        if (
            len(coros) != 2
            or timeout is not None
            or not isinstance(coros[0], Coroutine)
            or consumer.suspend_flow.is_set()
            or consumer._stopped.is_set()
            or consumer._crashed.is_set()
        ):
            return await original(*coros, timeout=timeout)
        first, second = coros
        try:
            pending = first.send(None)
        except StopIteration as done:
            if isinstance(second, Coroutine):
                second.close()
            return WaitResults([first], [done.value], False)
        return await original(_run_resumed(first, pending), second, timeout=timeout)

    return wait_first


def install(consumer: Any) -> None:
    """Wrap ``consumer.wait_first`` (a Faust transport consumer) with the fast path."""
    if getattr(consumer, "_llmrec_fast_delivery", False):
        return
    consumer.wait_first = fast_wait_first(consumer, consumer.wait_first)
    consumer._llmrec_fast_delivery = True
