"""The gRPC API as its own process (``llmrec serve``), for tests that restart it or watch its memory.

Imported as ``from api_process import ...`` (pytest puts this folder on ``sys.path``). The index the
server loads is a published index over the shipped sample catalogue with synthetic genre vectors
(``tests.synthetic.genre_embeddings``), so no encoder is needed to serve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deploy.env import settings_env
from deploy.process import ManagedProcess, spawn
from deploy.stack import grpc_serving, llmrec_command
from jobs.build_index import build_index
from llmrec.catalogue import Catalogue, build_catalogue
from llmrec.data_source import SAMPLE_DIR
from llmrec.settings import Settings
from tests.synthetic import genre_embeddings


def publish_sample_index(settings: Settings, dim: int = 64, seed: int = 11) -> Catalogue:
    """Publish an index over every sample catalogue item to ``settings.index_dir``; returns the catalogue.

    The worker reads the same index for its item vectors, so every event of the sample replay is about
    a known item.
    """
    catalogue = build_catalogue(SAMPLE_DIR)
    embeddings = genre_embeddings([i.genres or ("none",) for i in catalogue], dim=dim, seed=seed)
    by_text = dict(zip(catalogue.texts_for_embedding(), embeddings, strict=True))

    def encode(texts: Any) -> np.ndarray:
        return np.stack([by_text[t] for t in texts])

    build_index(settings, catalogue, encode, progress=False)
    return catalogue


@dataclass
class ApiProcess:
    """``llmrec serve`` with exactly ``settings`` (its port stays the same across restarts)."""

    settings: Settings
    name: str = "api"
    process: ManagedProcess | None = field(default=None, init=False)

    @property
    def target(self) -> str:
        return self.settings.api.target

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def start(self, timeout_s: float = 120.0) -> float:
        """Spawn and wait until health says SERVING; returns the seconds it took."""
        self.process = spawn(
            self.name,
            [llmrec_command(), "serve"],
            log_path=self.settings.state_dir / "logs" / f"{self.name}.log",
            env=settings_env(self.settings),
            cwd=self.settings.state_dir,
            grace_s=30.0,
        )
        try:
            return self.process.wait_ready(
                probe=lambda: grpc_serving(self.target, timeout_s=1.0), timeout_s=timeout_s, interval_s=0.1
            )
        except BaseException:
            self.process.stop()
            raise

    def stop(self) -> int | None:
        """SIGTERM (graceful: requests in flight finish), SIGKILL after the grace; returns the exit code."""
        if self.process is None:
            return None
        self.process.stop()
        return self.process.exit_code()

    def log(self) -> str:
        assert self.process is not None
        return self.process.log_path.read_text(errors="replace")
