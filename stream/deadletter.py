"""The dead-letter record: what an operator (or a replay tool) needs to understand and resubmit a message.

One JSON object per rejected message on ``<prefix>.deadletter.v1``, keyed like the original (the user id):

    {"reason": "schema_violation", "detail": "rating: ...", "topic": "llmrec.ratings.v1", "partition": 2,
     "offset": 1041, "key": "alice", "payload": "{...}", "payload_base64": "eyJ...", "failed_at": "...Z"}

``reason`` is a stable code from ``llmrec.events.validation.RejectReason``.
``payload`` is the original bytes as text (undecodable bytes replaced) for people; ``payload_base64`` is
the exact bytes, for a replay.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class SinkUnavailable(Exception):
    """The dead-letter topic could not be written (broker away, timeout). Transient: retried."""


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    payload: bytes | None
    failed_at: datetime

    def to_json(self) -> bytes:
        payload = self.payload
        record = {
            "reason": self.reason,
            "detail": self.detail,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": self.key.decode("utf-8", errors="replace") if self.key is not None else None,
            "payload": payload.decode("utf-8", errors="replace") if payload is not None else None,
            "payload_base64": base64.b64encode(payload).decode("ascii") if payload is not None else None,
            "failed_at": self.failed_at.isoformat().replace("+00:00", "Z"),
        }
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class DeadLetterSink(Protocol):
    async def send(self, letters: Sequence[DeadLetter]) -> None:
        """Write every letter and return once the broker has them. Raises ``SinkUnavailable`` when the
        broker cannot be reached (the caller retries)."""
        ...
