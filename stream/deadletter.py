"""Where the worker sends what it rejects. The record itself (``DeadLetter``, its JSON form and how it is
read back and replayed) lives in the kernel, ``llmrec.events.dead_letters``, so the API's admin page reads
the same format the worker writes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from llmrec.events.dead_letters import DeadLetter

__all__ = ["DeadLetter", "DeadLetterSink", "SinkUnavailable"]


class SinkUnavailable(Exception):
    """The dead-letter topic could not be written (broker away, timeout). Transient: retried."""


class DeadLetterSink(Protocol):
    async def send(self, letters: Sequence[DeadLetter]) -> None:
        """Write every letter and return once the broker has them. Raises ``SinkUnavailable`` when the
        broker cannot be reached (the caller retries)."""
        ...
