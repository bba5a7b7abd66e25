"""Collections: one folder that holds everything a search by image needs (docs/architecture.md, "Collections").

```
DIR/collection.json   format, code length, encoding engine, index backend, where the model came from
DIR/model/            the run's model: config.yaml + checkpoint.pt (tensors only); model.onnx when exported
DIR/items.sqlite      the item table, the source of truth: id, code, source, label, time added (SQLite, WAL)
DIR/images/           images stored inside the collection (arrays and uploads), named by their content hash
DIR/token             the bearer token the HTTP service asks for writes (mode 0600)
DIR/thumbs/           a small thumbnail of each image that lives outside (files), so nothing outside is read to show it
```

The Hamming index (in memory, or Milvus with ``backend="milvus"``) is derived from the item table when the
collection opens and kept in step on every write. An ``add`` returns only after its transaction commits,
so an acknowledged item survives a crash; stored images are written before the row that names them, and
files no row names are removed at open.

A source is an image file's absolute path, ``collection:images/<hash>.png`` for an image stored inside,
or ``<protocol>:<split>:<index>`` for a protocol's image (its index in the protocol's pool).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from . import _io
from .codes import as_packed, pack
from .data.images import DEFAULT_MAX_PIXELS, at_size, decode_image
from .data.lists import ImageList, read_images
from .encoders import OnnxEncoder, TorchEncoder
from .errors import CollectionError
from .progress import progress_bar
from .registry import INDEX_BACKENDS

FORMAT = 1
if TYPE_CHECKING:  # (a collection that encodes with ONNX Runtime never loads a run, nor torch)
    from .run import Run

STORED = "collection:"
THUMB_SIDE = 160
SCHEMA = """CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT, code BLOB NOT NULL, source TEXT NOT NULL, label TEXT, added REAL NOT NULL)"""


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: int
    distance: int
    source: str
    label: str | None


class ItemStore:
    """The item table in SQLite (WAL, synchronous FULL): each write is one transaction."""

    def __init__(self, path: Path) -> None:
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise CollectionError(f"{path}: not a readable item table ({e})") from None

    def add(self, codes: np.ndarray, sources: list[str], labels: list[str | None]) -> np.ndarray:
        """Insert rows in one transaction; ids continue after the largest ever given (never reused)."""
        now = time.time()
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            row = cur.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone()
            start = (row[0] if row else 0) + 1
            ids = np.arange(start, start + len(codes), dtype=np.int64)
            cur.executemany(
                "INSERT INTO items (id, code, source, label, added) VALUES (?, ?, ?, ?, ?)",
                [(int(i), c.tobytes(), s, lab, now) for i, c, s, lab in zip(ids, codes, sources, labels)],
            )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return ids

    def remove(self, ids: np.ndarray) -> list[str]:
        """Delete rows in one transaction; returns the sources of the rows deleted."""
        cur = self.db.cursor()
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

    def rows(self, ids: list[int]) -> dict[int, tuple[str, str | None, float]]:
        """id -> (source, label, added) for the ids present (an id outside SQLite's integers is absent)."""
        ids = [i for i in ids if -(2**63) <= i < 2**63]
        out = {}
        for a in range(0, len(ids), 900):  # SQLite's bound-parameter limit
            chunk = [int(i) for i in ids[a : a + 900]]
            marks = ",".join("?" * len(chunk))
            for i, s, lab, t in self.db.execute(f"SELECT id, source, label, added FROM items WHERE id IN ({marks})", chunk):
                out[i] = (s, lab, t)
        return out

    def codes(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, packed codes) of every row, by id."""
        rows = self.db.execute("SELECT id, code FROM items ORDER BY id").fetchall()
        ids = np.array([r[0] for r in rows], np.int64)
        codes = np.frombuffer(b"".join(r[1] for r in rows), np.uint8).reshape(len(rows), width)
        return ids, codes

    def sources(self, stored: bool = True) -> set[str]:
        """The sources of the images stored inside (``stored``), or of every other item."""
        op = "LIKE" if stored else "NOT LIKE"
        return {r[0] for r in self.db.execute(f"SELECT DISTINCT source FROM items WHERE source {op} ?", (STORED + "%",))}

    def codes_of(self, ids: list[int], width: int) -> np.ndarray:
        """Packed codes of the given ids, in their order (each must exist)."""
        found = dict(self.db.execute(f"SELECT id, code FROM items WHERE id IN ({','.join('?' * len(ids))})", ids).fetchall())
        return np.frombuffer(b"".join(found[i] for i in ids), np.uint8).reshape(len(ids), width)

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


class Collection:
    """A searchable collection of images (see the module docstring).

    >>> col = Collection.create("photos.hdc", Run.load("runs/my-run"))
    >>> ids = col.add("my_photos/")                       # a folder, a list file, image files or arrays
    >>> [[hit.source for hit in hits] for hits in col.search("query.jpg", k=5)]
    """

    def __init__(self, path: Path, meta: dict[str, Any], encoder: Any, store: ItemStore, index: Any) -> None:
        self.path, self.meta, self.encoder, self.store, self.index = path, meta, encoder, store, index
        self.bits = int(meta["bits"])
        self.max_pixels = DEFAULT_MAX_PIXELS  # images over it are refused from their header (data/images.py)
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(
        cls, path: str | os.PathLike, run: Run | str | os.PathLike, *, engine: str = "auto", backend: str = "flat",
        uri: str | None = None,
    ) -> Collection:  # fmt: skip
        """A new, empty collection at ``path`` (which must not exist, or be an empty folder) encoding with ``run``'s
        model: ``engine`` ``onnx`` (exported and checked against torch), ``torch``, or ``auto`` (ONNX where
        onnxruntime is installed); ``backend`` ``flat`` (in memory) or ``milvus`` (``uri``: a Milvus Lite file or
        a server)."""
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise CollectionError(f"{path}: already exists (a collection goes into a new or empty folder)")
        if engine not in ("auto", "onnx", "torch"):
            raise CollectionError(f"engine must be auto, onnx or torch, got {engine!r}")
        if backend not in INDEX_BACKENDS:
            raise CollectionError(f"backend must be one of {', '.join(INDEX_BACKENDS.names())}, got {backend!r}")
        if INDEX_BACKENDS.info(backend).get("uri") != bool(uri):
            with_uri = [b for b in INDEX_BACKENDS.names() if INDEX_BACKENDS.info(b).get("uri")]
            raise CollectionError(f"backend {backend}: {'needs' if not uri else 'takes no'} a uri (backends with a uri: "
                                  f"{', '.join(with_uri)}, e.g. a Milvus Lite .db file or a server)")  # fmt: skip
        import torch

        from .config import dump_config
        from .run import Run

        run = run if isinstance(run, Run) else Run.load(run)
        tmp = path.parent / f".{path.name}.creating-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            (tmp / "model").mkdir(parents=True)
            (tmp / "images").mkdir()
            (tmp / "thumbs").mkdir()
            _io.write_text(tmp / "model" / "config.yaml", dump_config(run.config))  # (config: read by a run only)
            state = {"model": run.model.state_dict()}
            _io.atomic_write(tmp / "model" / "checkpoint.pt", lambda f: torch.save(state, f))
            chosen = "torch"
            if engine in ("auto", "onnx") and _onnx_available(engine == "onnx"):
                chosen = _export_checked(run, tmp / "model" / "model.onnx", required=engine == "onnx")
            meta = {
                "format": FORMAT, "bits": run.bits, "engine": chosen, "load_size": run.load_size, "run": str(run.path.resolve()),
                "backend": backend, "uri": uri, "milvus_collection": f"hd_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]}",
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }  # fmt: skip
            ItemStore(tmp / "items.sqlite").close()
            _io.write_json(tmp / "collection.json", meta)
            write_token(tmp / "token")
            if path.exists():
                path.rmdir()
            os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return cls.open(path)

    @classmethod
    def open(cls, path: str | os.PathLike) -> Collection:
        """Open a collection folder; the index is rebuilt from the item table."""
        path = Path(path)
        meta_path = path / "collection.json"
        if not meta_path.is_file():
            raise CollectionError(f"{path}: not a collection (no collection.json)")
        try:
            meta = json.loads(meta_path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CollectionError(f"{meta_path}: not valid JSON ({e})") from None
        missing = [
            k for k in ("format", "bits", "engine", "load_size", "backend") if not isinstance(meta, dict) or k not in meta
        ]
        if missing:
            raise CollectionError(f"{meta_path}: missing {', '.join(missing)}")
        if meta["format"] != FORMAT:
            raise CollectionError(f"{meta_path}: collection format {meta['format']}, this hashdistill reads {FORMAT}")
        if meta["engine"] == "onnx":
            encoder = OnnxEncoder(path / "model" / "model.onnx", meta["load_size"])
        else:
            from .run import Run

            encoder = TorchEncoder(Run.load(path / "model"))
        store = ItemStore(path / "items.sqlite")
        ids, codes = store.codes(int(meta["bits"]) // 8)
        col = cls(path, meta, encoder, store, _index(meta, ids, codes))
        col._remove_orphans()
        return col

    def _remove_orphans(self) -> None:
        """Stored images and thumbnails no row names (an add interrupted between the file and the commit)."""
        named = {s.removeprefix(STORED) for s in self.store.sources()}
        named |= {_thumb_name(s) for s in self.store.sources(stored=False) if _is_file_source(s)}
        for folder in ("images", "thumbs"):
            (self.path / folder).mkdir(exist_ok=True)
            for f in (self.path / folder).iterdir():
                if f"{folder}/{f.name}" not in named:
                    f.unlink(missing_ok=True)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ contents
    def __len__(self) -> int:
        return len(self.store)

    def warm_up(self) -> None:
        """Do once what the first search would: load the encoder, encode one image and search one code (the
        adaptive index times itself then), so a service is quick from its first request."""
        side = self.encoder.load_size or 32
        self.encoder.encode(np.zeros((1, side, side, 3), np.uint8))
        if len(self):
            self.search(codes=np.zeros((1, self.bits // 8), np.uint8), k=1)

    def stats(self) -> dict[str, Any]:
        size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return {
            "items": len(self), "bits": self.bits, "engine": self.meta["engine"], "backend": self.meta["backend"],
            "index": getattr(self.index, "method", "milvus"), "run": self.meta.get("run"), "created": self.meta.get("created"),
            "labels": self.store.label_counts(), "size_mb": round(size / 2**20, 2),
        }  # fmt: skip

    def encode(self, images: Any) -> np.ndarray:
        """Packed codes (n, bits/8) of images (anything ``add`` takes)."""
        batch, sources, _ = self._images(images, store=False)
        return pack(self._encode(batch, sources, thumbs=False))

    def add(self, images: Any, labels: list[str | None] | None = None, *, allow_outside_root: bool = False) -> np.ndarray:
        """Encode and add images: a folder (class-per-folder or unlabelled), a list file (its paths inside its
        folder unless ``allow_outside_root``), an image file or a list of them, or a uint8 array (N, H, W[, C])
        (stored inside the collection); returns their ids."""
        batch, sources, found = self._images(images, store=True, outside_root=allow_outside_root)
        labels = found if labels is None else list(labels)
        if len(labels) != len(sources):
            raise CollectionError(f"{len(sources)} images but {len(labels)} labels")
        return self.add_codes(pack(self._encode(batch, sources, thumbs=True)), sources, labels)

    def _encode(self, images: Any, sources: list[str], thumbs: bool) -> np.ndarray:
        """Continuous codes of images; files are read once, batch by batch, and (``thumbs``) each file's
        thumbnail is written from the array the encoder sees, before the rows are committed."""
        if not isinstance(images, ImageList):  # a list of arrays: encoded in groups of one size, in order
            out = np.empty((len(images), self.bits), np.float32)
            by_shape: dict[tuple, list[int]] = {}
            for i, a in enumerate(images):
                by_shape.setdefault(a.shape, []).append(i)
            for idx in by_shape.values():
                out[idx] = self.encoder.encode(np.stack([images[i] for i in idx]))
            return out
        parts, done = [], 0
        bar = progress_bar(total=len(images), desc="encoding", unit="images")
        for x in images.batches(256):
            if thumbs:
                for image, source in zip(x, sources[done : done + len(x)]):
                    _write_thumb(self.path / _thumb_name(source), image)
            parts.append(self.encoder.encode(x))
            done += len(x)
            bar.update(len(x))
        bar.close()
        return np.concatenate(parts)

    def add_codes(self, codes: Any, sources: list[str], labels: list[str | None] | None = None) -> np.ndarray:
        """Add items whose codes are known (e.g. a run's saved database codes); returns their ids."""
        packed = self._as_codes(codes)
        labels = [None] * len(sources) if labels is None else labels
        if not len(packed) == len(sources) == len(labels):
            raise CollectionError(f"{len(packed)} codes, {len(sources)} sources and {len(labels)} labels")
        with self._lock:
            ids = self.store.add(packed, sources, labels)  # committed: acknowledged
            self.index.add(packed, ids)
        return ids

    def add_split(self, split: str = "database", run: Run | None = None) -> np.ndarray:
        """Add a protocol split of the run the collection was made from (its saved codes where they match)."""
        from .run import Run

        if run is None:  # the run it was made from (its saved codes), else the model copy (encodes the split)
            source = Path(self.meta.get("run") or "")
            run = Run.load(source) if (source / "checkpoint.pt").is_file() else Run.load(self.path / "model")
        data = run.data
        s = data.split(split)
        protocol = run.config.data.protocol
        if protocol is None:
            raise CollectionError("add_split takes a protocol split; add your own images with add(FOLDER)")
        sources = [f"{protocol}:{split}:{int(i)}" for i in s.ids]
        return self.add_codes(run.codes(split), sources, _label_names(s.labels, data.class_names, len(s)))

    def remove(self, ids: Any) -> int:
        """Remove items by id; returns how many were removed (stored images of removed items are deleted)."""
        ids = [i for i in (int(v) for v in np.asarray(ids, dtype=object).reshape(-1)) if -(2**63) <= i < 2**63]
        if not ids:
            return 0
        with self._lock:
            gone = self.store.remove(ids)
            self.index.remove(np.array(ids, np.int64))
            for s in set(gone):  # a file another item still names stays
                if not self.store.has_source(s):
                    if s.startswith(STORED):
                        inside(self.path, s.removeprefix(STORED)).unlink(missing_ok=True)
                    elif _is_file_source(s):
                        (self.path / _thumb_name(s)).unlink(missing_ok=True)
        return len(gone)

    def codes_of(self, ids: Any) -> np.ndarray:
        """The packed codes of items already in the collection."""
        return self.store.codes_of([int(i) for i in np.asarray(ids).reshape(-1)], self.bits // 8)

    def get(self, ids: Any) -> list[Hit | None]:
        """Each id's item (distance 0), or None where the collection has no such id."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        rows = self.store.rows(ids)
        return [Hit(i, 0, *rows[i][:2]) if i in rows else None for i in ids]

    def image(self, item_id: int) -> np.ndarray:
        """An item's image as uint8 (H, W) or (H, W, 3), read from its source."""
        hit = self.get([item_id])[0]
        if hit is None:
            raise CollectionError(f"no item {item_id}")
        return read_source(hit.source, self.path)

    def thumbnail(self, item_id: int) -> bytes:
        """A PNG or JPEG of at most ``THUMB_SIDE`` pixels a side, read only from inside the collection (or a
        protocol's pool): an image stored inside, the thumbnail written when a file was added, a protocol image."""
        hit = self.get([item_id])[0]
        if hit is None:
            raise CollectionError(f"no item {item_id}")
        if _is_file_source(hit.source):
            thumb = self.path / _thumb_name(hit.source)
            if not thumb.is_file():
                raise CollectionError(f"item {item_id} has no thumbnail (its image lives outside the collection)")
            return thumb.read_bytes()
        image = Image.fromarray(read_source(hit.source, self.path))
        image.thumbnail((THUMB_SIDE, THUMB_SIDE))
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()

    # ------------------------------------------------------------------ search
    def search(self, queries: Any = None, k: int = 10, radius: int | None = None, *, codes: Any = None) -> list[list[Hit]]:
        """The nearest items of each query (images as ``add`` takes them, or ``codes``): at most ``k`` per query,
        ranked by Hamming distance, and with ``radius`` only those within it."""
        if not isinstance(k, int | np.integer) or k <= 0:
            raise CollectionError(f"k must be a positive integer, got {k!r}")
        if radius is not None and (not isinstance(radius, int | np.integer) or radius < 0):
            raise CollectionError(f"radius must be a non-negative integer, got {radius!r}")
        if (queries is None) == (codes is None):
            raise CollectionError("search takes query images or codes")
        q = self._as_codes(codes) if codes is not None else self.encode(queries)
        with self._lock:
            if radius is None:
                dist, ids = self.index.search(q, int(min(k, max(1, len(self.index)))))
                per_query = [[(int(i), int(d)) for i, d in zip(row_i, row_d) if i >= 0] for row_i, row_d in zip(ids, dist)]
            else:
                lims, dist, ids = self.index.range_search(q, int(radius))
                per_query = [list(zip(ids[a:b].tolist(), dist[a:b].tolist()))[:k] for a, b in zip(lims[:-1], lims[1:])]
        rows = self.store.rows(sorted({i for hits in per_query for i, _ in hits}))
        return [[Hit(i, d, rows[i][0], rows[i][1]) for i, d in hits if i in rows] for hits in per_query]

    # ------------------------------------------------------------------ inputs
    def _as_codes(self, codes: Any) -> np.ndarray:
        c = np.asarray(codes)
        if c.ndim == 1:
            c = c[None]
        width = c.shape[1] * 8 if c.dtype == np.uint8 else c.shape[1]
        if c.ndim != 2 or width != self.bits:
            raise CollectionError(f"codes must be (n, {self.bits}) signs or (n, {self.bits // 8}) packed bytes, got {c.shape}")
        return as_packed(c)

    def _images(self, images: Any, store: bool, outside_root: bool = False) -> tuple[Any, list[str], list[str | None]]:
        """(images to encode, their sources, their labels) from any accepted input."""
        if isinstance(images, str | os.PathLike):
            return self._list(read_images(images, allow_outside_root=outside_root))
        if isinstance(images, list | tuple) and images and all(isinstance(p, str | os.PathLike) for p in images):
            paths = [Path(p).resolve() for p in images]
            for p in paths:
                if not p.is_file():
                    raise CollectionError(f"{p}: no such image")
            return self._list(ImageList(paths, None, [], [str(p) for p in paths]))
        if isinstance(images, ImageList):
            return self._list(images)
        if isinstance(images, list | tuple) and images and all(isinstance(a, np.ndarray) for a in images):
            arrays = list(images)  # images of different sizes (uploads)
        else:
            arr = np.asarray(images)
            if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[-1] not in (1, 3)):
                raise CollectionError(
                    f"images are a folder, a list file, image files or a uint8 array (N, H, W[, C]); got {arr.dtype} {arr.shape}"
                )
            arrays = list(arr)
        for a in arrays:
            if a.dtype != np.uint8 or a.ndim not in (2, 3):
                raise CollectionError(f"an image is a uint8 array (H, W[, C]), got {a.dtype} {a.shape}")
        sources = [self._store_image(a) for a in arrays] if store else ["array"] * len(arrays)
        # read as the run read its own images (files at data.load_size), so an array and its file agree
        return [at_size(a, self.encoder.load_size) for a in arrays], sources, [None] * len(arrays)

    def _list(self, lst: ImageList) -> tuple[ImageList, list[str], list[str | None]]:
        sources = [str(Path(p).resolve()) for p in lst.paths]
        return (
            lst.at_size(self.encoder.load_size, max_pixels=self.max_pixels),
            sources,
            _label_names(lst.labels, lst.class_names, len(lst)),
        )

    def _store_image(self, image: np.ndarray) -> str:
        """Write an image into the collection (PNG, named by its content hash) before its row is committed."""
        buf = io.BytesIO()
        Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image).save(buf, format="PNG")
        data = buf.getvalue()
        name = f"images/{hashlib.sha256(data).hexdigest()[:24]}.png"
        if not (self.path / name).is_file():
            _io.atomic_write(self.path / name, lambda f: f.write(data))
        return STORED + name


def inside(root: Path, relative: str) -> Path:
    """``root / relative``, refused unless it stays inside ``root`` (a crafted source cannot reach out)."""
    path = (root / relative).resolve()
    if root.resolve() not in path.parents:
        raise CollectionError(f"{relative}: outside the collection")
    return path


def write_token(path: Path) -> str:
    """A new bearer token for the collection's service, readable by its owner only (mode 0600)."""
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def read_source(source: str, root: Path | None = None) -> np.ndarray:
    """The image a source names: a file, an image stored in the collection at ``root``, or a protocol item."""
    if source.startswith(STORED):
        return decode_image(inside(Path(root), source.removeprefix(STORED)))
    parts = source.split(":")
    if len(parts) == 3 and parts[2].isdigit():
        from .data import PROTOCOLS, load_protocol

        if parts[0] in PROTOCOLS:
            return load_protocol(parts[0]).images[int(parts[2])]
    return decode_image(source)


def _is_file_source(source: str) -> bool:
    """A source naming a file outside the collection (not a stored image, not a protocol item)."""
    if source.startswith(STORED):
        return False
    parts = source.split(":")
    return not (len(parts) == 3 and parts[2].isdigit() and not source.startswith("/"))


def _thumb_name(source: str) -> str:
    return f"thumbs/{hashlib.sha1(source.encode()).hexdigest()[:24]}.jpg"


def _write_thumb(path: Path, image: np.ndarray) -> None:
    thumb = Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image).convert("RGB")
    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
    _io.atomic_write(path, lambda f: thumb.save(f, format="JPEG", quality=85))


