"""The index file: magic, format version, JSON header, packed codes, ids, SHA-256 of all before it.

    b"HDISTIDX" | uint32 version | uint32 header length | header JSON | codes (n x bits/8) | ids (n x int64 LE) | sha256

Written atomically (temp file + rename). A truncated, altered or foreign file fails to load with
one clear line.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write
from ..errors import CodesError
from .prefix import opened, prefix_bytes, read_header

MAGIC = b"HDISTIDX"
VERSION = 1
MAX_HEADER = 1 << 20  # bytes: a header is a few dozen
MAX_BITS = 4096
INDEX_METHODS = ("flat", "mih", "auto")  # how a HammingIndex searches (not the registry of hashing methods)


class IndexFileError(CodesError):
    """An index file that cannot be loaded; the message names the file and the problem."""


def write_index(path: str | os.PathLike, header: dict[str, Any], packed: np.ndarray, ids: np.ndarray) -> Path:
    head = json.dumps(header, sort_keys=True).encode()
    body = prefix_bytes(MAGIC, VERSION, head)
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
    """(header, packed codes, ids) of an index file. The magic, version, header fields and file size are checked
    before the codes are read; the checksum after."""
    path = Path(path)
    with opened(path, "index", IndexFileError) as f:
        size = os.fstat(f.fileno()).st_size
        raw, start = read_header(f, path, MAGIC, VERSION, "index", MAX_HEADER, IndexFileError)
        header = _check_header(path, raw)
        n, bits = header["n"], header["bits"]
        expected = start + n * bits // 8 + n * 8 + 32
        if size != expected:
            what = "truncated" if size < expected else "has trailing data"
            raise IndexFileError(f"{path}: index file {what} ({size} bytes, expected {expected})")
        f.seek(0)
        data = f.read()
    if hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise IndexFileError(f"{path}: index file corrupt (checksum mismatch)")
    code_len = n * bits // 8
    packed = np.frombuffer(data, np.uint8, code_len, start).reshape(n, bits // 8)
    ids = np.frombuffer(data, "<i8", n, start + code_len).astype(np.int64)
    return header, packed, ids


def _check_header(path: Path, raw: bytes) -> dict[str, Any]:
    """The header's fields, each of the right type and range, or one ``IndexFileError`` line naming the field."""
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise IndexFileError(f"{path}: damaged index header (not JSON)") from None
    if not isinstance(header, dict):
        raise IndexFileError(f"{path}: damaged index header (not a JSON object)")
    checks = {
        "n": lambda v: _int(v) and v >= 0,
        "bits": lambda v: _int(v) and 0 < v <= MAX_BITS and v % 8 == 0,
        "method": lambda v: v in INDEX_METHODS,
        "m": lambda v: v is None or (_int(v) and v > 0),
        "next_id": lambda v: _int(v) and v >= 0,
    }
    for key, ok in checks.items():
        if key not in header and key in ("m", "next_id"):
            continue
        if key not in header or not ok(header[key]):
            raise IndexFileError(f"{path}: damaged index header ({key}: {header.get(key, 'missing')!r})")
    return header


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
