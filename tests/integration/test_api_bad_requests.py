"""Bad requests to the real gRPC server (in process, on a free port, over the real PostgreSQL): each one
gets INVALID_ARGUMENT (or RESOURCE_EXHAUSTED for an oversized message) with a short message that says
what was wrong, never INTERNAL and never a traceback; a user id that looks like SQL is only data.

Requests go through a plain ``grpc.aio`` channel and the generated stub, so the test sees the status code
and details exactly as any client would, and can send bytes no well-behaved client would build.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psycopg
import pytest
from pydantic import SecretStr

from grpc_api.server import SERVICE_NAME, ApiServer
from jobs.build_index import build_index
from llmrec.catalogue import Catalogue, build_catalogue
from llmrec.data_source import SAMPLE_DIR
from llmrec.settings import ApiSettings, PostgresSettings, Settings
from llmrec.store import migrate
from llmrec_client.v1 import recommender_pb2 as pb
from llmrec_client.v1 import recommender_pb2_grpc
from tests.synthetic import genre_embeddings

pytestmark = pytest.mark.integration

DIM = 32
MAX_K = 100  # ApiSettings' default
DEFAULT_K = 10
MAX_MESSAGE_BYTES = 1024 * 1024  # the server's limit here; smaller than the default to keep the test light
MAX_DETAILS_CHARS = 2000  # a useful message is a sentence or two, not a dump


@dataclass
class Api:
    server: ApiServer
    channel: grpc.aio.Channel
    stub: Any  # recommender_pb2_grpc.RecommenderStub (generated code is untyped)
    catalogue: Catalogue


def sample_items() -> Catalogue:
    full = build_catalogue(SAMPLE_DIR)
    top = sorted((i for i in full if i.genres), key=lambda i: (-i.members, i.item_id))[:200]
    return full.subset(i.item_id for i in top)


@pytest.fixture(scope="module")
async def api(postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    root: Path = tmp_path_factory.mktemp("api-bad-requests")
    settings = Settings(
        state_dir=root,
        artifacts_dir=root / "artifacts",
        postgres=PostgresSettings(dsn=SecretStr(postgres_dsn)),
        api=ApiSettings(port=0, metrics_port=0, grace_period_s=1.0, max_message_bytes=MAX_MESSAGE_BYTES),
    )
    assert settings.api.max_k == MAX_K
    catalogue = sample_items()
    embeddings = genre_embeddings([i.genres for i in catalogue], dim=DIM, noise=0.3, seed=5)
    by_text = dict(zip(catalogue.texts_for_embedding(), embeddings, strict=True))
    build_index(settings, catalogue, lambda texts: np.stack([by_text[t] for t in texts]), progress=False)
    migrate(postgres_dsn)

    server = ApiServer(settings)
    port = await server.start()
    await server.wait_ready(60)
    # The client may send far more than the server accepts: the server's limit is what is under test.
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 * MAX_MESSAGE_BYTES)]
    )
    try:
        yield Api(server, channel, recommender_pb2_grpc.RecommenderStub(channel), catalogue)  # type: ignore[no-untyped-call]
    finally:
        await channel.close()
        await server.stop(1.0)


async def rejected(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    """The status of a call that must fail; its details must be a short message, not internals."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    code, details = caught.value.code(), caught.value.details() or ""
    assert code is not grpc.StatusCode.INTERNAL and code is not grpc.StatusCode.UNKNOWN, details
    assert details, f"{code.name} without a message"
    assert len(details) <= MAX_DETAILS_CHARS, f"{len(details)}-character details: {details[:200]}..."
    for leak in ("Traceback", 'File "', "Exception", "psycopg", "SELECT ", "postgresql://"):
        assert leak not in details, f"{leak!r} in details: {details}"
    return code, details


def recommend(api: Api, user_id: str = "someone", k: int = 0, **fields: Any) -> Awaitable[Any]:
    call: Awaitable[Any] = api.stub.Recommend(pb.RecommendRequest(user_id=user_id, k=k, **fields), timeout=10)
    return call


# -- k ----------------------------------------------------------------------------------------------------


async def test_k_zero_means_the_default_and_max_k_is_allowed(api: Api) -> None:
    assert len((await recommend(api, k=0)).items) == DEFAULT_K
    assert len((await recommend(api, k=MAX_K)).items) == MAX_K
    similar = await api.stub.SimilarItems(
        pb.SimilarItemsRequest(item_id=next(iter(api.catalogue)).external_id), timeout=10
    )
    assert len(similar.items) == DEFAULT_K


@pytest.mark.parametrize("k", [MAX_K + 1, 1000, 2**32 - 1])
async def test_k_above_max_k_is_invalid(api: Api, k: int) -> None:
    for call in (
        recommend(api, k=k),
        api.stub.SimilarItems(
            pb.SimilarItemsRequest(item_id=next(iter(api.catalogue)).external_id, k=k), timeout=10
        ),
    ):
        code, details = await rejected(call)
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert f"k must be between 1 and {MAX_K}" in details


