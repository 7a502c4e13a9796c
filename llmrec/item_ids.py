"""Item identity: the catalogue owner's string id outside, a 62-bit integer key inside.

Users name items with opaque strings (``mal:5114``, ``ml:1``, ``sku-123``: the events' ``item_id``, the
API's ``item_id``). Inside, the FAISS index, the interaction ledger and the ranker need integers, so every
item has a **key**: the first 8 bytes of the SHA-256 of its UTF-8 id, big-endian, masked to 62 bits.

Why a hash rather than a number handed out by the catalogue: every process (worker, API, index builder,
trainer) computes the same key from the id alone, with no lookup and no coordination, so an interaction
can be keyed before its item arrives and several API processes agree without talking. The price is a
collision chance of about n^2 / 2^63 (5e-8 at a million items); the catalogue table's unique key index
refuses the second of two colliding ids instead of merging the two items. PostgreSQL computes the same
key with ``ITEM_KEY_SQL`` (migrations use it to re-key stored rows).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

KEY_BITS = 62
KEY_MASK = (1 << KEY_BITS) - 1

# Namespaces of the importers shipped with the project; a catalogue owner picks their own ids freely.
MAL_NAMESPACE = "mal"
MOVIELENS_NAMESPACE = "ml"

# The same function in SQL, for a text expression in place of {id}.
ITEM_KEY_SQL = (
    "(('x' || substr(encode(sha256(convert_to({id}, 'UTF8')), 'hex'), 1, 16))::bit(64)::bigint & {mask})"
)


def item_key(item_id: str) -> int:
    """The internal integer key of the item whose external id is ``item_id``."""
    digest = hashlib.sha256(item_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & KEY_MASK


def item_keys(item_ids: Iterable[str]) -> npt.NDArray[np.int64]:
    return np.fromiter((item_key(i) for i in item_ids), dtype=np.int64)


def namespaced_id(namespace: str, native_id: int | str) -> str:
    """``namespaced_id("mal", 5114) == "mal:5114"``: the external id an importer gives a data set's item."""
    return f"{namespace}:{native_id}"


def mal_item_id(anime_id: int) -> str:
    return namespaced_id(MAL_NAMESPACE, anime_id)


def native_id(namespace: str, item_id: str) -> str:
    """The data set's own id inside ``namespace:<id>``; ``ValueError`` for an id of another namespace."""
    prefix = f"{namespace}:"
    if not item_id.startswith(prefix):
        raise ValueError(f"item id {item_id!r} is not in the {namespace!r} namespace")
    return item_id[len(prefix) :]


def item_key_sql(expression: str) -> str:
    """``ITEM_KEY_SQL`` applied to a SQL text expression (a column name or a literal)."""
    return ITEM_KEY_SQL.format(id=expression, mask=KEY_MASK)
