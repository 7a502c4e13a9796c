"""Access control on the real gRPC server (in process, on a free port, over the real PostgreSQL): bearer
tokens, TLS with client certificates (mTLS) and the per-client rate limit, through the Python client.

Certificates and keys are made with the `openssl` command line into the test's tmp_path; none is committed.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest
import structlog
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pki import make_ca, make_leaf
from pydantic import SecretStr

from grpc_api.server import SERVICE_NAME, ApiServer
from jobs.build_index import build_index
from llmrec.catalogue import build_catalogue
from llmrec.data_source import SAMPLE_DIR
from llmrec.settings import ApiSettings, PostgresSettings, Settings
from llmrec.store import migrate
from llmrec_client.client import RecommenderClient
from llmrec_client.errors import RemoteError, Unavailable
from tests.synthetic import genre_embeddings

pytestmark = pytest.mark.integration

DIM = 32
T = TypeVar("T")


@dataclass(frozen=True)
class Base:
    root: Path
    dsn: str
    item_id: str


@pytest.fixture(scope="module")
def base(postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Base:
    """One published index and a migrated database, shared by the servers of this module."""
    root: Path = tmp_path_factory.mktemp("api-access")
    full = build_catalogue(SAMPLE_DIR)
    catalogue = full.subset(
        i.item_id for i in sorted((i for i in full if i.genres), key=lambda i: (-i.members, i.item_id))[:100]
    )
    embeddings = genre_embeddings([i.genres for i in catalogue], dim=DIM, noise=0.3, seed=7)
    by_text = dict(zip(catalogue.texts_for_embedding(), embeddings, strict=True))
    build_index(
        settings_for(Base(root, postgres_dsn, ""), ApiSettings()),
        catalogue,
        lambda texts: np.stack([by_text[t] for t in texts]),
        progress=False,
    )
    migrate(postgres_dsn)
    return Base(root, postgres_dsn, next(iter(catalogue)).external_id)


def settings_for(base: Base, api: ApiSettings) -> Settings:
    return Settings(
        state_dir=base.root,
        artifacts_dir=base.root / "artifacts",
        postgres=PostgresSettings(dsn=SecretStr(base.dsn)),
        api=api,
    )


@asynccontextmanager
async def serving(base: Base, **access: Any) -> AsyncIterator[int]:
    server = ApiServer(
        settings_for(
            base, ApiSettings(host="127.0.0.1", port=0, metrics_port=0, grace_period_s=0.5, **access)
        )
    )
    port = await server.start()
    try:
        await server.wait_ready(60)
        yield port
    finally:
        await server.stop(0.5)


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """The sync client in a thread: the server runs on this test's event loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def client(port: int, **options: Any) -> RecommenderClient:
    return RecommenderClient(f"127.0.0.1:{port}", timeout_s=5.0, **options)


async def refused(fn: Callable[..., Any], *args: Any) -> RemoteError:
    with pytest.raises(RemoteError) as caught:
        await call(fn, *args)
    return caught.value


# -- tokens -----------------------------------------------------------------------------------------------


@pytest.fixture
def tokens(tmp_path: Path) -> tuple[Path, str, str]:
    web, bare = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    path = tmp_path / "tokens"
    path.write_text(f"# clients of the API\nweb:{web}\n{bare}\n")
    return path, web, bare


async def test_tokens(
    base: Base, tokens: tuple[Path, str, str], capfd: pytest.CaptureFixture[str], caplog: Any
) -> None:
    path, web, bare = tokens
    with structlog.testing.capture_logs() as events:
        async with serving(base, auth_tokens_file=path) as port:
            for token in (None, "wrong", web[:-1], f"web:{web}"):
                with client(port, token=token) as c:
                    error = await refused(c.similar_items, base.item_id)
                    assert error.code == "UNAUTHENTICATED"
                    assert web not in str(error) and bare not in str(error)
                    # Health stays open so that load balancers need no token.
                    assert await call(c.health) == "SERVING"
            for token in (web, bare):
                with client(port, token=token) as c:
                    assert len((await call(c.similar_items, base.item_id, 3)).items) == 3
                    assert (await call(c.recommend, "someone", 2)).strategy == "cold_start"
            # Reflection too, without a token.
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = reflection_pb2_grpc.ServerReflectionStub(channel)
                request = reflection_pb2.ServerReflectionRequest(list_services="")
                names = {
                    s.name
                    async for reply in stub.ServerReflectionInfo(iter([request]), timeout=5)
                    for s in reply.list_services_response.service
                }
            assert SERVICE_NAME in names

    statuses = [e.get("status") for e in events if e.get("event") == "request"]
    assert statuses.count("UNAUTHENTICATED") == 4 and statuses.count("OK") == 4
    out, err = capfd.readouterr()
    logged = repr(events) + out + err + caplog.text
    assert web not in logged and bare not in logged


