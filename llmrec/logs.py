"""Structured logging: one line per request or batch, key=value for people, JSON for machines."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from opentelemetry import trace

SECRET_BEARING_LOGGERS = ("aiokafka.conn",)
# Libraries whose INFO lines are noise to an operator: faiss.loader reports each CPU-specific build it
# tries ("Could not load library with AVX512 support ...", eleven lines on import) before the one that
# loads, which reads like failures. Shown from this level up, unless DEBUG is asked for.
QUIET_LOGGERS = {"faiss.loader": logging.WARNING}


def add_trace_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The current span's ids on a line logged inside traced work (``llmrec.tracing``), so a request's or a
    batch's log line leads to its trace; with tracing off there is no span and nothing is added."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", f"{context.trace_id:032x}")
        event.setdefault("span_id", f"{context.span_id:016x}")
    return event


def configure_logging(level: str = "INFO", json: bool = False) -> None:
    """Call once per process entry point. Library loggers (faust, aiokafka) go through the same output."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # aiokafka's connection logger writes every request at DEBUG, the SASL handshake's bytes (username and
    # password) included: never below INFO, whatever the level asked for.
    numeric = logging.getLevelName(level.upper())
    for name in SECRET_BEARING_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, numeric))
    for name, floor in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(numeric if numeric <= logging.DEBUG else max(floor, numeric))


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