@pytest.mark.parametrize("item_id", ["", " mal:1", "mal:1\n", "x" * 257, "a\x00b"])
async def test_similar_items_of_a_malformed_item_id_is_invalid(api: Api, item_id: str) -> None:
    code, details = await rejected(api.stub.SimilarItems(pb.SimilarItemsRequest(item_id=item_id), timeout=10))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "item_id" in details


async def test_similar_items_of_an_unknown_item_is_not_found(api: Api) -> None:
    code, details = await rejected(
        api.stub.SimilarItems(pb.SimilarItemsRequest(item_id="mal:999999999"), timeout=10)
    )
    assert code is grpc.StatusCode.NOT_FOUND and "mal:999999999" in details


# -- user ids ---------------------------------------------------------------------------------------------

MALFORMED_USER_IDS = {
    "empty": "",
    "space": " ",
    "inner space": "john smith",
    "leading dash": "-alice",
    "leading dot": ".alice",
    "129 characters": "u" * 129,
    "a megabyte-ish": "u" * 500_000,
    "newline": "alice\n",
    "nul": "ali\x00ce",
    "control character": "ali\x07ce",
    "non-ascii letter": "zoë",
    "emoji": "alice😀",
    "quote and semicolon": "x'; DROP TABLE interactions;--",
    "sql comment": "admin'--",
    "percent wildcard": "al%",
    "slash": "../../etc/passwd",
}


@pytest.mark.parametrize("user_id", MALFORMED_USER_IDS.values(), ids=MALFORMED_USER_IDS.keys())
async def test_a_malformed_user_id_is_invalid(api: Api, user_id: str) -> None:
    for call in (
        recommend(api, user_id=user_id),
        api.stub.GetUserProfile(pb.GetUserProfileRequest(user_id=user_id), timeout=10),
    ):
        code, details = await rejected(call)
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert "user_id must be 1 to 128 characters" in details


async def test_a_user_id_that_is_not_utf8_on_the_wire_is_invalid(api: Api) -> None:
    """proto3 strings must be UTF-8: a request with other bytes cannot even be decoded."""
    raw = api.channel.unary_unary(f"/{SERVICE_NAME}/Recommend")  # bytes in, bytes out
    bad = b"\x0a\x04al\xffe"  # field 1 (user_id), 4 bytes, one of them not UTF-8
    code, _details = await rejected(raw(bad, timeout=10))
    assert code is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_request_that_is_not_protobuf_is_invalid(api: Api) -> None:
    raw = api.channel.unary_unary(f"/{SERVICE_NAME}/Recommend")
    code, _ = await rejected(raw(b"\xff\xff\xff\xff\xff", timeout=10))
    assert code is grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "user_id", ["Robert--", "1:OR:1", "admin@x.y--", "DROP.TABLE.interactions", "a_._:@-"]
)
async def test_a_sql_looking_user_id_is_only_data(api: Api, user_id: str, postgres_dsn: str) -> None:
    """Ids made of the allowed characters that would matter in hand-built SQL: a cold start, nothing else."""
    answer = await recommend(api, user_id=user_id, k=5)
    assert answer.strategy == "cold_start" and answer.user_id == user_id and len(answer.items) == 5
    code, details = await rejected(
        api.stub.GetUserProfile(pb.GetUserProfileRequest(user_id=user_id), timeout=10)
    )
    assert code is grpc.StatusCode.NOT_FOUND and user_id in details
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT to_regclass('interactions') IS NOT NULL").fetchone() == (True,)


# -- genres -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["include", "exclude"])
async def test_an_unknown_genre_is_invalid_and_the_known_ones_are_listed(api: Api, where: str) -> None:
    code, details = await rejected(recommend(api, genres=pb.GenreFilter(**{where: ["Action", "Mecha-ish"]})))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown genre 'Mecha-ish'" in details and "Action" in details


async def test_a_huge_unknown_genre_name_gets_a_short_message(api: Api) -> None:
    code, details = await rejected(recommend(api, genres=pb.GenreFilter(include=["x" * 200_000])))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "unknown genre" in details


async def test_genres_differing_in_case_and_spaces_are_known(api: Api) -> None:
    answer = await recommend(api, k=5, genres=pb.GenreFilter(include=[" action "], exclude=["COMEDY"]))
    assert answer.items and all("Action" in i.genres and "Comedy" not in i.genres for i in answer.items)


# -- size -------------------------------------------------------------------------------------------------


async def test_a_message_over_the_size_limit_is_refused(api: Api) -> None:
    code, details = await rejected(recommend(api, user_id="u" * (MAX_MESSAGE_BYTES + 1)))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(MAX_MESSAGE_BYTES) in details
    # The server is still serving.
    assert len((await recommend(api, k=3)).items) == 3
