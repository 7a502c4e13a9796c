"""``llmrec demo``: the whole system on real data, end to end (``cli.demo``)."""

from __future__ import annotations

import sys

import click

from cli.demo import run_demo
from cli.options import pass_settings
from llmrec.settings import Settings


@click.command()
@click.option("--keep-running", is_flag=True, help="Leave the stack up after the demo.")
@pass_settings
def demo(settings: Settings, keep_running: bool) -> None:
    """Bring the stack up, stream real events through it, show recommendations, shut it down."""
    sys.exit(run_demo(settings, keep_running=keep_running))
