"""Ask a running llmrec API for a user's recommendations and for items like the first one.

    pip install ./clients/python
    python clients/python/examples/recommend.py --target 127.0.0.1:50051 --user mal:SomeUser -k 5

Exit status 0 on an answer, 1 when the server is unreachable or refuses the request.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from llmrec_client import NotFound, RecommenderClient, ServiceError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--target", default="127.0.0.1:50051", help="host:port of the gRPC API")
    parser.add_argument("--user", required=True, help="the user id, as in your events")
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--genre", action="append", default=[], help="only items with one of these genres")
    parser.add_argument("--token", default=None, help="bearer token, if the server requires one")
    args = parser.parse_args(argv)

    with RecommenderClient(args.target, token=args.token, timeout_s=5.0) as client:
        try:
            client.wait_until_serving(timeout_s=30.0)
            answer = client.recommend(args.user, k=args.k, include_genres=args.genre)
            print(f"{answer.user_id}: {answer.strategy} answer from model {answer.model_version}")
            for rank, item in enumerate(answer.items, start=1):
                print(f"{rank:>2}. {item.title} [{', '.join(item.genres)}] {item.score:.3f} ({item.reason})")
            if answer.items:
                first = answer.items[0].item_id
                like = client.similar_items(first, k=args.k)
                print(f"like {first}: {', '.join(i.title for i in like.items)}")
            try:
                profile = client.user_profile(args.user)
                print(f"profile: {profile.ratings} ratings, {profile.reviews} reviews")
            except NotFound:
                print("profile: no events applied for this user yet")
        except ServiceError as exc:  # InvalidRequest, Unavailable, DeadlineExceeded, RemoteError
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
