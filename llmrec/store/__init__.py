"""PostgreSQL state: the interaction ledger, user profiles and the catalogue. Protocols in
``llmrec.store.interface``."""

from llmrec.store.interface import (
    ApplyResult,
    CatalogueChange,
    CatalogueStore,
    EventStore,
    ItemApplyResult,
    ItemChange,
    ItemChangeKind,
    ItemRecord,
    LedgerEntry,
    ProfileReader,
    ProfileUpdater,
    SeenItem,
    StoredItem,
    StoredProfile,
    StoreUnavailable,
    Version,
    item_content_hash,
)
from llmrec.store.migrate import migrate

__all__ = [
    "ApplyResult",
    "CatalogueChange",
    "CatalogueStore",
    "EventStore",
    "ItemApplyResult",
    "ItemChange",
    "ItemChangeKind",
    "ItemRecord",
    "LedgerEntry",
    "ProfileReader",
    "ProfileUpdater",
    "SeenItem",
    "StoreUnavailable",
    "StoredItem",
    "StoredProfile",
    "Version",
    "item_content_hash",
    "migrate",
]
