"""The service's bearer token: made with a collection (``hashdistill collection create``) or on the first
``hashdistill serve``, in ``COLLECTION/token``, readable by its owner only (mode 0600)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_token(path: Path) -> str:
    """A new bearer token for a collection's service, written with mode 0600 (never readable by others)."""
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def read_token(path: Path) -> str:
    """The token in ``path``, made first when the file is missing (a collection made before tokens)."""
    if not path.is_file():
        return write_token(path)
    return path.read_text().strip()
