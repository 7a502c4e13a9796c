"""A pool ``check`` that pings only connections that sat idle, instead of every connection at checkout.

psycopg_pool's ``check_connection`` costs one round trip per checkout; for the API, whose requests are a
single read each, that doubled the database round trips. A connection handed back less than
``after_s`` ago was working then; if the server went away since, the next statement fails with an
``OperationalError`` (``StoreUnavailable``: the worker retries the batch, the API answers UNAVAILABLE,
which clients retry) and the pool discards the broken connection when it comes back.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

DEFAULT_AFTER_S = 1.0


class IdleCheck:
    """Pass ``check`` and ``reset`` to the pool: ``reset`` stamps a connection when it is handed back."""

    def __init__(self, after_s: float = DEFAULT_AFTER_S) -> None:
        self.after_s = after_s
        self._returned: weakref.WeakKeyDictionary[AsyncConnection[Any], float] = weakref.WeakKeyDictionary()

    async def check(self, conn: AsyncConnection[Any]) -> None:
        returned = self._returned.get(conn)
        if returned is None or time.monotonic() - returned > self.after_s:
            await AsyncConnectionPool.check_connection(conn)

    async def reset(self, conn: AsyncConnection[Any]) -> None:
        self._returned[conn] = time.monotonic()
