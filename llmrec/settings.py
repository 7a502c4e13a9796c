"""Typed configuration, loaded once at each entry point and passed down.

Every field can be set from the environment with the ``LLMREC_`` prefix and ``__`` between levels,
for example ``LLMREC_KAFKA__BOOTSTRAP=broker:9092`` or ``LLMREC_POSTGRES__DSN=postgresql://...``, and
from a TOML file (``load_settings(config_file)``, ``LLMREC_CONFIG``, ``llmrec --config``) whose tables
are the sections (``[kafka]`` ``bootstrap = "broker:9092"``; ``llmrec.example.toml`` lists the main
ones). The environment wins over the file, the file over the defaults. The defaults describe the
single-machine stack that ``llmrec up`` starts.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

# The checkout (or installed tree) this package lives in: the default of ``Settings.root``, and the place of
# files that belong to the code rather than to a deployment (the Triton model repository, the shipped data).
REPO_ROOT = Path(__file__).resolve().parent.parent

KafkaProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
PostgresSslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


def read_secret(value: SecretStr | None, file: Path | None) -> SecretStr | None:
    """A secret given directly or through a file (its content without the trailing newline).

    Files are read at each use rather than at load, so a rotated secret file is picked up by the next
    connection and the secret never sits in the settings object (which ``settings_env`` writes out).
    """
    if file is None:
        return value
    try:
        return SecretStr(file.read_text().rstrip("\r\n"))
    except OSError as exc:
        # The path is not secret; the content never reaches this message.
        raise ValueError(f"cannot read secret file {file}: {exc.strerror}") from None


def _one_of(value: SecretStr | None, file: Path | None, name: str) -> None:
    if value is not None and file is not None:
        raise ValueError(f"{name} and {name}_file are alternatives: set one")


class KafkaSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    bootstrap: str = "127.0.0.1:19092"
    # Topic names carry the schema version so that an incompatible change is a new topic, not a surprise.
    topic_prefix: str = "llmrec"
    # Events are keyed by user id, so a user's events stay in order within one partition.
    partitions: int = 4
    consumer_group: str = "llmrec-worker"
    # Connection security, for every client (confluent-kafka producers, admin and consumers, and the Faust
    # worker's aiokafka): see llmrec.events.topics.client_config and stream.app.broker_credentials.
    security_protocol: KafkaProtocol = "PLAINTEXT"
    # SASL (SASL_PLAINTEXT / SASL_SSL): username and a password, given directly or as a file.
    sasl_mechanism: SaslMechanism = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    # TLS (SSL / SASL_SSL): the CA that signed the brokers' certificates (else the system's roots), and a
    # client certificate + key (PEM) when the brokers ask for one; the key's passphrase if it has one.
    ssl_ca_file: Path | None = None
    ssl_cert_file: Path | None = None
    ssl_key_file: Path | None = None
    ssl_key_password: SecretStr | None = None
    ssl_key_password_file: Path | None = None

    @model_validator(mode="after")
    def _check_security(self) -> KafkaSettings:
        _one_of(self.sasl_password, self.sasl_password_file, "kafka.sasl_password")
        _one_of(self.ssl_key_password, self.ssl_key_password_file, "kafka.ssl_key_password")
        if self.uses_sasl:
            if not self.sasl_username or (self.sasl_password is None and self.sasl_password_file is None):
                raise ValueError(
                    f"kafka.security_protocol={self.security_protocol} needs kafka.sasl_username and "
                    "kafka.sasl_password (or kafka.sasl_password_file)"
                )
        elif self.sasl_username or self.sasl_password is not None or self.sasl_password_file is not None:
            raise ValueError("kafka.sasl_* settings need security_protocol SASL_PLAINTEXT or SASL_SSL")
        tls_files = (self.ssl_ca_file, self.ssl_cert_file, self.ssl_key_file, self.ssl_key_password_file)
        if not self.uses_ssl and (any(f is not None for f in tls_files) or self.ssl_key_password):
            raise ValueError("kafka.ssl_* settings need security_protocol SSL or SASL_SSL")
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            raise ValueError("kafka.ssl_cert_file and kafka.ssl_key_file must be set together")
        return self

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def sasl_password_secret(self) -> SecretStr | None:
        return read_secret(self.sasl_password, self.sasl_password_file)

    def ssl_key_password_secret(self) -> SecretStr | None:
        return read_secret(self.ssl_key_password, self.ssl_key_password_file)

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
    def items_topic(self) -> str:
        """Item (catalogue) events, keyed by item id."""
        return f"{self.topic_prefix}.items.v1"

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.topic_prefix}.deadletter.v1"

    @property
    def event_topics(self) -> tuple[str, str, str]:
        return (self.ratings_topic, self.reviews_topic, self.watch_topic)

    @property
    def consumed_topics(self) -> tuple[str, str, str, str]:
        """What the worker consumes: the interaction topics and the items topic."""
        return (*self.event_topics, self.items_topic)


class PostgresSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    # An external server is used by setting this DSN; `llmrec up` only starts its own server when the DSN
    # points at the default local port and nothing answers there.
    dsn: SecretStr = SecretStr("postgresql://llmrec:llmrec@127.0.0.1:15432/llmrec")
    pool_min_size: int = 1
    pool_max_size: int = 8
    # Overrides for the DSN's password and TLS parameters (libpq's names), so the DSN itself can stay free
    # of secrets: LLMREC_POSTGRES__PASSWORD_FILE=/run/secrets/pg, LLMREC_POSTGRES__SSLMODE=verify-full, ...
    password: SecretStr | None = None
    password_file: Path | None = None
    sslmode: PostgresSslMode | None = None
    sslrootcert: Path | None = None
    sslcert: Path | None = None
    sslkey: Path | None = None
    # The pool waits at most this long between attempts to reconnect to a server that went away.
    reconnect_max_wait_s: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _check_security(self) -> PostgresSettings:
        _one_of(self.password, self.password_file, "postgres.password")
        if (self.sslcert is None) != (self.sslkey is None):
            raise ValueError("postgres.sslcert and postgres.sslkey must be set together")
        return self

    def conninfo(self) -> str:
        """The libpq connection string: the DSN with the password and TLS settings applied. Holds the
        password: hand it to psycopg, never to a log."""
        # Imported here: psycopg takes 0.2 s to import, and every command (`llmrec --help` too) imports this.
        from psycopg.conninfo import make_conninfo

        extra: dict[str, str] = {}
        password = read_secret(self.password, self.password_file)
        if password is not None:
            extra["password"] = password.get_secret_value()
        if self.sslmode is not None:
            extra["sslmode"] = self.sslmode
        for name in ("sslrootcert", "sslcert", "sslkey"):
            path: Path | None = getattr(self, name)
            if path is not None:
                extra[name] = str(path)
        return make_conninfo(self.dsn.get_secret_value(), **extra)


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
    # Requests one client keeps in flight. More would only queue inside Triton, where each one's deadline
    # runs: a backlog of reviews sent at once timed out as a whole and was retried as a whole, for ever
    # (found by the soak test on 2 shared cores). Queued in the client, a request's deadline starts when
    # it is sent, and 16 still fill a dynamic batch.
    max_in_flight: int = Field(default=16, ge=1)
    repository: Path = REPO_ROOT / "encoder_triton" / "model_repository"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"


class WorkerSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    # Up to batch_size events per transaction; a batch closes earlier after batch_within_s. Under a backlog
    # large batches mean fewer commits and one profile write per user per batch (bench/ingest.py
    # --compare-batch-size 256: 1.47x in one run; 0.91x and 1.04x in two runs on a heavily loaded machine,
    # where batches stayed far below the limit); a lone event still waits at most batch_within_s.
    batch_size: int = 2048
    # Reviews wait for the encoder (one Triton request each, about 20 a second on one CPU core): a smaller
    # batch keeps every request of a batch within the encoder's timeout and commits scored reviews sooner.
    review_batch_size: int = 64
    # Item events: upserts without a vector are embedded through Triton, like reviews, so batches stay small.
    item_batch_size: int = 64
    # An interaction about an item the worker does not know yet (the items topic is not ordered against the
    # interaction topics) waits up to this long for the item to arrive, the catalogue being re-read every
    # second, and is then dead-lettered as unknown_item. The batch waits with it: interactions about
    # unknown items are rare once the catalogue is loaded, and holding them keeps "applied once, in order".
    unknown_item_wait_s: float = Field(default=10.0, ge=0.0, le=600.0)
    batch_within_s: float = 0.2
    # Deliver fetched messages to the agents without Faust's per-message task race when it cannot matter
    # (stream/fast_delivery.py). Off restores Faust's own path.
    fast_delivery: bool = True
    # Faust needs its own port for the web view even if disabled in tests; the stack enables it for metrics.
    web_port: int = 16066
    metrics_port: int = 19101
    # The metrics endpoint's address: loopback on one machine; 0.0.0.0 where Prometheus scrapes the worker
    # from another host or pod (the Helm chart sets it).
    metrics_host: str = "127.0.0.1"


class ApiSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    host: str = "127.0.0.1"
    port: int = 50051
    max_k: int = 100
    # FAISS candidates fetched (plus the user's seen items) before filtering and re-ranking. HNSW searches
    # at least this deep: over the serving benchmark's 100k-item HNSW index one search took 0.42 ms for up
    # to 128 candidates (efSearch 128) and 0.99 ms for 310, the pool of 300 this replaced.
    candidate_pool: int = 100
    # The largest request, gRPC message or HTTP body: larger ones are refused (RESOURCE_EXHAUSTED, 400 on
    # HTTP) and counted. gRPC core takes up to twice this off the wire before the API refuses it (so the
    # refusal is counted; grpc_api/interceptors.py): the most memory one request's message can take.
    max_message_bytes: int = 4 * 1024 * 1024
    grace_period_s: float = 5.0
    # How often each API process reads the catalogue's change feed; a new item is served within about
    # this long after the worker stored it (grpc_api/live_catalogue.py).
    catalogue_poll_s: float = Field(default=0.5, gt=0.0, le=60.0)
    # How often each API process looks for a newly trained ranker (``CURRENT`` under ``ranker_dir``, e.g.
    # after `llmrec train-ranker --from-ledger`); a new version is loaded off the event loop and swapped in
    # atomically, requests in flight finishing on the old one.
    ranker_poll_s: float = Field(default=5.0, gt=0.0, le=3600.0)
    # Threads torch may use for one ranking. Requests already run concurrently (a worker thread each), and
    # one request's network pass over a few hundred candidates is too small to split; more threads per
    # request only fight over the cores (torch's default pool in every thread cut throughput 4x).
    scoring_threads: int = Field(default=1, ge=1, le=64)
    metrics_port: int = 19102
    # The server's event loop: uvloop (libuv) or Python's own asyncio loop. Through the gRPC API at 100k
    # items, 8 clients, uvloop served 527 req/s against 468 on asyncio's loop in back-to-back runs.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # API processes sharing the port (SO_REUSEPORT; grpc_api/processes.py). One process is bound by one
    # core (the GIL); more use more cores, each with its own copy of the index and its metrics on
    # metrics_port + i. Needs a fixed port.
    processes: int = Field(default=1, ge=1, le=64)
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
    # -- HTTP/JSON API (grpc_api/http_api.py): served by the same process beside gRPC, from the same
    # service, with the same TLS files, tokens and rate limit. With api.processes > 1 every process binds
    # http_port too (SO_REUSEPORT), so it needs a fixed port as gRPC does. 0 picks a free port.
    http_enabled: bool = True
    http_port: int = Field(default=8080, ge=0, le=65535)
    # Events in one POST /v1/events or /v1/items (a JSON array), and how long a POST waits for Kafka's
    # acknowledgement before answering 503.
    http_max_events: int = Field(default=500, ge=1, le=10_000)
    http_publish_timeout_s: float = Field(default=10.0, gt=0.0, le=300.0)
    # The deadline of one request to the API's /v1 routes (not /v1/admin): over it the handler is cancelled
    # and the answer is 504 DEADLINE_EXCEEDED (work already in a thread, an index search, runs on; its result
    # is dropped). A POST gets http_publish_timeout_s more, for Kafka's acknowledgement. 5 s: the gRPC
    # client's default deadline.
    http_request_timeout_s: float = Field(default=5.0, gt=0.0, le=300.0)
    # The admin page at /admin and its JSON under /v1/admin (grpc_api/admin.py), with the same tokens; it can
    # replay dead letters (a write), so a deployment that wants no such surface turns it off.
    admin_enabled: bool = True
    # -- end HTTP/JSON API

    @model_validator(mode="after")
    def _check_access(self) -> ApiSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("api.tls_cert_file and api.tls_key_file must be set together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("api.tls_client_ca_file (mTLS) needs api.tls_cert_file and api.tls_key_file")
        if self.rate_limit_burst is not None and self.rate_limit_per_s is None:
            raise ValueError("api.rate_limit_burst needs api.rate_limit_per_s")
        if self.processes > 1 and self.port == 0:
            raise ValueError("api.processes > 1 needs a fixed api.port (processes cannot share port 0)")
        if self.processes > 1 and self.http_enabled and self.http_port == 0:
            raise ValueError("api.processes > 1 needs a fixed api.http_port (or api.http_enabled = false)")
        return self

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def http_url(self) -> str:
        """The HTTP/JSON API's base URL (https when TLS is configured)."""
        scheme = "https" if self.tls_cert_file is not None else "http"
        return f"{scheme}://{self.host}:{self.http_port}"


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


