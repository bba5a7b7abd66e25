"""A collection's item table, the source of truth: id (never reused), packed code, source, label, time added,
metadata (JSON text, ``metadata.py``), the item's unit-length continuous output (float16, what ``stored``
re-ranking reads; NULL where it was not known) and, in a collection that stores them, its unit-length backbone
features (``features`` re-ranking), in SQLite (WAL, synchronous FULL), each write one transaction."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..codes import PackedCodes
from ..errors import CollectionError
from .metadata import Where

STORED = "collection:"  # the source of an image stored inside the collection: collection:images/<hash>.png
ROW_CACHE = 1 << 16  # rows (source, label, metadata text) kept in memory for search results; cleared when full
SCHEMA = """CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT, code BLOB NOT NULL, source TEXT NOT NULL, label TEXT, added REAL NOT NULL,
    meta TEXT, vec BLOB, feat BLOB)"""
VECTOR_COLUMNS = ("vec", "feat")  # the stored vectors: the continuous output h, the backbone's features


def unit_float16(vectors: np.ndarray) -> np.ndarray:
    """Vectors (n, dim) scaled to unit length (a zero vector stays zero) as little-endian float16: what the
    table stores, and all a cosine needs."""
    v = np.asarray(vectors, np.float64)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return (v / np.where(norm > 0, norm, 1)).astype("<f2")


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: int
    distance: int
    source: str
    label: str | None
    meta: dict | None = None
    score: float | None = None  # the re-ranking score, where the search re-ranked (docs/search.md)


class ItemStore:
    """The item table in SQLite (WAL, synchronous FULL): each write is one transaction. The rows that searches
    return are cached in memory (``ROW_CACHE``: a search's ten rows cost a query otherwise), dropped when their
    row changes; the process that opened the store is the table's one writer (as it is the index's)."""

    def __init__(self, path: Path) -> None:
        self._cache: dict[int, tuple[str, str | None, str | None]] = {}
        self._cache_lock = threading.Lock()  # a read filling the cache never races a write emptying it
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute(SCHEMA)
            columns = {r[1] for r in self.db.execute("PRAGMA table_info(items)")}
            for name, kind in (("meta", "TEXT"), ("vec", "BLOB"), ("feat", "BLOB")):  # a table made before them
                if name not in columns:
                    self.db.execute(f"ALTER TABLE items ADD COLUMN {name} {kind}")
        except sqlite3.DatabaseError as e:
            raise CollectionError(f"{path}: not a readable item table ({e})") from None

    def add(
        self, codes: PackedCodes, sources: list[str], labels: list[str | None], metas: list[str | None] | None = None,
        vectors: np.ndarray | None = None, features: np.ndarray | None = None,
    ) -> np.ndarray:  # fmt: skip
        """Insert rows in one transaction (``metas``: checked JSON texts; ``vectors``, ``features``: the items'
        outputs and backbone features at unit length, ``unit_float16``); ids continue after the largest ever
        given (never reused)."""
        metas = metas or [None] * len(sources)
        vecs, feats = (
            [None] * len(sources) if v is None else [r.astype("<f2").tobytes() for r in v] for v in (vectors, features)
        )
        now = time.time()
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            row = cur.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone()
            start = (row[0] if row else 0) + 1
            ids = np.arange(start, start + len(codes), dtype=np.int64)
            cur.executemany(
                "INSERT INTO items (id, code, source, label, added, meta, vec, feat) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (int(i), c.tobytes(), s, lab, now, m, v, f)
                    for i, c, s, lab, m, v, f in zip(ids, codes.array, sources, labels, metas, vecs, feats)
                ],
            )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return ids

    def remove(self, ids: np.ndarray) -> list[str]:
        """Delete rows in one transaction; returns the sources of the rows deleted."""
        cur = self.db.cursor()
        with self._cache_lock:  # (a search filling the cache waits: no removed row goes back in)
            for i in ids:
                self._cache.pop(int(i), None)
            cur.execute("BEGIN IMMEDIATE")
            try:
                marks = ",".join("?" * len(ids))
                found = cur.execute(f"SELECT source FROM items WHERE id IN ({marks})", [int(i) for i in ids]).fetchall()
                cur.execute(f"DELETE FROM items WHERE id IN ({marks})", [int(i) for i in ids])
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return [r[0] for r in found]

    def rows(self, ids: list[int]) -> dict[int, tuple[str, str | None, dict | None]]:
        """id -> (source, label, metadata) for the ids present (an id outside SQLite's integers is absent)."""
        ids = [i for i in ids if -(2**63) <= i < 2**63]
        cache = self._cache
        found = {i: row for i in ids if (row := cache.get(i)) is not None}  # (get: another thread may clear it)
        missing = [int(i) for i in ids if i not in found]
        with self._cache_lock:
            for a in range(0, len(missing), 900):  # SQLite's bound-parameter limit
                chunk = missing[a : a + 900]
                marks = ",".join("?" * len(chunk))
                for i, s, lab, m in self.db.execute(f"SELECT id, source, label, meta FROM items WHERE id IN ({marks})", chunk):
                    found[i] = (s, lab, m)
            if len(cache) + len(missing) > ROW_CACHE:
                cache.clear()
            cache.update((i, found[i]) for i in missing if i in found)
        return {i: (s, lab, None if m is None else json.loads(m)) for i, (s, lab, m) in found.items()}

    def page(self, after: int, limit: int) -> list[tuple[int, str, str | None, dict | None]]:
        """Up to ``limit`` rows (id, source, label, metadata) with ids above ``after``, by id (a keyset page: no
        offset scan)."""
        rows = self.db.execute(
            "SELECT id, source, label, meta FROM items WHERE id > ? ORDER BY id LIMIT ?", (int(after), int(limit))
        )
        return [(i, s, lab, None if m is None else json.loads(m)) for i, s, lab, m in rows]

    def set_meta(self, item_id: int, meta: str | None) -> bool:
        """Replace one row's metadata (checked JSON text); False when there is no such row."""
        with self._cache_lock:
            self._cache.pop(int(item_id), None)
            return self.db.execute("UPDATE items SET meta = ? WHERE id = ?", (meta, int(item_id))).rowcount > 0

    def matching(self, where: Where, among: np.ndarray | None = None) -> np.ndarray:
        """The ids of the rows ``where`` holds for (of those ``among``, when given, at most 900), ascending."""
        cond, params = where.sql()
        if among is not None:
            if len(among) > 900:  # SQLite's bound-parameter limit
                return np.concatenate([self.matching(where, among[a : a + 900]) for a in range(0, len(among), 900)])
            cond += f" AND id IN ({','.join('?' * len(among))})"
            params = [*params, *(int(i) for i in among)]
        rows = self.db.execute(f"SELECT id FROM items WHERE {cond} ORDER BY id", params).fetchall()
        return np.array([r[0] for r in rows], np.int64)

    def codes(self, width: int) -> tuple[np.ndarray, PackedCodes]:
        """(ids, packed codes) of every row, by id."""
        rows = self.db.execute("SELECT id, code FROM items ORDER BY id").fetchall()
        ids = np.array([r[0] for r in rows], np.int64)
        return ids, PackedCodes(np.frombuffer(b"".join(r[1] for r in rows), np.uint8).reshape(len(rows), width))

    def sources(self, stored: bool = True) -> set[str]:
        """The sources of the images stored inside (``stored``), or of every other item."""
        op = "LIKE" if stored else "NOT LIKE"
        return {r[0] for r in self.db.execute(f"SELECT DISTINCT source FROM items WHERE source {op} ?", (STORED + "%",))}

    def codes_of(self, ids: list[int], width: int) -> PackedCodes:
        """Packed codes of the given ids, in their order (each must exist)."""
        found = {}
        for a in range(0, len(ids), 900):  # SQLite's bound-parameter limit
            chunk = [int(i) for i in ids[a : a + 900]]
            found.update(self.db.execute(f"SELECT id, code FROM items WHERE id IN ({','.join('?' * len(chunk))})", chunk))
        return PackedCodes(np.frombuffer(b"".join(found[int(i)] for i in ids), np.uint8).reshape(len(ids), width))

    def state(self) -> dict[str, int]:
        """What identifies the set of ids: their count and the largest id ever given (ids are never reused, so
        any add raises ``seq`` and a removal alone lowers ``count``)."""
        row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone()
        return {"count": len(self), "seq": int(row[0]) if row else 0}

    def all_vectors(self, dim: int, column: str = "vec") -> tuple[np.ndarray, np.ndarray]:
        """(ids, unit vectors as float16 (n, dim)) of every row that has one in ``column`` (``VECTOR_COLUMNS``),
        by id, read in one transaction."""
        if column not in VECTOR_COLUMNS:
            raise CollectionError(f"no vector column {column!r} (one of {', '.join(VECTOR_COLUMNS)})")
        rows = self.db.execute(f"SELECT id, {column} FROM items WHERE {column} IS NOT NULL ORDER BY id").fetchall()
        raw = b"".join(r[1] for r in rows)
        if any(len(r[1]) != dim * 2 for r in rows):
            raise CollectionError(
                f"items.sqlite: a stored vector ({column}) is not {dim} float16 values (a damaged item table)"
            )
        return np.array([r[0] for r in rows], np.int64), np.frombuffer(raw, "<f2").reshape(len(rows), dim)

    def random_id(self) -> int | None:
        row = self.db.execute("SELECT id FROM items ORDER BY RANDOM() LIMIT 1").fetchone()
        return None if row is None else int(row[0])

    def has_source(self, source: str) -> bool:
        return self.db.execute("SELECT 1 FROM items WHERE source = ? LIMIT 1", (source,)).fetchone() is not None

    def label_counts(self) -> dict[str, int]:
        return {str(lab): n for lab, n in self.db.execute("SELECT label, COUNT(*) FROM items GROUP BY label")}

    def __len__(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def close(self) -> None:
        self.db.close()
