"""What the command modules share: the settings the group loaded, and path options whose defaults lie under
the configured root (``Settings.root``, ``LLMREC_ROOT``) rather than the working directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from llmrec.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

# The group's callback loads the settings once into ``ctx.obj``; a command takes them as its first argument.
pass_settings = click.make_pass_decorator(Settings)


def settings_of(ctx: click.Context) -> Settings:
    settings = ctx.find_object(Settings)
    if settings is None:
        raise click.UsageError("no settings: run the command through the llmrec group")
    return settings


def _settings_path_option(
    decls: tuple[str, ...], shown: Path, resolve: Callable[[Settings], Path], help: str | None
) -> Callable[[F], F]:
    """A path option whose help shows ``shown`` as its default; left out, it is ``resolve(settings)`` (a
    folder of the settings, under the configured root); given, it is the path as given (relative ones
    from the working directory, as for any path on a command line)."""

    def callback(ctx: click.Context, param: click.Parameter, value: Path) -> Path:
        if param.name is not None and ctx.get_parameter_source(param.name) is ParameterSource.DEFAULT:
            return resolve(settings_of(ctx))
        return value

    return click.option(
        *decls,
        type=click.Path(path_type=Path),
        default=shown,
        show_default=True,
        callback=callback,
        help=help,
    )


def reports_path_option(*decls: str, name: str = "", help: str | None = None) -> Callable[[F], F]:
    """``reports/<name>``: ``name`` in ``settings.reports_dir`` unless given."""
    return _settings_path_option(decls, Path("reports", name), lambda s: s.reports_dir / name, help)


def artifacts_path_option(*decls: str, name: str, help: str | None = None) -> Callable[[F], F]:
    """``artifacts/<name>``: ``name`` in ``settings.artifacts_dir`` unless given."""
    return _settings_path_option(decls, Path("artifacts", name), lambda s: s.artifacts_dir / name, help)
