"""What ``llmrec publish FILE`` and ``llmrec replay`` do, minus the command-line parsing."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tqdm import tqdm

from llmrec import tracing
from llmrec.catalogue import Catalogue, build_catalogue
from llmrec.data_source import DataKind, DataSource, data_source_at, resolve_data_source, sample_source
from llmrec.datasets.replay import ALL_SOURCES, collect_events
from llmrec.datasets.summary import ReplaySummary
from llmrec.events.files import FileFormat, detect_format, read_event_file, read_jsonl
from llmrec.events.producer import EventProducer, PublishError, topic_for
from llmrec.events.schema import EventType
from llmrec.events.topics import ensure_system_topics
from llmrec.events.validation import AnyEvent
from llmrec.logs import get_logger
from llmrec.settings import Settings

log = get_logger(__name__)

MAX_REPORTED_INVALID = 1000


class EventSink(Protocol):
    """What the publishing commands need from a producer (``EventProducer``; a fake in unit tests)."""

    sent: int
    delivered: int
    failed: int

    def publish(self, event: AnyEvent) -> str: ...

    def publish_raw(self, topic: str, key: bytes | str | None, value: bytes | None) -> None: ...

    def flush(self, timeout: float = ...) -> None: ...


@dataclass(frozen=True)
class InvalidLine:
    line_no: int
    reason: str
    detail: str


@dataclass
class PublishSummary:
    source: str  # the file or data source that was published
    published: int = 0  # handed to the producer
    delivered: int = 0  # acknowledged by the brokers
    failed: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    by_topic: Counter[str] = field(default_factory=Counter)
    invalid: list[InvalidLine] = field(default_factory=list)  # first MAX_REPORTED_INVALID, by line number
    invalid_count: int = 0
    replay: ReplaySummary | None = None
    elapsed_s: float = 0.0

    def __str__(self) -> str:
        """A few lines for people (the CLI prints this)."""
        types = ", ".join(f"{count} {kind}" for kind, count in sorted(self.by_type.items())) or "nothing"
        lines = [
            f"{self.source}: published {self.published} ({types}), delivered {self.delivered}, "
            f"failed {self.failed}, in {self.elapsed_s:.1f} s"
        ]
        if self.invalid_count:
            shown = "; ".join(f"line {i.line_no}: {i.reason}: {i.detail}" for i in self.invalid[:5])
            more = f" (+{self.invalid_count - 5} more)" if self.invalid_count > 5 else ""
            lines.append(f"invalid lines not published: {self.invalid_count}: {shown}{more}")
        if self.replay is not None:
            skipped = ", ".join(f"{n} {reason}" for reason, n in self.replay.skipped_by_reason().items())
            lines.append(
                f"replay: {self.replay.total_events} events available; rows skipped: {skipped or 'none'}"
            )
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "published": self.published,
            "delivered": self.delivered,
            "failed": self.failed,
            "by_type": dict(sorted(self.by_type.items())),
            "by_topic": dict(sorted(self.by_topic.items())),
            "invalid_count": self.invalid_count,
            "invalid": [vars(line) for line in self.invalid],
            "replay": None if self.replay is None else self.replay.as_dict(),
            "elapsed_s": round(self.elapsed_s, 3),
        }


ProducerFactory = Callable[[Settings], EventSink]


def _default_producer(settings: Settings) -> EventSink:
    # Off unless OTEL_* asks for it; then each event's publish is the root of its own trace, so a sampler
    # (OTEL_TRACES_SAMPLER) picks events, not whole replays.
    tracing.configure("llmrec-publisher")
    # The broker does not auto-create topics; creating them here (idempotent) lets a publish run first.
    ensure_system_topics(settings.kafka)
    return EventProducer(settings.kafka)


class DeliverySummary(Protocol):
    """The delivery fields every publishing job's summary keeps (``PublishSummary``, ``ImportSummary``)."""

    delivered: int
    failed: int
    elapsed_s: float


class FlushingSink(Protocol):
    delivered: int
    failed: int

    def flush(self, timeout: float = ...) -> None: ...


_Summary = TypeVar("_Summary", bound=DeliverySummary)


def finish_delivery(
    sink: FlushingSink, summary: _Summary, started: float, flush_timeout_s: float
) -> _Summary:
    """Wait for the brokers' acknowledgements and record them in ``summary``; a ``PublishError`` carries the
    summary so the caller can still report what was delivered."""
    try:
        sink.flush(flush_timeout_s)
    except PublishError as exc:
        tracing.force_flush()
        summary.delivered, summary.failed = sink.delivered, sink.failed
        summary.elapsed_s = time.monotonic() - started
        exc.summary = summary
        raise
    summary.delivered, summary.failed = sink.delivered, sink.failed
    summary.elapsed_s = time.monotonic() - started
    tracing.force_flush()  # the job's process may end now: hand its spans over first
    return summary


