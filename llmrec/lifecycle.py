"""Lines that the long-running processes log at points of their life that other processes wait for.

The stream worker (``stream.main``) logs ``WORKER_READY`` once, when its consumer has joined its group and
received its first partitions; the process harness (``deploy.worker``, used by ``llmrec up``, the
benchmarks and the integration tests) waits for that line in the worker's log. Later assignments (after a
rebalance) log ``WORKER_PARTITIONS_ASSIGNED``. Both lines carry ``partitions=<count>``.

The API has no readiness line: it is ready when its gRPC health service reports SERVING
(``deploy.stack.grpc_serving``).
"""

from __future__ import annotations

from typing import Final

WORKER_READY: Final = "worker ready"
WORKER_PARTITIONS_ASSIGNED: Final = "partitions assigned"