async def test_a_missing_tokens_file_stops_the_server_from_starting(base: Base, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ApiServer(settings_for(base, ApiSettings(port=0, auth_tokens_file=tmp_path / "absent")))


# -- TLS --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path  # a client certificate from another CA
    rogue_key: Path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = make_ca(tmp_path, "test-ca")
    server = make_leaf(
        tmp_path, "localhost", ca, "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"
    )
    good = make_leaf(tmp_path, "client-a", ca, "extendedKeyUsage=clientAuth")
    rogue = make_leaf(tmp_path, "rogue", make_ca(tmp_path, "other-ca"), "extendedKeyUsage=clientAuth")
    return Pki(ca[0], *server, *good, *rogue)


async def test_mtls(base: Base, pki: Pki) -> None:
    access = {"tls_cert_file": pki.server_cert, "tls_key_file": pki.server_key, "tls_client_ca_file": pki.ca}
    async with serving(base, **access) as port:
        for options in (
            {},  # plaintext against a TLS port
            {"tls_ca_file": pki.ca},  # TLS, but no client certificate
            {"tls_ca_file": pki.ca, "tls_cert_file": pki.rogue_cert, "tls_key_file": pki.rogue_key},
        ):
            with client(port, **options) as c, pytest.raises(Unavailable):
                await call(c.similar_items, base.item_id, timeout_s=3.0)
        with client(
            port, tls_ca_file=pki.ca, tls_cert_file=pki.client_cert, tls_key_file=pki.client_key
        ) as c:
            assert await call(c.health) == "SERVING"
            assert len((await call(c.similar_items, base.item_id, 3)).items) == 3


async def test_tls_without_client_certificates(base: Base, pki: Pki) -> None:
    async with serving(base, tls_cert_file=pki.server_cert, tls_key_file=pki.server_key) as port:
        with client(port, tls_ca_file=pki.ca) as c:
            assert len((await call(c.similar_items, base.item_id, 3)).items) == 3
        with client(port) as c, pytest.raises(Unavailable):
            await call(c.similar_items, base.item_id, timeout_s=3.0)


# -- rate limit -------------------------------------------------------------------------------------------


async def test_rate_limit_refuses_a_burst_then_recovers(base: Base) -> None:
    async with serving(base, rate_limit_per_s=1.0, rate_limit_burst=3) as port:
        with client(port) as c:
            outcomes: list[str] = []
            for _ in range(6):
                try:
                    await call(c.similar_items, base.item_id, 2)
                    outcomes.append("OK")
                except RemoteError as exc:
                    outcomes.append(exc.code)
                    assert "rate limit" in str(exc)
            # The first three fit the burst; within the second or two the six calls take, refills give at
            # most one or two more.
            assert outcomes[:3] == ["OK"] * 3
            assert "RESOURCE_EXHAUSTED" in outcomes
            assert await call(c.health) == "SERVING"  # health is never limited
            await asyncio.sleep(1.1)
            assert len((await call(c.similar_items, base.item_id, 2)).items) == 2


async def test_rate_limit_is_per_token_client(base: Base, tokens: tuple[Path, str, str]) -> None:
    path, web, bare = tokens
    async with serving(base, auth_tokens_file=path, rate_limit_per_s=0.5, rate_limit_burst=2) as port:
        with client(port, token=web) as a, client(port, token=bare) as b:
            for _ in range(2):
                await call(a.similar_items, base.item_id, 2)
            assert (await refused(a.similar_items, base.item_id)).code == "RESOURCE_EXHAUSTED"
            # Same address, another token: its own bucket.
            assert len((await call(b.similar_items, base.item_id, 2)).items) == 2
