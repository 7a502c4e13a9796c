"""Item identity (``llmrec.item_ids``): the catalogue's string id outside, a stable 62-bit key inside, and
the same key function in the SQL migration that re-keys stored rows."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmrec.catalogue import Catalogue, Item
from llmrec.item_ids import (
    KEY_BITS,
    KEY_MASK,
    MAL_NAMESPACE,
    MOVIELENS_NAMESPACE,
    item_key,
    item_key_sql,
    item_keys,
    mal_item_id,
    namespaced_id,
    native_id,
)

# Computed once (the first 8 bytes of SHA-256("mal:5114"), 0x1754c078aaa7f5ee, masked to 62 bits) and
# written here: a key that changed would silently re-key every stored interaction and published index.
MAL_5114_KEY = 1681180185407780334


def test_item_key_is_stable() -> None:
    assert item_key("mal:5114") == MAL_5114_KEY
    assert item_key(mal_item_id(5114)) == MAL_5114_KEY


@pytest.mark.parametrize(
    "item_id", ["mal:5114", "mal:1", "ml:1", "sku-123", "Café crème 250 g", "x" * 256, ""]
)
def test_item_key_is_positive_and_within_62_bits(item_id: str) -> None:
    key = item_key(item_id)
    assert 0 < key < 2**62 and key == key & KEY_MASK
    assert KEY_BITS == 62 and KEY_MASK == 2**62 - 1


@given(st.text(max_size=300))
def test_any_id_gets_a_non_negative_62_bit_key_that_fits_int64(item_id: str) -> None:
    key = item_key(item_id)
    assert 0 <= key <= KEY_MASK < 2**63
    assert key == item_key(item_id)  # the same from any process: no state, no lookup


def test_ids_that_differ_get_different_keys() -> None:
    ids = ["mal:5114", "mal:05114", "MAL:5114", "5114", "ml:5114", "mal:5114 ", "mal:5115"]
    assert len({item_key(i) for i in ids}) == len(ids)


def test_item_keys_is_item_key_over_many_ids_as_int64() -> None:
    ids = ["mal:5114", "ml:1", "sku-1"]
    keys = item_keys(ids)
    assert keys.dtype == np.int64 and keys.tolist() == [item_key(i) for i in ids]
    assert item_keys(iter(ids)).tolist() == keys.tolist()  # any iterable
    assert item_keys([]).tolist() == []


def test_namespaced_ids() -> None:
    assert namespaced_id(MAL_NAMESPACE, 5114) == mal_item_id(5114) == "mal:5114"
    assert namespaced_id(MOVIELENS_NAMESPACE, 1) == "ml:1"
    assert namespaced_id("shop", "sku-1") == "shop:sku-1"


@pytest.mark.parametrize(
    ("namespace", "native"), [("mal", 5114), ("ml", 1), ("mal", "a:b"), ("shop", "sku-1"), ("mal", "")]
)
def test_native_id_round_trips(namespace: str, native: int | str) -> None:
    assert native_id(namespace, namespaced_id(namespace, native)) == str(native)


@pytest.mark.parametrize(
    "item_id", ["ml:5114", "5114", "mal5114", "MAL:5114", " mal:5114", "xmal:5114", "mal"]
)
def test_native_id_of_another_namespace_is_a_value_error(item_id: str) -> None:
    with pytest.raises(ValueError, match="not in the 'mal' namespace"):
        native_id(MAL_NAMESPACE, item_id)


def test_a_catalogue_item_is_mal_outside_and_keyed_inside() -> None:
    item = Item(item_id=5114, title="Fullmetal Alchemist: Brotherhood")
    assert item.external_id == "mal:5114" and item.key == MAL_5114_KEY
    catalogue = Catalogue.from_items([Item(item_id=i, title=f"T{i}") for i in (30, 5114, 1)])
    assert list(catalogue.keys) == [catalogue[i].key for i in catalogue.item_ids]
    assert list(catalogue.keys) == item_keys(mal_item_id(i) for i in catalogue.item_ids).tolist()


def test_the_migration_computes_keys_with_the_python_key_function() -> None:
    """003 re-keys the ledger's MAL ids and the catalogue's string ids in PostgreSQL: its expressions must be
    ``item_key_sql``, so that the SQL and ``item_key`` stay one function."""
    sql = (resources.files("llmrec.store") / "migrations" / "003_item_keys.sql").read_text(encoding="utf-8")
    ledger = item_key_sql("'mal:' || item_id::text")
    catalogue = item_key_sql("item_id")
    assert f"UPDATE interactions\nSET item_id = {ledger};" in sql
    assert f"UPDATE catalogue_items\nSET item_key = {catalogue};" in sql
    assert sql.count(ledger) == 1 and sql.count(catalogue) == 1
    assert sql.count("sha256(") == 2  # no third, hand-written copy of the key function
    assert str(KEY_MASK) in ledger and "convert_to('mal:' || item_id::text, 'UTF8')" in ledger
