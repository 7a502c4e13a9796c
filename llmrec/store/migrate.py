"""Apply the SQL files in ``migrations/`` in name order, each once, each in its own transaction.

Idempotent: applied versions are recorded in ``schema_migrations``; a session-level advisory lock makes
concurrent runners (a worker and the CLI, or two workers starting together) apply each file once.
"""

from __future__ import annotations

from importlib import resources

import psycopg

from llmrec.logs import get_logger

log = get_logger(__name__)

# Any constant shared by every runner; it only has to differ from other advisory locks in the database.
_LOCK_KEY = 0x6C6C6D726563  # "llmrec"
_CONNECT_TIMEOUT_S = 10


def migration_files() -> list[tuple[str, str]]:
    """(version, SQL) for each migration shipped with the package, in the order they apply."""
    folder = resources.files("llmrec.store") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text(encoding="utf-8")) for f in files]


def migrate(dsn: str) -> None:
    """Create or upgrade the schema. Safe to call on every start."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, sql in migration_files():
                if version in applied:
                    continue
                with conn.transaction():
                    # No parameters: psycopg sends the file as one simple query, so it may hold several
                    # statements and dollar-quoted blocks.
                    conn.execute(sql.encode("utf-8"))
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                log.info("migration applied", version=version)
            vector_type = conn.execute(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
                " WHERE attrelid = 'user_profiles'::regclass AND attname = 'vector_sum'"
            ).fetchone()
            log.info("schema ready", vector_type=vector_type[0] if vector_type else None)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
