"""The index file: magic, format version, JSON header, packed codes, ids, SHA-256 of all before it.

    b"HDISTIDX" | uint32 version | uint32 header length | header JSON | codes (n x bits/8) | ids (n x int64 LE) | sha256

Written atomically (temp file + rename). A truncated, altered or foreign file fails to load with
one clear line.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write

MAGIC = b"HDISTIDX"
VERSION = 1
_PREFIX = struct.Struct("<8sII")


class IndexFileError(ValueError):
    """An index file that cannot be loaded; the message names the file and the problem."""


def write_index(path: str | os.PathLike, header: dict[str, Any], packed: np.ndarray, ids: np.ndarray) -> Path:
    head = json.dumps(header, sort_keys=True).encode()
    body = _PREFIX.pack(MAGIC, VERSION, len(head)) + head
    digest = hashlib.sha256(body)
    codes, id_bytes = np.ascontiguousarray(packed).tobytes(), ids.astype("<i8").tobytes()
    digest.update(codes)
    digest.update(id_bytes)

    def write(f) -> None:
        f.write(body)
        f.write(codes)
        f.write(id_bytes)
        f.write(digest.digest())

    return atomic_write(path, write)


def read_index(path: str | os.PathLike) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IndexFileError(f"{path}: no such index file") from None
    except OSError as e:
        raise IndexFileError(f"{path}: unreadable index file ({e})") from None
    if len(data) < _PREFIX.size or data[:8] != MAGIC:
        raise IndexFileError(f"{path}: not a hashdistill index file")
    _, version, head_len = _PREFIX.unpack_from(data)
    if version != VERSION:
        raise IndexFileError(f"{path}: index format version {version}, this hashdistill reads version {VERSION}")
    try:
        header = json.loads(data[_PREFIX.size : _PREFIX.size + head_len])
        n, bits = int(header["n"]), int(header["bits"])
    except (ValueError, KeyError, TypeError):
        raise IndexFileError(f"{path}: damaged index header") from None
    start = _PREFIX.size + head_len
    code_len, id_len = n * bits // 8, n * 8
    expected = start + code_len + id_len + 32
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing data"
        raise IndexFileError(f"{path}: index file {what} ({len(data)} bytes, expected {expected})")
    if hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise IndexFileError(f"{path}: index file corrupt (checksum mismatch)")
    packed = np.frombuffer(data, np.uint8, code_len, start).reshape(n, bits // 8)
    ids = np.frombuffer(data, "<i8", n, start + code_len).astype(np.int64)
    return header, packed, ids
