"""Pure parts of grpc_api.security: the token bucket, the per-client limiter, the tokens file, metadata."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from grpc_api.security import (
    RateLimiter,
    TokenBucket,
    TokenStore,
    _peer_host,
    bearer_token,
    interceptors,
    is_open,
    server_credentials,
)
from llmrec.settings import ApiSettings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_the_burst_then_refuses() -> None:
    bucket = TokenBucket(rate_per_s=2.0, capacity=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.retry_after_s(0.0) == pytest.approx(0.5)


def test_bucket_refills_at_its_rate_and_never_beyond_capacity() -> None:
    bucket = TokenBucket(rate_per_s=2.0, capacity=3, now=0.0)
    for _ in range(3):
        assert bucket.take(0.0)
    assert not bucket.take(0.4)  # 0.8 of a token
    assert bucket.take(0.5)  # 1.0
    assert not bucket.take(0.5)
    # A long idle time fills the bucket only up to its capacity.
    assert [bucket.take(1000.0) for _ in range(4)] == [True, True, True, False]


def test_bucket_ignores_a_clock_going_backwards() -> None:
    bucket = TokenBucket(rate_per_s=1.0, capacity=1, now=10.0)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)
    assert bucket.take(11.0)


@pytest.mark.parametrize(("rate", "capacity"), [(0.0, 1), (-1.0, 1), (1.0, 0.5)])
def test_bucket_rejects_nonsense(rate: float, capacity: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, capacity, now=0.0)


def test_limiter_keeps_one_bucket_per_client() -> None:
    clock = Clock()
    limiter = RateLimiter(1.0, 2, clock=clock)
    assert [limiter.allow("a")[0] for _ in range(3)] == [True, True, False]
    assert limiter.allow("b")[0]  # b has its own bucket
    allowed, wait_s = limiter.allow("a")
    assert not allowed and wait_s == pytest.approx(1.0)
    clock.now += 1.0
    assert limiter.allow("a")[0]


def test_limiter_default_burst_is_the_rate_but_at_least_one() -> None:
    assert RateLimiter(5.0).burst == 5.0
    assert RateLimiter(0.2).burst == 1.0


def test_limiter_forgets_the_least_recently_seen_clients() -> None:
    clock = Clock()
    limiter = RateLimiter(1.0, 1, clock=clock, max_clients=2)
    assert limiter.allow("a")[0] and limiter.allow("b")[0]
    assert not limiter.allow("a")[0]  # a is now the most recent
    assert limiter.allow("c")[0]  # evicts b
    assert not limiter.allow("a")[0]  # a kept its (empty) bucket
    assert limiter.allow("b")[0]  # b starts afresh


def test_tokens_file_lines() -> None:
    store = TokenStore.parse("# comment\n\nbare-token\nweb: s3cret \n")
    assert store.client_for("bare-token") == "token#3"
    assert store.client_for("s3cret") == "web"
    assert store.client_for("s3cre") is None
    assert store.client_for("") is None
    assert store.client_for("web:s3cret") is None
    # Only digests are kept, never the tokens.
    assert "s3cret" not in repr(store) and b"s3cret" not in b"".join(d for _, d in store.entries)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "web:\n", ":token\n"])
def test_tokens_file_errors_name_the_line_not_the_secret(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        TokenStore.parse(text)
    assert "token\n" not in str(caught.value) and "web" not in str(caught.value)


def test_bearer_token_from_metadata() -> None:
    assert bearer_token((("authorization", "Bearer abc"),)) == "abc"
    assert bearer_token((("x-other", "1"), ("Authorization", "bearer  abc "))) == "abc"
    assert bearer_token((("authorization", b"Bearer abc"),)) == "abc"
    assert bearer_token((("authorization", "Basic abc"),)) is None
    assert bearer_token((("authorization", "Bearer "),)) is None
    assert bearer_token(None) is None


def test_peer_host_drops_the_port() -> None:
    assert _peer_host("ipv4:10.0.0.1:5555") == "ipv4:10.0.0.1"
    assert _peer_host("ipv6:[::1]:5555") == "ipv6:[::1]"
    assert _peer_host("unix:/tmp/sock") == "unix:/tmp/sock"


def test_health_and_reflection_are_open_the_recommender_is_not() -> None:
    assert is_open("/grpc.health.v1.Health/Check")
    assert is_open("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    assert not is_open("/llmrec.v1.Recommender/Recommend")
    assert not is_open("/grpc.health.v1.Health")


def test_everything_is_off_by_default() -> None:
    api = ApiSettings()
    assert server_credentials(api) is None
    assert interceptors(api) == []


def test_settings_validation(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        ApiSettings(tls_cert_file=tmp_path / "cert.pem")
    with pytest.raises(ValidationError):
        ApiSettings(tls_client_ca_file=tmp_path / "ca.pem")
    with pytest.raises(ValidationError):
        ApiSettings(rate_limit_per_s=0)
    with pytest.raises(ValidationError):
        ApiSettings(rate_limit_burst=3)


def test_interceptors_follow_the_settings(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("web:s3cret\n")
    names = [type(i).__name__ for i in interceptors(ApiSettings(auth_tokens_file=tokens))]
    assert names == ["AuthInterceptor"]
    both = ApiSettings(auth_tokens_file=tokens, rate_limit_per_s=5, rate_limit_burst=10)
    assert [type(i).__name__ for i in interceptors(both)] == ["RateLimitInterceptor", "AuthInterceptor"]
