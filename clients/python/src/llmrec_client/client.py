"""A small synchronous client for the recommendation API, used by backend services, the CLI, the demo and
tests.

Answers are the plain dataclasses of ``llmrec_client.models``; failures are the domain errors of
``llmrec_client.errors`` (``InvalidRequest``, ``NotFound``, ``Unavailable``, ``DeadlineExceeded``), decoded
through the same table the server encodes them with. Every call has a deadline (``timeout_s``).
UNAVAILABLE (and a server-side CANCELLED) is retried by gRPC itself (every RPC here is a read, so a retry is
safe).

Against a server with access control (the server's ``grpc_api.security``): ``token`` is sent as
``authorization: Bearer <token>`` on every call; ``tls_ca_file`` (the server's CA, else the system's
roots) and ``tls_cert_file`` + ``tls_key_file`` (a client certificate, for mTLS) make the channel TLS.
Without them the client is the plain, insecure client it always was.

Example::

    with RecommenderClient("127.0.0.1:50051") as client:
        client.wait_until_serving(timeout_s=30)
        for item in client.recommend("alice", k=5, include_genres=["Sci-Fi"]).items:
            print(item.title, item.reason)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc

from llmrec_client import health_check, models
from llmrec_client.errors import DeadlineExceeded, Unavailable
from llmrec_client.status import error_for
from llmrec_client.v1 import recommender_pb2, recommender_pb2_grpc

DEFAULT_TIMEOUT_S = 5.0
SERVICE_NAME: str = recommender_pb2.DESCRIPTOR.services_by_name["Recommender"].full_name
T = TypeVar("T")

# Retried by the channel: three attempts with jittered backoff, for UNAVAILABLE (the server is starting,
# stopping, or its database blinked) and for CANCELLED sent by the server: a call that reaches a server
# in the middle of its shutdown is cancelled there (seen in the restart-under-load test). gRPC retries
# only statuses the server sends, so a call the caller cancels itself is never retried, and every RPC
# here is a read. Deadlines still bound the total time.
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": SERVICE_NAME}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
                },
            }
        ]
    }
)


def _datetime(stamp: Any, present: bool) -> datetime | None:
    if not present:
        return None
    value: datetime = stamp.ToDatetime(tzinfo=UTC)
    return value


def _item(msg: recommender_pb2.ScoredItem) -> models.ScoredItem:
    return models.ScoredItem(
        item_id=msg.item_id, title=msg.title, genres=tuple(msg.genres), score=msg.score, reason=msg.reason
    )


def decode_recommendations(msg: recommender_pb2.RecommendResponse) -> models.Recommendations:
    strategy: models.Strategy = (
        models.PERSONALIZED if msg.strategy == models.PERSONALIZED else models.COLD_START
    )
    return models.Recommendations(
        user_id=msg.user_id,
        items=tuple(_item(i) for i in msg.items),
        strategy=strategy,
        model_version=msg.model_version,
    )


def decode_similar(msg: recommender_pb2.SimilarItemsResponse) -> models.SimilarItems:
    return models.SimilarItems(
        item_id=msg.item_id, items=tuple(_item(i) for i in msg.items), model_version=msg.model_version
    )


def decode_profile(msg: recommender_pb2.UserProfile) -> models.UserProfile:
    return models.UserProfile(
        user_id=msg.user_id,
        ratings=msg.ratings,
        reviews=msg.reviews,
        watch_events=msg.watch_events,
        top_genres=tuple(models.GenreWeight(genre=g.genre, weight=g.weight) for g in msg.top_genres),
        last_event_time=_datetime(msg.last_event_time, msg.HasField("last_event_time")),
        updated_at=_datetime(msg.updated_at, msg.HasField("updated_at")),
    )


def channel_credentials(
    tls: bool = False,
    tls_ca_file: Path | None = None,
    tls_cert_file: Path | None = None,
    tls_key_file: Path | None = None,
) -> grpc.ChannelCredentials | None:
    """TLS channel credentials from the client's options, or None for a plain channel."""
    if (tls_cert_file is None) != (tls_key_file is None):
        raise ValueError("tls_cert_file and tls_key_file go together")
    if not (tls or tls_ca_file is not None or tls_cert_file is not None):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=tls_ca_file.read_bytes() if tls_ca_file is not None else None,
        private_key=tls_key_file.read_bytes() if tls_key_file is not None else None,
        certificate_chain=tls_cert_file.read_bytes() if tls_cert_file is not None else None,
    )


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    """Per-call metadata rather than call credentials, which gRPC only sends over TLS: a server behind a
    TLS-terminating proxy still gets the token."""
    return (("authorization", f"Bearer {token}"),) if token is not None else None


