"""``llmrec config show | validate``: the settings in effect as TOML, and a check of a config file.

``show`` prints what the other commands would run with (the ``--config`` file or ``LLMREC_CONFIG``, the
``LLMREC_*`` environment, the defaults) in the config file's own format, every secret masked and every
value that is not a default followed by where it came from. ``validate`` loads a file the way the
commands do and lists each problem with its field path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import click
from pydantic import BaseModel, SecretStr

from cli.main import META_CONFIG_FILE, META_LOAD_ERROR, META_OVERRIDES, InvalidSettings
from cli.options import settings_of
from llmrec.settings import Settings, SettingsError, load_settings, setting_origins

MASK = '"**********"'


def toml_string(text: str) -> str:
    """A TOML basic string. JSON's escapes are TOML's, except that TOML also wants DEL escaped and takes
    characters beyond the BMP as they are (JSON would write surrogate pairs, which TOML rejects)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: object) -> str:
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str | Path):
        return toml_string(str(value))
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _line(key: str, value: object, origin: str | None) -> str:
    comment = f"  # {origin}" if origin else ""
    if value is None:  # TOML has no null: an unset optional setting is shown as a comment
        return f"# {key} is not set{comment}"
    return f"{key} = {toml_value(value)}{comment}"


def settings_toml(settings: Settings, origins: Mapping[str, str]) -> str:
    """``settings`` as a config file (top-level settings, then one table per section), secrets masked;
    a value whose dotted path is in ``origins`` carries its origin as a comment."""
    lines = [
        "# The settings in effect. Without a comment: the default. Secrets are masked.",
    ]
    sections: list[tuple[str, BaseModel]] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, BaseModel):
            sections.append((name, value))
        else:
            lines.append(_line(name, value, origins.get(name)))
    for section, model in sections:
        lines += ["", f"[{section}]"]
        for name in type(model).model_fields:
            lines.append(_line(name, getattr(model, name), origins.get(f"{section}.{name}")))
    return "\n".join(lines) + "\n"


@click.group()
def config() -> None:
    """Show the settings in effect (secrets masked) or check a config file.

    Settings come from the LLMREC_* environment, then the file of `llmrec --config FILE` (or
    LLMREC_CONFIG), then the defaults; llmrec.example.toml lists the main ones.
    """


@config.command()
@click.pass_context
def show(ctx: click.Context) -> None:
    """Print the settings in effect as TOML; each value not a default says where it came from."""
    error: SettingsError | None = ctx.meta.get(META_LOAD_ERROR)
    if error is not None:
        raise InvalidSettings(error)
    config_file: Path | None = ctx.meta.get(META_CONFIG_FILE)
    origins = {**setting_origins(config_file), **ctx.meta.get(META_OVERRIDES, {})}
    click.echo(settings_toml(settings_of(ctx), origins), nl=False)


@config.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def validate(ctx: click.Context, file: Path | None) -> None:
    """Check FILE (default: the --config file, else the environment alone) with the LLMREC_* environment
    as the commands load it: "valid", or one line per problem with its field path and exit status 2."""
    if file is None:
        file = ctx.meta.get(META_CONFIG_FILE)
    try:
        load_settings(file)
    except SettingsError as exc:
        for path, message in exc.problems:
            click.echo(f"{path or file}: {message}")
        ctx.exit(2)
    checked = f"{file} with the LLMREC_* environment" if file is not None else "the LLMREC_* environment"
    click.echo(f"valid ({checked})")
