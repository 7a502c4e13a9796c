"""An async connection pool whose reconnect attempts are at most ``max_wait_s`` apart.

psycopg_pool retries a lost connection with a doubling delay (1 s, 2 s, 4 s, ... up to its
``reconnect_timeout``), so after a 30 s database restart the next attempt could be 30 s away and the
worker would sit idle that long with the server already back. Capping the delay bounds that idle time.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool
from psycopg_pool.base import AttemptWithBackoff


class CappedAttempt(AttemptWithBackoff):
    """``AttemptWithBackoff`` whose delay stops doubling at ``max_delay_s``."""

    def __init__(self, *, timeout: float, max_delay_s: float) -> None:
        super().__init__(timeout=timeout)
        self.max_delay_s = max_delay_s

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, self.max_delay_s)


class CappedReconnectPool(AsyncConnectionPool[Any]):
    """``AsyncConnectionPool`` with reconnect attempts at most ``reconnect_max_wait_s`` apart."""

    def __init__(self, *args: Any, reconnect_max_wait_s: float = 5.0, **kwargs: Any) -> None:
        self.reconnect_max_wait_s = reconnect_max_wait_s
        super().__init__(*args, **kwargs)

    async def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        # The pool passes None for a first attempt and the same object back for its retries.
        if attempt is None:
            attempt = CappedAttempt(timeout=self.reconnect_timeout, max_delay_s=self.reconnect_max_wait_s)
        await super()._add_connection(attempt, growing)
