"""The prefix our binary files open with: the index file (``storage.py``) and the vector file (``vectors.py``).

    8-byte magic | uint32 format version (LE) | uint32 header length (LE) | header JSON

``read_header`` checks the magic, the version and the header's length against the file's size before it
reads the header, each failure one line naming the file and what kind of file it should have been.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

PREFIX = struct.Struct("<8sII")


def prefix_bytes(magic: bytes, version: int, head: bytes) -> bytes:
    """The prefix and the header JSON ``head``."""
    return PREFIX.pack(magic, version, len(head)) + head


@contextmanager
def opened(path: Path, kind: str, error: type[Exception]) -> Iterator[BinaryIO]:
    """``path`` open for reading; a missing, folder or unreadable path is ``error`` with one line."""
    try:
        with open(path, "rb") as f:
            yield f
    except FileNotFoundError:
        raise error(f"{path}: no such {kind} file") from None
    except IsADirectoryError:
        raise error(f"{path}: a folder, not {'an' if kind[0] in 'aeiou' else 'a'} {kind} file") from None
    except OSError as e:
        raise error(f"{path}: unreadable {kind} file ({e.strerror or e})") from None


def read_header(
    f: BinaryIO, path: Path, magic: bytes, version: int, kind: str, max_header: int, error: type[Exception]
) -> tuple[bytes, int]:
    """(the raw header, the offset just after it) of the open file ``f``, a ``kind`` file ("index", "vector"):
    ``error`` with one line where the magic, the version or the header length is wrong."""
    size = os.fstat(f.fileno()).st_size
    prefix = f.read(PREFIX.size)
    if len(prefix) < PREFIX.size or prefix[:8] != magic:
        raise error(f"{path}: not a hashdistill {kind} file")
    _, got, head_len = PREFIX.unpack(prefix)
    if got != version:
        raise error(f"{path}: {kind} format version {got}, this hashdistill reads version {version}")
    if head_len > min(max_header, size - PREFIX.size):
        raise error(f"{path}: damaged {kind} header (length {head_len})")
    return f.read(head_len), PREFIX.size + head_len


__all__ = ["PREFIX", "opened", "prefix_bytes", "read_header"]
