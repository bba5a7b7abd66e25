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


class Key:
    """One bearer key: fixed (a string), or read from a file and re-read whenever the file changes (its size or
    modification time), so a key is rotated by rewriting its file, without a restart. A file that vanished or
    holds nothing leaves no key (requests that need it are refused, never let through)."""

    def __init__(self, source: str | Path | None) -> None:
        self.path = source if isinstance(source, Path) else None
        self._value = None if isinstance(source, Path) else source
        self._seen: tuple[int, int] | None = None

    def value(self) -> str | None:
        if self.path is None:
            return self._value
        try:
            st = self.path.stat()
            if (st.st_mtime_ns, st.st_size) != self._seen:
                self._value, self._seen = self.path.read_text().strip() or None, (st.st_mtime_ns, st.st_size)
        except OSError:
            self._value, self._seen = None, None
        return self._value
