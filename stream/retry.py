"""Retry with capped exponential backoff, for failures that say nothing about the data (Triton, the
database or Kafka being away). There is no attempt limit: an event is never dropped because a service
is down, it waits; the log line per failed attempt is what an operator sees meanwhile."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from llmrec.logs import get_logger

T = TypeVar("T")
log = get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Backoff:
    """Delay before attempt ``n + 1`` is ``initial_s * multiplier ** n``, capped at ``max_s``, with
    +-``jitter`` relative noise so that workers retrying the same outage do not hit it in lockstep."""

    initial_s: float = 0.2
    multiplier: float = 2.0
    # The longest wait is also how long the worker may idle after the service is back: with 30 s, reviews
    # resumed up to 30 s after Triton's return (test_faults.py); 5 s costs one log line per 5 s of outage.
    max_s: float = 5.0
    jitter: float = 0.2

    def delay(self, attempt: int) -> float:
        base = min(self.max_s, self.initial_s * self.multiplier ** min(attempt, 64))
        return max(0.0, base * (1.0 + self.jitter * (2.0 * random.random() - 1.0)))


async def retry_transient(
    operation: Callable[[], Awaitable[T]],
    *,
    transient: tuple[type[BaseException], ...],
    what: str,
    backoff: Backoff,
    sleep: Sleep = asyncio.sleep,
) -> tuple[T, int]:
    """Await ``operation()`` until it succeeds; retry only the ``transient`` exceptions (anything else
    propagates). Returns the result and how many attempts failed before it. Cancellation propagates."""
    attempt = 0
    while True:
        try:
            return await operation(), attempt
        except transient as exc:
            delay = backoff.delay(attempt)
            attempt += 1
            log.warning(
                "transient failure, retrying",
                what=what,
                attempt=attempt,
                retry_in_s=round(delay, 3),
                error=f"{type(exc).__name__}: {exc}",
            )
            await sleep(delay)
