"""PostgreSQL store pieces that need no server: the binary vector codec and the unreachable-server error."""

from __future__ import annotations

import logging
import socket
import struct

import numpy as np
import pytest

from llmrec.store import StoreUnavailable
from llmrec.store.arrays import FLOAT4_OID, dump_float4_array, load_float4_array
from llmrec.store.postgres import PostgresStore


def test_vectors_round_trip_through_the_binary_array_format() -> None:
    vector = np.array([0.5, -1.25, 3.0e-8, 1e30], dtype=np.float32)
    data = dump_float4_array(vector)
    assert struct.unpack_from("!iiiii", data) == (1, 0, FLOAT4_OID, 4, 1)
    np.testing.assert_array_equal(load_float4_array(data), vector)
    assert load_float4_array(dump_float4_array(np.zeros(0, np.float32))).shape == (0,)


def test_a_two_dimensional_array_is_refused_on_load() -> None:
    data = struct.pack("!iiiiiii", 2, 0, FLOAT4_OID, 1, 1, 1, 1) + struct.pack("!if", 4, 1.0)
    with pytest.raises(Exception, match="one-dimensional"):
        load_float4_array(data)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_server_is_a_transient_error_that_hides_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "s3cr3t-pa55"
    store = PostgresStore(f"postgresql://llmrec:{secret}@127.0.0.1:{_closed_port()}/llmrec", min_size=1)
    with caplog.at_level(logging.DEBUG), pytest.raises(StoreUnavailable) as info:
        await store.open(timeout=1.0)
    await store.close()
    assert secret not in str(info.value)
    assert secret not in repr(info.value.__cause__)
    assert secret not in caplog.text
