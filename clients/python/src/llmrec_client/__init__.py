"""The Python bindings of the llmrec recommendation API: the generated gRPC code (``llmrec_client.v1``)
and a typed client over it (``RecommenderClient``), needing only grpcio and protobuf.

The server imports the same modules (the answers in ``models``, the errors, the error/status table), so
client and server cannot drift apart.
"""

from llmrec_client.client import RecommenderClient
from llmrec_client.errors import (
    DeadlineExceeded,
    InvalidRequest,
    NotFound,
    RemoteError,
    ServiceError,
    Unavailable,
)
from llmrec_client.models import GenreWeight, Recommendations, ScoredItem, SimilarItems, UserProfile

__all__ = [
    "DeadlineExceeded",
    "GenreWeight",
    "InvalidRequest",
    "NotFound",
    "Recommendations",
    "RecommenderClient",
    "RemoteError",
    "ScoredItem",
    "ServiceError",
    "SimilarItems",
    "Unavailable",
    "UserProfile",
]
