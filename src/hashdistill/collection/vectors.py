"""The items' stored vectors as re-ranking reads them (docs/search.md "Stored vectors in a collection"): their
outputs h (``stored``) and, in a collection that stores them, their backbone features (``features``).

The item table holds each item's vectors at unit length (float16), written in its row's transaction: the source
of truth. Searches read them from ``DIR/vectors.hdv`` (h) and ``DIR/features.hdv``, each a memory-mapped ``index.vectors.VectorFile`` derived from
the table. The file's header records the table's state it was written at (``ItemStore.state``); at open a file
that is missing, damaged or of another state is written again from the table (atomically), as the index is
rebuilt from it. The vectors of items added since are held in memory until ``flush`` writes the file again from
the table: when ``FLUSH_ROWS`` are pending (memory stays bounded in a long-running service) and when the
collection closes (the next open maps the file instead of writing it). A removed item's vector stays in the
file until then: searches never ask for an id the index no longer holds. Where the folder cannot be written (read-only), the vectors are
held in memory instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..index.vectors import VectorFile, VectorFileError, write_vectors
from .store import ItemStore

FILE = "vectors.hdv"
FILES = {"vec": FILE, "feat": "features.hdv"}  # the file of each of the table's vector columns
FLUSH_ROWS = 65_536  # added vectors held in memory before the file is written again (~9 MB at 64 bits)


class StoredVectors:
    """The stored unit vectors of one of the table's vector columns (``vec``: the outputs, dim = the code length;
    ``feat``: the backbone features) of a collection's items, by id. The vectors of items
    added since the file was written are held in memory until ``flush`` (at ``flush_rows`` of them, and when
    the collection closes) writes the file again from the table. The collection calls every method under its
    lock."""

    def __init__(self, root: Path, store: ItemStore, dim: int, flush_rows: int = FLUSH_ROWS, column: str = "vec") -> None:
        self.store, self.dim, self.path, self.flush_rows = store, dim, root / FILES[column], flush_rows
        self.column = column
        self.writable = True
        file = None
        try:
            file = VectorFile(self.path)
            if file.dim != dim or file.meta.get("state") != store.state():
                file = None
        except VectorFileError:
            pass
        if file is None:
            self._write()
        else:
            self._base = (file.ids, file.vectors)
        self._empty_buffer()

    def _write(self) -> None:
        """The file written again from the table (atomically) and mapped; in memory where it cannot be."""
        state = self.store.state()
        ids, vectors = self.store.all_vectors(self.dim, self.column)
        if self.writable:
            try:
                file = VectorFile(write_vectors(self.path, ids, vectors, {"state": state}))
                self._base = (file.ids, file.vectors)
                return
            except OSError:  # a read-only folder: the same vectors, in memory
                self.writable = False
        self._base = (ids, vectors)

    def _empty_buffer(self) -> None:
        self._ids = np.zeros(1024, np.int64)  # the items added since the file: ids ascending, a buffer that doubles
        self._vectors = np.zeros((1024, self.dim), np.float16)
        self._n = 0

    @property
    def pending(self) -> int:
        """How many added items' vectors are held in memory only."""
        return self._n

    def added(self, ids: np.ndarray, unit: np.ndarray) -> None:
        """Record the unit vectors (``store.unit_float16``) of items just committed (ids ascending, above every id
        before them); at ``flush_rows`` pending, ``flush``."""
        ids = np.asarray(ids, np.int64)
        end = self._n + len(ids)
        if end > len(self._ids):
            size = max(end, 2 * len(self._ids))
            self._ids = np.concatenate([self._ids[: self._n], np.zeros(size - self._n, np.int64)])
            self._vectors = np.concatenate([self._vectors[: self._n], np.zeros((size - self._n, self.dim), np.float16)])
        self._ids[self._n : end], self._vectors[self._n : end] = ids, unit
        self._n = end
        if self._n >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        """Write the file again from the table (every vector committed so far, none of removed items) and empty
        the in-memory part; nothing to do where none is pending or the folder is read-only."""
        if self._n and self.writable:
            self._write()
            self._empty_buffer()

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The vectors of ``ids`` (any shape; -1, padding, has none) as float32 (*ids.shape, dim), and whether each
        id has one (zeros where not)."""
        shape = np.shape(ids)
        ids = np.asarray(ids, np.int64).reshape(-1)
        out = np.zeros((len(ids), self.dim), np.float32)
        has = np.zeros(len(ids), bool)
        for known, vectors in (self._base, (self._ids[: self._n], self._vectors[: self._n])):
            if len(known) and len(ids):
                pos = np.minimum(np.searchsorted(known, ids), len(known) - 1)
                found = (known[pos] == ids) & ~has
                out[found] = vectors[pos[found]]
                has |= found
        return out.reshape(*shape, self.dim), has.reshape(shape)


__all__ = ["FILE", "FILES", "FLUSH_ROWS", "StoredVectors"]