class RecommenderClient:
    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_message_bytes: int = 4 * 1024 * 1024,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        tls: bool = False,
        tls_ca_file: Path | None = None,
        tls_cert_file: Path | None = None,
        tls_key_file: Path | None = None,
    ) -> None:
        tls_credentials = channel_credentials(tls, tls_ca_file, tls_cert_file, tls_key_file)
        if tls_credentials is not None:
            if credentials is not None:
                raise ValueError("pass either credentials or the tls options, not both")
            credentials = tls_credentials
        self._metadata = auth_metadata(token)
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.enable_retries", 1),
            # gRPC's reconnect backoff grows to 120 s by default: a client that saw the server restart
            # would keep failing fast long after it is back. Capped, it reconnects within ~2 s.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        self._channel = (
            grpc.secure_channel(target, credentials, options=options)
            if credentials is not None
            else grpc.insecure_channel(target, options=options)
        )
        self._stub = recommender_pb2_grpc.RecommenderStub(self._channel)  # type: ignore[no-untyped-call]
        self._health_check = health_check.method(self._channel)
        self.timeout_s = timeout_s

    def __enter__(self) -> RecommenderClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _invoke(self, call: Callable[..., T], request: Any, timeout_s: float | None) -> T:
        try:
            return call(
                request, timeout=self.timeout_s if timeout_s is None else timeout_s, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            details = (exc.details() if isinstance(exc, grpc.Call) else None) or ""
            raise error_for(code, details) from None

    def recommend(
        self,
        user_id: str,
        k: int = 10,
        include_genres: Sequence[str] = (),
        exclude_genres: Sequence[str] = (),
        include_seen: bool = False,
        *,
        timeout_s: float | None = None,
    ) -> models.Recommendations:
        request = recommender_pb2.RecommendRequest(
            user_id=user_id,
            k=k,
            genres=recommender_pb2.GenreFilter(include=list(include_genres), exclude=list(exclude_genres)),
            include_seen=include_seen,
        )
        return decode_recommendations(self._invoke(self._stub.Recommend, request, timeout_s))

    def similar_items(
        self, item_id: str, k: int = 10, *, timeout_s: float | None = None
    ) -> models.SimilarItems:
        request = recommender_pb2.SimilarItemsRequest(item_id=item_id, k=k)
        return decode_similar(self._invoke(self._stub.SimilarItems, request, timeout_s))

    def user_profile(self, user_id: str, *, timeout_s: float | None = None) -> models.UserProfile:
        request = recommender_pb2.GetUserProfileRequest(user_id=user_id)
        return decode_profile(self._invoke(self._stub.GetUserProfile, request, timeout_s))

    def health(self, service: str = SERVICE_NAME, *, timeout_s: float | None = None) -> str:
        """The server's health status name for ``service`` ("" for the whole server): "SERVING",
        "NOT_SERVING", ... ``Unavailable`` when nothing answers."""
        return health_check.status_name(
            self._invoke(self._health_check, health_check.request(service), timeout_s)
        )

    def wait_until_serving(self, timeout_s: float = 30.0, poll_s: float = 0.1) -> None:
        """Poll health until SERVING; ``DeadlineExceeded`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while True:
            try:
                last = self.health(timeout_s=max(0.1, min(1.0, deadline - time.monotonic())))
                if last == "SERVING":
                    return
            except (Unavailable, DeadlineExceeded) as exc:
                last = type(exc).__name__
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(f"server not SERVING after {timeout_s} s (last: {last})")
            time.sleep(poll_s)