def _label_names(labels: np.ndarray | None, names: list[str], n: int) -> list[str | None]:
    """Labels as text: the class name, or the comma-joined names of a multi-hot row; None where unknown."""
    if labels is None:
        return [None] * n
    if labels.ndim == 1:
        return [names[int(y)] if names else str(int(y)) for y in labels]
    return [",".join(names[j] if names else str(j) for j in np.flatnonzero(row)) for row in labels]


def _index(meta: dict[str, Any], ids: np.ndarray, codes: np.ndarray) -> Any:
    """The derived index over the item table's codes, from the backend the collection was made with
    (``registry.INDEX_BACKENDS``: flat, milvus, or any registered one)."""
    return INDEX_BACKENDS.get(meta["backend"])(int(meta["bits"]), meta, ids, codes)


def _onnx_available(required: bool) -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        if required:
            raise CollectionError('engine onnx needs onnx and onnxruntime: pip install "hashdistill[onnx]"') from None
        return False
    return True


def _export_checked(run: Run, path: Path, required: bool) -> str:
    """Export to ONNX and check the signs on a fixed batch of images; ``torch`` where they differ."""
    from .export import export_onnx, verify_onnx

    export_onnx(run.model, run.clean, path)
    side = run.load_size or run.clean.pre
    probe = np.random.default_rng(0).integers(0, 256, (16, side, side, 3), dtype=np.uint8)
    check = verify_onnx(run, path, probe)
    if check["sign_mismatches"]:
        if required:
            raise CollectionError(f"the ONNX export differs from torch in {check['sign_mismatches']} bits of a probe batch")
        path.unlink()
        return "torch"
    return "onnx"
