"""Temporary folders for servers started by tests."""

from __future__ import annotations

import tempfile
from pathlib import Path


def private_tmp(prefix: str) -> Path:
    """A temporary folder outside pytest's ``/tmp/pytest-of-<user>``.

    As root, PostgreSQL runs as another user that must traverse every parent of its data folder. Each
    pytest session resets ``pytest-of-<user>`` to mode 0700 when it starts, so a second session (another
    developer's, an IDE's) would cut a running server off from its own files mid-test.
    """
    return Path(tempfile.mkdtemp(prefix=prefix))
