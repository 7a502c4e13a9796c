"""The Recommender servicer: decode the request, one ``RecommendationService`` call within the client's
deadline, encode the answer (``grpc_api.codecs``).

Every RPC writes one log line (method, user or item, k, status, latency) and its request metrics
(``grpc_server_started_total``, ``grpc_server_handled_total``, ``grpc_server_handling_seconds``); a
Recommend answer also counts in ``llmrec_api_recommendations_total`` by strategy and ranker. Domain
errors become status codes through ``llmrec_client.status``; anything else is INTERNAL with a generic
message, the traceback only in the log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import grpc

from grpc_api import metrics
from grpc_api.codecs import encode_profile, encode_recommendations, encode_similar
from grpc_api.service import RecommendationService
from llmrec.logs import get_logger
from llmrec_client.errors import DeadlineExceeded, ServiceError, Unavailable
from llmrec_client.models import Recommendations
from llmrec_client.status import INTERNAL_MESSAGE, status_for
from llmrec_client.v1 import recommender_pb2, recommender_pb2_grpc

log = get_logger(__name__)

T = TypeVar("T")


async def _within_deadline(context: grpc.aio.ServicerContext[Any, Any], work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` but give up when the client's deadline passes (the client has stopped waiting, so
    finishing would only hold a database connection for nobody)."""
    remaining = context.time_remaining()
    if remaining is None:
        return await work
    if remaining <= 0.0:
        work.close()
        raise DeadlineExceeded("the deadline passed before the request was processed")
    timeout = asyncio.timeout(remaining)
    try:
        async with timeout:
            return await work
    except TimeoutError:
        if timeout.expired():
            raise DeadlineExceeded("the deadline passed before the answer was ready") from None
        raise


def _encode_counted(answer: Recommendations) -> recommender_pb2.RecommendResponse:
    """The answer as protobuf, counted by strategy and by the ranker that ordered it."""
    metrics.recommendation_served(answer.strategy, answer.ranker or "unknown")
    return encode_recommendations(answer)


class RecommenderServicer(recommender_pb2_grpc.RecommenderServicer):
    """Decode, one service call, encode. UNAVAILABLE until ``attach`` hands over a ready service."""

    def __init__(self) -> None:
        self._service: RecommendationService | None = None

    def attach(self, service: RecommendationService) -> None:
        self._service = service

    def _ready(self) -> RecommendationService:
        if self._service is None:
            raise Unavailable("the server is starting; retry")
        return self._service

    async def _call(
        self,
        method: str,
        context: grpc.aio.ServicerContext[Any, Any],
        fields: dict[str, object],
        run: Callable[[RecommendationService], Coroutine[Any, Any, T]],
        encode: Callable[[T], Any],
    ) -> Any:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        message = ""
        response: Any = None
        in_flight = metrics.REQUESTS_IN_FLIGHT.labels(metrics.SERVICE_NAME, method)
        in_flight.inc()
        metrics.observe_start(method)
        try:
            response = encode(await _within_deadline(context, run(self._ready())))
        except ServiceError as exc:
            code, message = status_for(exc), str(exc)
        except asyncio.CancelledError:
            # gRPC cancels the handler when the client goes away or its deadline passes; say which.
            remaining = context.time_remaining()
            expired = remaining is not None and remaining <= 0.0
            code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
            raise
        except Exception:
            log.exception("request failed", method=method, **fields)
            code, message = grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
        finally:
            in_flight.dec()
            elapsed = time.perf_counter() - started
            metrics.observe_handled(method, code, started)
            log.info(
                "request", method=method, **fields, status=code.name, latency_ms=round(elapsed * 1000.0, 2)
            )
        if code is not grpc.StatusCode.OK:
            await context.abort(code, message)
        return response

    async def Recommend(
        self, request: recommender_pb2.RecommendRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> recommender_pb2.RecommendResponse:
        response: recommender_pb2.RecommendResponse = await self._call(
            "Recommend",
            context,
            {"user_id": request.user_id, "k": request.k},
            lambda svc: svc.recommend(
                request.user_id,
                request.k,
                include_genres=list(request.genres.include),
                exclude_genres=list(request.genres.exclude),
                include_seen=request.include_seen,
            ),
            _encode_counted,
        )
        return response

    async def SimilarItems(
        self, request: recommender_pb2.SimilarItemsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> recommender_pb2.SimilarItemsResponse:
        response: recommender_pb2.SimilarItemsResponse = await self._call(
            "SimilarItems",
            context,
            {"item_id": request.item_id, "k": request.k},
            lambda svc: svc.similar_items(request.item_id, request.k),
            encode_similar,
        )
        return response

    async def GetUserProfile(
        self, request: recommender_pb2.GetUserProfileRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> recommender_pb2.UserProfile:
        response: recommender_pb2.UserProfile = await self._call(
            "GetUserProfile",
            context,
            {"user_id": request.user_id},
            lambda svc: svc.user_profile(request.user_id),
            encode_profile,
        )
        return response