def _publish_all(
    events: Iterable[AnyEvent], sink: EventSink, summary: PublishSummary, bar: tqdm[Any]
) -> None:
    for event in events:
        topic = sink.publish(event)
        summary.published += 1
        summary.by_type[event.event_type.value] += 1
        summary.by_topic[topic] += 1
        bar.update(1)


def _raw_target(settings: Settings, raw: bytes, default_topic: str) -> tuple[str, str | None]:
    """Topic and key for an unvalidated line: by its event_type and user_id when it has them."""
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError):
        return default_topic, None
    if not isinstance(payload, dict):
        return default_topic, None
    user_id = payload.get("user_id")
    key = user_id if isinstance(user_id, str) else None
    event_type = payload.get("event_type")
    if event_type in {t.value for t in EventType}:
        return topic_for(settings.kafka, event_type), key
    return default_topic, key


def publish_file(
    settings: Settings,
    path: Path,
    progress: bool = True,
    *,
    raw: bool = False,
    raw_topic: str | None = None,
    producer_factory: ProducerFactory = _default_producer,
    flush_timeout_s: float = 60.0,
) -> PublishSummary:
    """Publish every valid event of a JSONL or CSV file; invalid lines are reported, not published.

    ``raw=True`` (JSONL only) publishes every non-blank line byte for byte without validation, to the topic of
    its ``event_type`` when it has a known one, else to ``raw_topic`` (default: the ratings topic), keyed by
    its ``user_id`` when it is a string. This is how tests feed the worker's dead-letter path.
    Raises ``PublishError`` (with ``.summary``) if the brokers did not acknowledge everything.
    """
    started = time.monotonic()
    summary = PublishSummary(source=str(path))
    if raw and detect_format(path) is not FileFormat.JSONL:
        raise ValueError("raw publishing needs a JSON-lines file: CSV rows have no wire form of their own")
    sink = producer_factory(settings)
    with tqdm(desc=f"publish {path.name}", unit="event", disable=not progress) as bar:
        if raw:
            default_topic = raw_topic or settings.kafka.ratings_topic
            for record in read_jsonl(path):
                topic, key = _raw_target(settings, record.raw, default_topic)
                sink.publish_raw(topic, key, record.raw)
                summary.published += 1
                summary.by_topic[topic] += 1
                if record.event is not None:
                    summary.by_type[record.event.event_type.value] += 1
                else:
                    summary.by_type["invalid"] += 1
                bar.update(1)
        else:
            for record in read_event_file(path):
                if record.event is None:
                    summary.invalid_count += 1
                    if record.error is not None and len(summary.invalid) < MAX_REPORTED_INVALID:
                        summary.invalid.append(
                            InvalidLine(record.line_no, record.error.reason.value, record.error.detail)
                        )
                    continue
                _publish_all([record.event], sink, summary, bar)
    if summary.invalid_count:
        log.warning(
            "publish_invalid_lines",
            path=str(path),
            invalid=summary.invalid_count,
            first_line=summary.invalid[0].line_no if summary.invalid else None,
        )
    return finish_delivery(sink, summary, started, flush_timeout_s)


def resolve_source(settings: Settings, source: DataSource | Path | str | None) -> DataSource:
    """``None`` or "auto": the full data if present, else the sample; "sample"; "full"; or a folder path."""
    if isinstance(source, DataSource):
        return source
    if source is None or source == "auto":
        return resolve_data_source(settings)
    if source == DataKind.SAMPLE.value:
        return sample_source()
    if source == DataKind.FULL.value:
        return data_source_at(settings.data_dir)
    return data_source_at(Path(source))


def replay(
    settings: Settings,
    source: DataSource | Path | str | None = None,
    limit: int | None = None,
    progress: bool = True,
    *,
    sources: Sequence[str] = ALL_SOURCES,
    catalogue: Catalogue | None = None,
    producer_factory: ProducerFactory = _default_producer,
    flush_timeout_s: float = 120.0,
) -> PublishSummary:
    """Publish the real data's events in event-time order (the first ``limit`` of them if given).

    Events are filtered to ``catalogue`` (default: the catalogue built from the same data, so the sample's
    replay matches the sample's index). ``summary.replay`` says what was read and skipped, and why.
    """
    started = time.monotonic()
    data = resolve_source(settings, source)
    catalogue = catalogue if catalogue is not None else build_catalogue(data.path)
    collected = collect_events(data.path, catalogue=catalogue, sources=sources)
    events = collected.events if limit is None else collected.events[: max(0, limit)]
    summary = PublishSummary(source=data.describe(), replay=collected.summary)
    log.info(
        "replay_start",
        source=data.describe(),
        events=len(events),
        available=len(collected.events),
        skipped=sum(collected.summary.skipped.values()),
    )
    sink = producer_factory(settings)
    with tqdm(total=len(events), desc=f"replay {data.kind.value}", unit="event", disable=not progress) as bar:
        _publish_all(events, sink, summary, bar)
    return finish_delivery(sink, summary, started, flush_timeout_s)
