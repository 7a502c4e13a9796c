"""``llmrec up | down | status | migrate``: the local stack's processes and the database schema."""

from __future__ import annotations

import click

from cli.options import pass_settings
from deploy import stack
from llmrec.settings import Settings
from llmrec.store import migrate as run_migrations


@click.command()
@pass_settings
def up(settings: Settings) -> None:
    """Start Kafka, PostgreSQL, Triton, the worker and the API (whatever is not yet running)."""
    stack.up(settings)


@click.command()
@pass_settings
def down(settings: Settings) -> None:
    """Stop everything `llmrec up` started."""
    stack.down(settings)


@click.command()
@pass_settings
def status(settings: Settings) -> None:
    """Show which components run and their endpoints."""
    stack.status(settings)


@click.command()
@pass_settings
def migrate(settings: Settings) -> None:
    """Create or upgrade the database schema."""
    run_migrations(settings.postgres.conninfo())
