"""Hand a ``Settings`` object to a child process through its environment.

The worker and the API load their settings from ``LLMREC_*`` variables at their entry point. When the
stack (or a test) runs them with settings that are not the defaults, every field is written out here, so
the child sees exactly the parent's settings and nothing stray from the parent's own environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from llmrec.settings import Settings

PREFIX = "LLMREC_"
DELIMITER = "__"


def _render(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float | Path):
        return str(value)
    # pydantic-settings reads lists, dicts and tuples from JSON.
    return json.dumps(value, default=str)


def settings_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) without its ``LLMREC_*`` variables, plus every field."""
    source = os.environ if base is None else base
    env = {key: value for key, value in source.items() if not key.startswith(PREFIX)}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, BaseModel):
            for field_name in type(value).model_fields:
                rendered = _render(getattr(value, field_name))
                if rendered is not None:
                    env[f"{PREFIX}{name.upper()}{DELIMITER}{field_name.upper()}"] = rendered
        else:
            rendered = _render(value)
            if rendered is not None:
                env[f"{PREFIX}{name.upper()}"] = rendered
    return env
