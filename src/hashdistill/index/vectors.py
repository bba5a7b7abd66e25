"""Stored float vectors for re-ranking (``rerank.py``, ``stored``): one per id, float16, memory-mapped.

    b"HDVECTOR" | uint32 version | uint32 header length | header JSON | zero padding to 64 bytes
    | ids (n x int64 LE, strictly increasing) | vectors (n x dim x float16 LE) | sha256 of all before it

Written atomically (temp file + rename). Opening checks the magic, version, header, size and (``verify``,
the default) the checksum and the order of the ids before it maps the vectors; a truncated, altered or
foreign file fails with one line naming it. The vectors stay on disk: the page cache holds the ones read.
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
from .prefix import PREFIX, opened, prefix_bytes, read_header

MAGIC = b"HDVECTOR"
VERSION = 1
ALIGN = 64
MAX_HEADER = 1 << 16


class VectorFileError(CodesError):
    """A vector file that cannot be opened; the message names the file and the problem."""


def _layout(head_len: int) -> int:
    """Where the ids start: after the prefix and header, padded to ``ALIGN`` bytes."""
    end = PREFIX.size + head_len
    return -(-end // ALIGN) * ALIGN


def write_vectors(path: str | os.PathLike, ids: Any, vectors: Any, meta: dict | None = None) -> Path:
    """Write ``vectors`` (n, dim), stored as float16, for ``ids`` (n, strictly increasing) to ``path``; ``meta``
    (a small JSON object) goes into the header, read back as ``VectorFile.meta``."""
    ids = np.asarray(ids, np.int64).reshape(-1)
    v = np.asarray(vectors, np.float32)
    if v.ndim != 2 or len(v) != len(ids):
        raise CodesError(f"vectors: expected ({len(ids)}, dim) for {len(ids)} ids, got shape {v.shape}")
    if len(ids) > 1 and not (ids[1:] > ids[:-1]).all():
        raise CodesError("vectors: ids must be strictly increasing")
    if not np.isfinite(v).all() or (np.abs(v) > 65504).any():
        raise CodesError("vectors: NaN, infinite or beyond float16's range (65504)")
    head = json.dumps({"n": len(ids), "dim": int(v.shape[1]), "dtype": "float16", "meta": meta or {}}, sort_keys=True)
    head = head.encode()
    if len(head) > MAX_HEADER:
        raise CodesError(f"vectors: a header of {len(head)} bytes (meta too large; at most {MAX_HEADER})")
    start = _layout(len(head))
    body = prefix_bytes(MAGIC, VERSION, head) + bytes(start - PREFIX.size - len(head))
    id_bytes, vec_bytes = ids.astype("<i8").tobytes(), v.astype("<f2").tobytes()
    digest = hashlib.sha256(body)
    digest.update(id_bytes)
    digest.update(vec_bytes)

    def write(f) -> None:
        for part in (body, id_bytes, vec_bytes, digest.digest()):
            f.write(part)

    return atomic_write(path, write)


class VectorFile:
    """The vectors of a file written by ``write_vectors``, memory-mapped: ``lookup(ids)`` gathers them."""

    def __init__(self, path: str | os.PathLike, verify: bool = True) -> None:
        self.path = Path(path)
        head, start = self._read_header()
        self.n, self.dim, self.meta = head["n"], head["dim"], head.get("meta", {})
        expected = start + self.n * 8 + self.n * self.dim * 2 + 32
        size = self.path.stat().st_size
        if size != expected:
            what = "truncated" if size < expected else "has trailing data"
            raise VectorFileError(f"{self.path}: vector file {what} ({size} bytes, expected {expected})")
        if verify:
            self._verify(size)
        self.ids = np.memmap(self.path, "<i8", "r", start, (self.n,))
        self.vectors = np.memmap(self.path, "<f2", "r", start + self.n * 8, (self.n, self.dim))
        if verify and self.n > 1 and not (self.ids[1:] > self.ids[:-1]).all():
            raise VectorFileError(f"{self.path}: ids out of order (a damaged vector file)")

    def _read_header(self) -> tuple[dict, int]:
        with opened(self.path, "vector", VectorFileError) as f:
            raw, end = read_header(f, self.path, MAGIC, VERSION, "vector", MAX_HEADER, VectorFileError)
        try:
            head = json.loads(raw)
            ok = isinstance(head, dict) and head.get("dtype") == "float16"
            ok = ok and all(isinstance(head.get(k), int) and not isinstance(head.get(k), bool) for k in ("n", "dim"))
            ok = ok and head["n"] >= 0 and 0 < head["dim"] <= 1 << 16 and isinstance(head.get("meta", {}), dict)
        except (ValueError, UnicodeDecodeError):
            ok = False
        if not ok:
            raise VectorFileError(f"{self.path}: damaged vector header")
        return head, _layout(end - PREFIX.size)

    def _verify(self, size: int) -> None:
        digest = hashlib.sha256()
        with open(self.path, "rb") as f:
            left = size - 32
            while left:
                chunk = f.read(min(left, 1 << 22))
                digest.update(chunk)
                left -= len(chunk)
            if f.read(32) != digest.digest():
                raise VectorFileError(f"{self.path}: checksum mismatch (a damaged or altered vector file)")

    def __len__(self) -> int:
        return self.n

    def lookup(self, ids: Any) -> np.ndarray:
        """The vectors of ``ids`` (any shape) as float32 (*ids.shape, dim); an id not stored (the -1 of a
        search's padding) gives zeros."""
        ids = np.asarray(ids, np.int64)
        flat = ids.reshape(-1)
        out = np.zeros((len(flat), self.dim), np.float32)
        if self.n:
            pos = np.minimum(np.searchsorted(self.ids, flat), self.n - 1)
            found = self.ids[pos] == flat
            out[found] = self.vectors[pos[found]]
        return out.reshape(*ids.shape, self.dim)


__all__ = ["VectorFile", "VectorFileError", "write_vectors"]
