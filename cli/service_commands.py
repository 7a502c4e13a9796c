"""``llmrec worker | serve``: run one of the stack's long-running processes in the foreground."""

from __future__ import annotations

import click

from cli.options import pass_settings
from grpc_api.server import serve as serve_api
from llmrec.settings import Settings
from stream.main import run_worker


@click.command()
@pass_settings
def worker(settings: Settings) -> None:
    """Run the Faust worker that applies events to user profiles."""
    run_worker(settings)


@click.command()
@pass_settings
def serve(settings: Settings) -> None:
    """Run the gRPC recommendation API."""
    serve_api(settings)
