"""Typed configuration, loaded once at each entry point and passed down.

Every field can be set from the environment with the ``LLMREC_`` prefix and ``__`` between levels,
for example ``LLMREC_KAFKA__BOOTSTRAP=broker:9092`` or ``LLMREC_POSTGRES__DSN=postgresql://...``.
The defaults describe the single-machine stack that ``llmrec up`` starts.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class KafkaSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    bootstrap: str = "127.0.0.1:19092"
    # Topic names carry the schema version so that an incompatible change is a new topic, not a surprise.
    topic_prefix: str = "llmrec"
    # Events are keyed by user id, so a user's events stay in order within one partition.
    partitions: int = 4
    consumer_group: str = "llmrec-worker"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None

    @property
    def ratings_topic(self) -> str:
        return f"{self.topic_prefix}.ratings.v1"

    @property
    def reviews_topic(self) -> str:
        return f"{self.topic_prefix}.reviews.v1"

    @property
    def watch_topic(self) -> str:
        return f"{self.topic_prefix}.watch.v1"

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.topic_prefix}.deadletter.v1"

    @property
    def event_topics(self) -> tuple[str, str, str]:
        return (self.ratings_topic, self.reviews_topic, self.watch_topic)


class PostgresSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    # An external server is used by setting this DSN; `llmrec up` only starts its own server when the DSN
    # points at the default local port and nothing answers there.
    dsn: SecretStr = SecretStr("postgresql://llmrec:llmrec@127.0.0.1:15432/llmrec")
    pool_min_size: int = 1
    pool_max_size: int = 8


class TritonSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    http_port: int = 18000
    grpc_port: int = 18001
    metrics_port: int = 18002
    host: str = "127.0.0.1"
    model_name: str = "llmrec_encoder"
    # A review is cut to 128 tokens; on one CPU core a batch of 32 takes about 1.5 s.
    timeout_s: float = 10.0
    retries: int = 3
    repository: Path = REPO_ROOT / "encoder_triton" / "model_repository"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"


class WorkerSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    batch_size: int = 256
    batch_within_s: float = 0.2
    # Faust needs its own port for the web view even if disabled in tests; the stack enables it for metrics.
    web_port: int = 16066
    metrics_port: int = 19101


class ApiSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    host: str = "127.0.0.1"
    port: int = 50051
    max_k: int = 100
    # FAISS candidates fetched before filtering (seen items, genres) and re-ranking.
    candidate_pool: int = 300
    max_message_bytes: int = 4 * 1024 * 1024
    grace_period_s: float = 5.0
    metrics_port: int = 19102
    # Access control, all off by default (see README "Access" and grpc_api/security.py). Secrets live in
    # files; only their paths are settings (LLMREC_API__TLS_CERT_FILE, ...), so no secret reaches a log.
    # TLS: the server's certificate chain and private key (PEM). Both or neither.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # mTLS: when set (needs TLS), a client must present a certificate signed by one of these CAs.
    tls_client_ca_file: Path | None = None
    # Bearer tokens, one per line, either `token` or `client_id:token`; blank lines and `#` comments skipped.
    auth_tokens_file: Path | None = None
    # Per-client token bucket: requests per second, and the burst (bucket size; default max(1, rate)).
    rate_limit_per_s: float | None = Field(default=None, gt=0)
    rate_limit_burst: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check_access(self) -> ApiSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("api.tls_cert_file and api.tls_key_file must be set together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("api.tls_client_ca_file (mTLS) needs api.tls_cert_file and api.tls_key_file")
        if self.rate_limit_burst is not None and self.rate_limit_per_s is None:
            raise ValueError("api.rate_limit_burst needs api.rate_limit_per_s")
        return self

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


class PreferenceSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    # The paper's Table 6 weights.
    weight_rating: float = 0.4
    weight_review: float = 0.3
    weight_viewing: float = 0.2
    weight_completion: float = 0.1
    # alpha per time unit (30 days): a month-old interaction counts 0.95 of a fresh one, a year-old one
    # 0.54, a three-year-old one 0.16. Anime are watched over weeks to months; a weekly unit (0.07 after a
    # year) forgot a user's history faster than their taste changes.
    decay_alpha: float = 0.95
    decay_unit_s: float = 30 * 24 * 3600.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LLMREC_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    # Runtime state of the local stack: PIDs, server data folders, logs.
    state_dir: Path = REPO_ROOT / ".llmrec"
    # Built artefacts: item catalogue, embeddings and the FAISS index.
    artifacts_dir: Path = REPO_ROOT / "artifacts"
    # The full real data; the shipped sample is used when this folder is absent.
    data_dir: Path = REPO_ROOT.parent / "shared" / "data"
    log_level: str = "INFO"
    log_json: bool = False

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    triton: TritonSettings = Field(default_factory=TritonSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    preferences: PreferenceSettings = Field(default_factory=PreferenceSettings)

    @cached_property
    def index_dir(self) -> Path:
        return self.artifacts_dir / "index"


def load_settings() -> Settings:
    return Settings()
