"""``llmrec schema``: the events' JSON Schemas, committed under ``proto/events/v1/`` for other languages."""

from __future__ import annotations

import json
from pathlib import Path

from llmrec.events.schema import json_schemas
from llmrec.settings import REPO_ROOT

# Part of the source tree (committed beside the protobuf definitions), so beside the code, not under
# ``Settings.root``.
SCHEMA_DIR = REPO_ROOT / "proto" / "events" / "v1"


def write_event_schemas(check: bool = False, schema_dir: Path = SCHEMA_DIR) -> list[str]:
    """Write every event's JSON Schema to ``schema_dir`` and return ``[]``; with ``check``, write nothing
    and return the names of the files that are missing or out of date."""
    stale = []
    schema_dir.mkdir(parents=True, exist_ok=True)
    for name, body in json_schemas().items():
        text = json.dumps(body, indent=2, sort_keys=True) + "\n"
        target = schema_dir / name
        if check:
            if not target.exists() or target.read_text() != text:
                stale.append(name)
        else:
            target.write_text(text)
    return stale
