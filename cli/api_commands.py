"""``llmrec recommend | similar | profile | loadtest``: clients of the running gRPC API."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli.options import pass_settings
from cli.render import profile_table, recommendations_table, similar_table
from grpc_api import loadtest as lt
from llmrec.settings import Settings
from llmrec_client.client import RecommenderClient


@click.command()
@click.argument("user_id")
@click.option("-k", default=10, show_default=True)
@click.option("--genre", "genres", multiple=True, help="Only items with one of these genres.")
@click.option("--exclude-genre", "exclude", multiple=True, help="Drop items with any of these genres.")
@pass_settings
def recommend(
    settings: Settings, user_id: str, k: int, genres: tuple[str, ...], exclude: tuple[str, ...]
) -> None:
    """Ask the running API for a user's recommendations."""
    with RecommenderClient(settings.api.target) as client:
        answer = client.recommend(user_id, k=k, include_genres=list(genres), exclude_genres=list(exclude))
    recommendations_table(answer)


@click.command()
@click.argument("item_id")
@click.option("-k", default=10, show_default=True)
@pass_settings
def similar(settings: Settings, item_id: str, k: int) -> None:
    """Ask the running API for items similar to one item (its catalogue id, e.g. mal:5114)."""
    with RecommenderClient(settings.api.target) as client:
        answer = client.similar_items(item_id, k=k)
    similar_table(item_id, answer)


@click.command()
@click.argument("user_id")
@pass_settings
def profile(settings: Settings, user_id: str) -> None:
    """Ask the running API what it knows about a user."""
    with RecommenderClient(settings.api.target) as client:
        answer = client.user_profile(user_id)
    profile_table(answer)


def _users(
    settings: Settings, users_file: Path | None, users_range: str | None, store_limit: int | None
) -> list[str]:
    """The user ids from whichever of --users-file, --users-range, --users-from-store was given."""
    if sum(x is not None for x in (users_file, users_range, store_limit)) > 1:
        raise click.UsageError("give one of --users-file, --users-range, --users-from-store")
    if users_file is not None:
        users = lt.users_from_file(users_file)
    elif users_range is not None:
        prefix, _, bounds = users_range.rpartition(":")
        prefix, _, start = prefix.rpartition(":")
        try:
            users = lt.users_from_range(prefix, int(start), int(bounds))
        except ValueError as exc:
            raise click.BadParameter(f"{users_range!r}: {exc}", param_hint="--users-range") from None
    else:
        users = lt.users_from_store(settings.postgres.conninfo(), store_limit or 10_000)
    if not users:
        raise click.UsageError("no user ids: the source is empty")
    return users


@click.command()
@click.option("--target", default=None, help="host:port of the API (default: api.host:api.port, loopback).")
@click.option("-c", "--concurrency", default=8, show_default=True, help="Concurrent clients.")
@click.option("-n", "--requests", default=1000, show_default=True, help="Stop after this many requests.")
@click.option("--duration", default=30.0, show_default=True, help="Stop after this many seconds.")
@click.option("--warmup", default=16, show_default=True, help="Uncounted requests sent first.")
@click.option("-k", default=10, show_default=True)
@click.option("--timeout", "timeout_s", default=5.0, show_default=True, help="Deadline per request (s).")
@click.option(
    "--users-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="One user id a line."
)
@click.option("--users-range", help="PREFIX:START:STOP, e.g. u:0:1000 for u0 .. u999.")
@click.option(
    "--users-from-store",
    "store_limit",
    type=int,
    default=None,
    help="Up to N users with a profile in PostgreSQL (the default source, N=10000).",
)
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tls", is_flag=True, help="TLS with the system's root certificates.")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the result.")
@pass_settings
def loadtest(
    settings: Settings,
    target: str | None,
    concurrency: int,
    requests: int,
    duration: float,
    warmup: int,
    k: int,
    timeout_s: float,
    users_file: Path | None,
    users_range: str | None,
    store_limit: int | None,
    token_file: Path | None,
    tls: bool,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    seed: int,
    json_out: Path | None,
) -> None:
    """Drive Recommend with concurrent clients; print latency percentiles, req/s and errors by code."""
    users = _users(settings, users_file, users_range, store_limit)
    token = token_file.read_text(encoding="utf-8").strip() if token_file is not None else None
    plan = lt.LoadPlan(
        target=target or settings.api.target,
        concurrency=concurrency,
        requests=requests,
        duration_s=duration,
        warmup=warmup,
        k=k,
        timeout_s=timeout_s,
        seed=seed,
        token=token,
        tls=tls,
        tls_ca_file=tls_ca,
        tls_cert_file=tls_cert,
        tls_key_file=tls_key,
    )
    result = lt.run(plan, users)
    click.echo(lt.render(result))
    if json_out is not None:
        lt.write_json(result, json_out)
    if result.ok == 0:
        sys.exit(1)
