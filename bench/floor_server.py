"""The floor for ``Recommend``: a bare ``grpc.aio`` server answering every request with one fixed 10-item
``RecommendResponse`` (the real proto, no store, no index, no ranker, no logging, no metrics).

``python -m bench.floor_server PORT`` serves on 127.0.0.1:PORT until SIGTERM. The learned-path benchmark
(``bench.learned``) drives it with the same load generator, connection count and user ids as the API in the
same run: the API's requests/s divided by this server's is the share of the bare transport's rate that the
served path keeps.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import grpc

from llmrec_client.v1 import recommender_pb2, recommender_pb2_grpc

ITEMS = 10


def fixed_response(items: int = ITEMS) -> recommender_pb2.RecommendResponse:
    """What every request gets: ``items`` scored items shaped like the API's (id, title, genres, reason)."""
    return recommender_pb2.RecommendResponse(
        user_id="floor",
        items=[
            recommender_pb2.ScoredItem(
                item_id=f"mal:{i + 1}",
                title=f"Floor item {i + 1}",
                genres=["Action", "Drama"],
                score=1.0 - i / items,
                reason="like Floor item 0, which you rated 9",
            )
            for i in range(items)
        ],
        strategy="personalized",
        model_version="floor/floor",
    )


class FloorServicer(recommender_pb2_grpc.RecommenderServicer):
    def __init__(self) -> None:
        self._answer = fixed_response()

    async def Recommend(
        self, request: recommender_pb2.RecommendRequest, context: Any
    ) -> recommender_pb2.RecommendResponse:
        return self._answer


async def serve(port: int) -> None:
    server = grpc.aio.server()
    recommender_pb2_grpc.add_RecommenderServicer_to_server(FloorServicer(), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=1.0)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m bench.floor_server PORT", file=sys.stderr)
        return 2
    asyncio.run(serve(int(args[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