def _under_root(*parts: str) -> Callable[[dict[str, Any]], Path]:
    """A default factory: ``root / parts`` for the ``root`` this settings object was given."""

    def default(data: dict[str, Any]) -> Path:
        return Path(data.get("root", REPO_ROOT)).joinpath(*parts)

    return default


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LLMREC_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """pydantic-settings' own order (arguments, environment, .env, secrets folder), with the config file
        of the ``load_settings`` call in progress, if any, between the environment and the defaults."""
        config_file = _CONFIG_FILE.get()
        if config_file is None:
            return (init_settings, env_settings, dotenv_settings, file_secret_settings)
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file)
        return (init_settings, env_settings, dotenv_settings, toml, file_secret_settings)

    # The one folder every relative project path resolves against (LLMREC_ROOT), whatever the working
    # directory: the state, artifact and report folders below default to folders inside it.
    root: Path = REPO_ROOT
    # Runtime state of the local stack: PIDs, server data folders, logs.
    state_dir: Path = Field(default_factory=_under_root(".llmrec"))
    # Built artefacts: item catalogue, embeddings and the FAISS index, trained rankers and encoders.
    artifacts_dir: Path = Field(default_factory=_under_root("artifacts"))
    # Evaluation results and reports (tuned_params.json, eval.json, ...) that the commands read and write.
    reports_dir: Path = Field(default_factory=_under_root("reports"))
    # The full real data; the shipped sample is used when this folder is absent. Input shared by checkouts,
    # so it sits beside the checkout rather than under ``root``.
    data_dir: Path = REPO_ROOT.parent / "shared" / "data"
    log_level: str = "INFO"
    log_json: bool = False
    # Where the item index starts: "mal", the MyAnimeList catalogue of the data files, embedded by
    # `llmrec build-index`; "items", an empty index, the catalogue arriving only on the items topic
    # (`llmrec import-items`), as for a shop or any catalogue of your own.
    catalogue_source: Literal["mal", "items"] = "mal"

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    triton: TritonSettings = Field(default_factory=TritonSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    preferences: PreferenceSettings = Field(default_factory=PreferenceSettings)

    @field_validator("root")
    @classmethod
    def _absolute_root(cls, root: Path) -> Path:
        # A relative LLMREC_ROOT is taken from the working directory once, at load, so later changes of
        # directory do not move it.
        return root.expanduser().absolute()

    @cached_property
    def index_dir(self) -> Path:
        return self.artifacts_dir / "index"

    @cached_property
    def ranker_dir(self) -> Path:
        """Trained ranker versions (``<version>/``) and the ``CURRENT`` pointer (``llmrec train-ranker``)."""
        return self.artifacts_dir / "ranker"


# The config file of the ``load_settings`` call in progress (read by ``Settings.settings_customise_sources``),
# so that ``Settings()`` alone never reads a file.
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("llmrec_config_file", default=None)

ENV_PREFIX = "LLMREC_"
ENV_DELIMITER = "__"
# Names the config file of ``load_settings()`` (``llmrec --config`` reads it too).
CONFIG_VARIABLE = "LLMREC_CONFIG"


class SettingsError(ValueError):
    """Settings that cannot be loaded: an unreadable or malformed config file, an unknown key in it, or
    values that do not validate. ``problems`` holds one ``(field path, message)`` per error."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {path}: {message}" if path else f"  {message}" for path, message in problems)
        super().__init__(f"invalid settings ({source}):\n{lines}")


def read_config_file(path: Path) -> dict[str, Any]:
    """The TOML file's tables; ``SettingsError`` when it cannot be read or parsed."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise SettingsError(str(path), [("", f"cannot read the file: {exc.strerror or exc}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(str(path), [("", f"not valid TOML: {exc}")]) from None


def unknown_keys(data: Mapping[str, Any], model: type[BaseModel] | None = None) -> list[tuple[str, ...]]:
    """Paths of the keys in ``data`` that name no field of ``model`` (default ``Settings``), at every level.

    The file is held to its schema (a misspelt key is an error, not a silently ignored line); the
    environment is not, as before: variables of other versions or tools may share the prefix.
    """
    model = Settings if model is None else model
    unknown: list[tuple[str, ...]] = []
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            unknown.append((key,))
            continue
        section = field.annotation
        if isinstance(value, Mapping) and isinstance(section, type) and issubclass(section, BaseModel):
            unknown += [(key, *path) for path in unknown_keys(value, section)]
    return unknown


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    # Without the input: it may be a secret (a DSN with its password).
    return [
        (".".join(str(part) for part in error["loc"]), error["msg"])
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


@contextmanager
def _reading(config_file: Path | None) -> Iterator[None]:
    token = _CONFIG_FILE.set(config_file)
    try:
        yield
    finally:
        _CONFIG_FILE.reset(token)


def load_settings(config_file: Path | None = None) -> Settings:
    """The settings of an entry point: the environment (``LLMREC_*``), then ``config_file`` (TOML; default:
    the file named by ``LLMREC_CONFIG``, if any), then the defaults. ``SettingsError`` lists every problem
    with its field path (an unknown key in the file is one)."""
    if config_file is None and os.environ.get(CONFIG_VARIABLE):
        config_file = Path(os.environ[CONFIG_VARIABLE])
    if config_file is None:
        source = f"{ENV_PREFIX}* environment"
        try:
            return Settings()
        except ValidationError as exc:
            raise SettingsError(source, _problems(exc)) from None
    source = f"{config_file} and the {ENV_PREFIX}* environment"
    problems = [
        (".".join(path), "unknown setting (misspelt? llmrec.example.toml lists the settings)")
        for path in unknown_keys(read_config_file(config_file))
    ]
    try:
        with _reading(config_file):
            settings = Settings()
    except ValidationError as exc:
        problems += _problems(exc)
    if problems:
        raise SettingsError(source, problems)
    return settings


def _leaf_paths(data: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, value in data.items():
        if isinstance(value, Mapping):
            yield from _leaf_paths(value, (*prefix, key))
        else:
            yield (*prefix, key)


def setting_origins(config_file: Path | None = None) -> dict[str, str]:
    """Where each explicitly set value comes from, by dotted field path: ``env LLMREC_KAFKA__BOOTSTRAP`` or
    ``file <path>``; a path left out is a default. The environment wins where both set one."""
    origins: dict[str, str] = {}
    if config_file is not None:
        for path in _leaf_paths(read_config_file(config_file)):
            origins[".".join(path)] = f"file {config_file}"
    for path in _leaf_paths(EnvSettingsSource(Settings)()):
        origins[".".join(path)] = "env " + ENV_PREFIX + ENV_DELIMITER.join(path).upper()
    return origins
