"""PostgreSQL state: the interaction ledger and user profiles. Protocols in ``llmrec.store.interface``."""

from llmrec.store.interface import (
    ApplyResult,
    EventStore,
    LedgerEntry,
    ProfileReader,
    ProfileUpdater,
    SeenItem,
    StoredProfile,
    StoreUnavailable,
)
from llmrec.store.migrate import migrate

__all__ = [
    "ApplyResult",
    "EventStore",
    "LedgerEntry",
    "ProfileReader",
    "ProfileUpdater",
    "SeenItem",
    "StoreUnavailable",
    "StoredProfile",
    "migrate",
]
