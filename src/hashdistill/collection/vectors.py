"""The items' stored outputs as ``stored`` re-ranking reads them (docs/search.md "Stored vectors in a collection").

The item table holds each item's output at unit length (float16), written in its row's transaction: the source
of truth. Searches read them from ``DIR/vectors.hdv``, a memory-mapped ``index.vectors.VectorFile`` derived from
the table, and from the vectors of items added since the collection opened, held in memory. The file's header
records the table's state it was written at (``ItemStore.state``); at open a file that is missing, damaged or of
another state is written again from the table (atomically), as the index is rebuilt from it. A removed item's
vector stays in the file until then: searches never ask for an id the index no longer holds. Where the folder
cannot be written (read-only), the vectors are held in memory instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..index.vectors import VectorFile, VectorFileError, write_vectors
from .store import ItemStore

FILE = "vectors.hdv"


class StoredVectors:
    """The stored unit outputs (dim = the code length) of a collection's items, by id."""

    def __init__(self, root: Path, store: ItemStore, dim: int) -> None:
        self.dim = dim
        state = store.state()
        path = root / FILE
        file = None
        try:
            file = VectorFile(path)
            if file.dim != dim or file.meta.get("state") != state:
                file = None
        except VectorFileError:
            pass
        if file is None:
            ids, vectors = store.all_vectors(dim)
            try:
                file = VectorFile(write_vectors(path, ids, vectors, {"state": state}))
            except OSError:  # a read-only folder: the same vectors, in memory
                self._base = (ids, vectors)
        if file is not None:
            self._base = (file.ids, file.vectors)
        self._ids = np.zeros(1024, np.int64)  # the items added since open: ids ascending, a buffer that doubles
        self._vectors = np.zeros((1024, dim), np.float16)
        self._n = 0

    def added(self, ids: np.ndarray, unit: np.ndarray) -> None:
        """Record the unit vectors (``store.unit_float16``) of items just committed (ids ascending, above every id
        before them)."""
        ids = np.asarray(ids, np.int64)
        end = self._n + len(ids)
        if end > len(self._ids):
            size = max(end, 2 * len(self._ids))
            self._ids = np.concatenate([self._ids[: self._n], np.zeros(size - self._n, np.int64)])
            self._vectors = np.concatenate([self._vectors[: self._n], np.zeros((size - self._n, self.dim), np.float16)])
        self._ids[self._n : end], self._vectors[self._n : end] = ids, unit
        self._n = end

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The vectors of ``ids`` (1-D) as float32 (n, dim), and whether each id has one (zeros where not)."""
        ids = np.asarray(ids, np.int64)
        out = np.zeros((len(ids), self.dim), np.float32)
        has = np.zeros(len(ids), bool)
        for known, vectors in (self._base, (self._ids[: self._n], self._vectors[: self._n])):
            if len(known) and len(ids):
                pos = np.minimum(np.searchsorted(known, ids), len(known) - 1)
                found = (known[pos] == ids) & ~has
                out[found] = vectors[pos[found]]
                has |= found
        return out, has


__all__ = ["FILE", "StoredVectors"]
