"""Prepare external services once: create the Kafka topics, then run the database migrations.

``llmrec up`` does this itself after starting Kafka and PostgreSQL. Where something else starts them
(``deploy/compose.yaml``, a managed Kafka or PostgreSQL), run ``python -m deploy.bootstrap`` before the
worker: it waits for both to answer, then both steps are idempotent.
"""

from __future__ import annotations

import sys

from deploy.kafka import wait_for_kafka
from deploy.postgres import dsn_answers
from deploy.process import wait_until
from llmrec.events.topics import client_config, ensure_system_topics
from llmrec.logs import configure_logging, get_logger
from llmrec.settings import Settings, load_settings
from llmrec.store import migrate

log = get_logger(__name__)


def bootstrap(settings: Settings, wait_s: float = 120.0) -> None:
    dsn = settings.postgres.conninfo()
    if not wait_for_kafka(client_config(settings.kafka), wait_s):
        raise RuntimeError(f"Kafka at {settings.kafka.bootstrap} did not answer within {wait_s:.0f}s")
    created = ensure_system_topics(settings.kafka)
    if not wait_until(lambda: dsn_answers(dsn), wait_s, 1.0):
        raise RuntimeError(f"PostgreSQL did not answer within {wait_s:.0f}s")
    migrate(dsn)
    log.info("bootstrap_done", topics_created=created)


def main() -> int:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_json)
    try:
        bootstrap(settings)
    except Exception as exc:  # an entry point: report and exit non-zero
        log.error("bootstrap_failed", error=str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
