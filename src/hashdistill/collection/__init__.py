"""Collections: one folder that holds everything a search by image needs (docs/architecture.md, "Collections").

```
DIR/collection.json   format, code length, encoding engine, index backend, where the model came from
DIR/model/            the run's model: config.yaml + checkpoint.pt (tensors only); model.onnx when exported
DIR/items.sqlite      the item table, the source of truth: id, code, source, label, time added, metadata, the
                      item's continuous output at unit length (float16; what ``stored`` re-ranking reads) and,
                      where the collection stores them, its backbone features (``features``) (SQLite, WAL)
DIR/images/           images stored inside the collection (arrays and uploads), named by their content hash
DIR/token             the bearer token the HTTP service asks for writes (mode 0600; serve/token.py)
DIR/thumbs/           a small thumbnail of each image that lives outside (files), so nothing outside is read to show it
DIR/vectors.hdv       the items' stored outputs, memory-mapped, derived from the item table (vectors.py)
DIR/features.hdv      the items' stored backbone features, the same way (a collection made with features=True)
```

The Hamming index (in memory, or Milvus with ``backend="milvus"``) is derived from the item table when the
collection opens and kept in step on every write. An ``add`` returns only after its transaction commits,
so an acknowledged item survives a crash; stored images are written before the row that names them, and
files no row names are removed at open.

One facade over its parts, each its own module: the item table (``store.py``), item metadata and filters
(``metadata.py``), filtered search (``filtered.py``), the images the folder holds (``files.py``), what counts as
images (``inputs.py``) and the encoder (``engine.py``); the index comes from the
backend registered under the collection's ``backend`` (``registry.INDEX_BACKENDS``). The CLI, the Python API
and the service all call the facade (``search_image``, ``search_codes``, ``random_item``, ...).

A source is an image file's absolute path, ``collection:images/<hash>.png`` for an image stored inside,
or ``<protocol>:<split>:<index>`` for a protocol's image (its index in the protocol's pool).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _io
from ..codes import PackedCodes, pack, to_numpy
from ..data.images import DEFAULT_MAX_PIXELS, at_size
from ..data.lists import ImageList
from ..errors import CodesError, CollectionError
from ..index import HammingIndex
from ..index.asymmetric import ByScore
from ..index.rerank import EXPAND, asymmetric_scores, check_expand, cosine_scores, expanded_scores, ranking
from ..progress import progress_bar
from ..registry import INDEX_BACKENDS
from . import snapshot
from .engine import ENGINES, open_encoder, write_model
from .files import THUMB_SIDE, ImageFiles, inside, read_source
from .filtered import STRATEGIES, FilterCache, ranked, search_filtered
from .inputs import gather, label_names
from .metadata import Where, check_metadata, merge_metadata
from .store import STORED, Hit, ItemStore, unit_float16
from .vectors import StoredVectors

if TYPE_CHECKING:  # (a collection that encodes with ONNX Runtime never loads a run, nor torch)
    from ..run import Run

FORMAT = 1

__all__ = [
    "STORED", "THUMB_SIDE", "Collection", "CollectionError", "Hit", "ItemStore", "Where", "inside", "read_source",
]  # fmt: skip
MAX_PAGE = 1000  # items in one page of ``items``
RERANKS = ("stored", "asymmetric", "features", "none")  # what a collection's search re-ranks by (docs/search.md)
RERANK, OVERSAMPLE = "stored", 10  # the defaults, chosen by benchmarks/frontier.py (docs/search.md "Defaults")


class Collection:
    """A searchable collection of images (see the module docstring).

    >>> col = Collection.create("photos.hdc", Run.load("runs/my-run"))
    >>> ids = col.add("my_photos/")                       # a folder, a list file, image files or arrays
    >>> [[hit.source for hit in hits] for hits in col.search("query.jpg", k=5)]
    """

    def __init__(self, path: Path, meta: dict[str, Any], encoder: Any, store: ItemStore, index: Any) -> None:
        self.path, self.meta, self.encoder, self.store, self.index = path, meta, encoder, store, index
        self.files = ImageFiles(path)
        self.bits = int(meta["bits"])
        self.max_pixels = DEFAULT_MAX_PIXELS  # images over it are refused from their header (data/images.py)
        self._lock = threading.RLock()
        self._filters = FilterCache(self.bits)  # kept in step with every write
        self._files_lock = threading.Lock()  # a snapshot copying the files; a removal waits to delete any
        self.vectors = StoredVectors(path, store, self.bits)  # what ``stored`` re-ranking reads (vectors.py)
        self.feature_dim = int(meta.get("features") or 0)  # the stored backbone features' width (0: none stored)
        self.feature_vectors = StoredVectors(path, store, self.feature_dim, column="feat") if self.feature_dim else None

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(
        cls, path: str | os.PathLike, run: Run | str | os.PathLike, *, engine: str = "auto", backend: str = "flat",
        uri: str | None = None, features: bool = False,
    ) -> Collection:  # fmt: skip
        """A new, empty collection at ``path`` (which must not exist, or be an empty folder) encoding with ``run``'s
        model: ``engine`` ``onnx`` (exported and checked against torch), ``torch``, or ``auto`` (ONNX where
        onnxruntime is installed); ``backend`` ``flat`` (in memory) or ``milvus`` (``uri``: a Milvus Lite file or
        a server); ``features``: also store each item's backbone features (float16 on disk, 2 bytes each) for
        ``rerank="features"``, a search by look rather than by class (docs/search.md "Stored features")."""
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise CollectionError(f"{path}: already exists (a collection goes into a new or empty folder)")
        if engine not in ENGINES:
            raise CollectionError(f"engine must be auto, onnx or torch, got {engine!r}")
        if backend not in INDEX_BACKENDS:
            raise CollectionError(f"backend must be one of {', '.join(INDEX_BACKENDS.names())}, got {backend!r}")
        if INDEX_BACKENDS.info(backend).get("uri") != bool(uri):
            with_uri = [b for b in INDEX_BACKENDS.names() if INDEX_BACKENDS.info(b).get("uri")]
            raise CollectionError(f"backend {backend}: {'needs' if not uri else 'takes no'} a uri (backends with a uri: "
                                  f"{', '.join(with_uri)}, e.g. a Milvus Lite .db file or a server)")  # fmt: skip
        from ..run import Run

        run = run if isinstance(run, Run) else Run.load(run)
        tmp = path.parent / f".{path.name}.creating-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            chosen = write_model(run, tmp / "model", engine, features)
            (tmp / "images").mkdir()
            (tmp / "thumbs").mkdir()
            meta = {
                "format": FORMAT, "bits": run.bits, "engine": chosen, "load_size": run.load_size, "run": str(run.path.resolve()),
                "features": int(run.model.feature_dim) if features else 0, "backend": backend, "uri": uri, "milvus_collection": f"hd_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]}",
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }  # fmt: skip
            ItemStore(tmp / "items.sqlite").close()
            _io.write_json(tmp / "collection.json", meta)
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
        if not path.exists():
            raise CollectionError(f"{path}: no such collection folder")
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
        encoder = open_encoder(path / "model", meta["engine"], meta["load_size"])
        if meta.get("features") and encoder.features != meta["features"]:
            raise CollectionError(f"{path}: the collection stores {meta['features']} backbone features per item, but its "
                                  f"model gives {encoder.features}")  # fmt: skip
        store = ItemStore(path / "items.sqlite")
        ids, codes = store.codes(int(meta["bits"]) // 8)
        index = INDEX_BACKENDS.get(meta["backend"])(int(meta["bits"]), meta, ids, codes)
        col = cls(path, meta, encoder, store, index)
        if col.files.interrupted():  # only then: listing every row's source costs ~0.2 s per 69,000 items
            col.files.remove_orphans(store.sources(), store.sources(stored=False))
        return col

    def flush(self) -> None:
        """Write the vectors of the items added since open into ``vectors.hdv`` (``close`` does it too), so
        that the next open maps the file instead of writing it again from the item table."""
        with self._lock:
            self.vectors.flush()
            if self.feature_vectors is not None:
                self.feature_vectors.flush()

    def close(self) -> None:
        try:
            self.flush()
        finally:
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
        self.index.warm_up()
        if len(self):
            self.search(codes=PackedCodes(np.zeros((1, self.bits // 8), np.uint8)), k=1)

    def stats(self) -> dict[str, Any]:
        size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return {
            "items": len(self), "bits": self.bits, "features": self.feature_dim, "engine": self.meta["engine"], "backend": self.meta["backend"],
            "index": getattr(self.index, "method", "milvus"), "run": self.meta.get("run"), "created": self.meta.get("created"),
            "labels": self.store.label_counts(), "size_mb": round(size / 2**20, 2),
        }  # fmt: skip

    def encode(self, images: Any) -> PackedCodes:
        """The codes of images (anything ``add`` takes)."""
        batch, sources, _ = gather(images, self.encoder.load_size, self.max_pixels)
        return pack(self._encode(batch, sources, thumbs=False))

    def add(
        self, images: Any, labels: list[str | None] | None = None, *, metadata: Any = None, allow_outside_root: bool = False
    ) -> np.ndarray:
        """Encode and add images: a folder (class-per-folder or unlabelled), a list file (its paths inside its
        folder unless ``allow_outside_root``), an image file or a list of them, or a uint8 array (N, H, W[, C])
        (stored inside the collection); returns their ids. ``metadata``: one JSON object for every image, or a
        list of one per image (``metadata.py``)."""
        with self.files.changing():  # images and thumbnails are written before the rows are committed
            batch, sources, found = gather(
                images, self.encoder.load_size, self.max_pixels, self.files.store, allow_outside_root
            )
            labels = found if labels is None else list(labels)
            if len(labels) != len(sources):
                raise CollectionError(f"{len(sources)} images but {len(labels)} labels")
            metas = _metadata_list(metadata, len(sources))  # checked before the encoding
            h, f = self._split(self._encode(batch, sources, thumbs=True))
            return self._add(pack(h), sources, labels, metas, h, f)

    def _encode(self, images: Any, sources: list[str], thumbs: bool) -> np.ndarray:
        """Rows [h | f] of images (f, the backbone features, where the collection stores them); files are read
        once, batch by batch, and (``thumbs``) each file's thumbnail is written from the array the encoder sees,
        before the rows are committed."""
        if not isinstance(images, ImageList):  # a list of arrays: encoded in groups of one size, in order
            out = np.empty((len(images), self.bits + self.feature_dim), np.float32)
            by_shape: dict[tuple, list[int]] = {}
            for i, a in enumerate(images):
                by_shape.setdefault(a.shape, []).append(i)
            for idx in by_shape.values():
                out[idx] = self.encode_arrays(np.stack([images[i] for i in idx]))
            return out
        parts, done = [], 0
        bar = progress_bar(total=len(images), desc="encoding", unit="images")
        for x in images.batches(256):
            if thumbs:
                for image, source in zip(x, sources[done : done + len(x)]):
                    self.files.write_thumb(source, image)
            parts.append(self.encode_arrays(x))
            done += len(x)
            bar.update(len(x))
        bar.close()
        return np.concatenate(parts)

    def _split(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows [h | f] as (h, f), f None where the collection stores no features."""
        return rows[:, : self.bits], (rows[:, self.bits :] if self.feature_dim else None)

    def add_codes(
        self, codes: Any, sources: list[str], labels: list[str | None] | None = None, metadata: Any = None,
        features: Any = None,
    ) -> np.ndarray:  # fmt: skip
        """Add items whose codes are known (``PackedCodes``, e.g. a run's saved database codes, or ±1 signs, bool
        bits, real values), with ``metadata`` as ``add`` takes it; returns their ids. Real values are continuous
        outputs, stored for ``stored`` re-ranking; an item added by its bits is re-ranked by its bits.
        ``features``: the items' backbone features (n, ``feature_dim``), in a collection that stores them."""
        packed = self._as_codes(codes)
        labels = [None] * len(sources) if labels is None else labels
        if not len(packed) == len(sources) == len(labels):
            raise CollectionError(f"{len(packed)} codes, {len(sources)} sources and {len(labels)} labels")
        f = self._check_features(features, len(packed))
        return self._add(packed, sources, labels, _metadata_list(metadata, len(sources)), _continuous(codes), f)

    def _check_stores_features(self) -> None:
        if not self.feature_dim:
            raise CollectionError(
                "rerank features: this collection stores no features (create it with features=True, or collection create --features)"
            )

    def _check_features(self, features: Any, n: int) -> np.ndarray | None:
        """Backbone features given with codes, as a float32 (n, ``feature_dim``) array (None stays None)."""
        if features is None:
            return None
        if not self.feature_dim:
            raise CollectionError("features: this collection stores none (create it with features=True)")
        try:
            f = np.asarray(to_numpy(features), np.float32)
        except (TypeError, ValueError):
            raise CollectionError(f"features must be a real (n, {self.feature_dim}) array") from None
        if f.shape != (n, self.feature_dim) or not np.isfinite(f).all():
            raise CollectionError(f"features must be {n} rows of {self.feature_dim} finite values, got shape {f.shape}")
        return f

    def _add(
        self, packed: PackedCodes, sources: list[str], labels: list, metas: list[str | None], h: np.ndarray | None = None,
        f: np.ndarray | None = None,
    ) -> np.ndarray:  # fmt: skip
        unit = None if h is None else unit_float16(h)
        unit_f = None if f is None else unit_float16(f)
        with self._lock:
            ids = self.store.add(packed, sources, labels, metas, unit, unit_f)  # committed (with its vectors): acknowledged
            if unit is not None:
                self.vectors.added(ids, unit)
            if unit_f is not None:
                self.feature_vectors.added(ids, unit_f)
            self.index.add(packed, ids)
            self._filters.added(self.store, ids, packed)
        return ids

    def update(self, item_id: int, metadata: dict) -> Hit:
        """Change an item's metadata as a JSON merge patch (a key set to null is removed); returns the item."""
        with self._lock:
            hit = self.get([item_id])[0]
            if hit is None:
                raise CollectionError(f"no item {item_id}")
            self.store.set_meta(item_id, merge_metadata(hit.meta, metadata))
            self._filters.clear()
        return self.get([item_id])[0]

    def items(self, after: int = 0, limit: int = 100) -> list[Hit]:
        """Up to ``limit`` items (at most ``MAX_PAGE``) with ids above ``after``, by id: the next page is
        ``items(after=page[-1].id)``."""
        if not isinstance(limit, int | np.integer) or not 0 < limit <= MAX_PAGE:
            raise CollectionError(f"limit must be in 1..{MAX_PAGE}, got {limit!r}")
        if not isinstance(after, int | np.integer) or not -(2**63) <= after < 2**63:
            raise CollectionError(f"after must be an item id, got {after!r}")
        return [Hit(i, 0, s, lab, m) for i, s, lab, m in self.store.page(int(after), int(limit))]

    def add_split(self, split: str = "database", run: Run | None = None, *, vectors: bool = True) -> np.ndarray:
        """Add a protocol split of the run the collection was made from: encoded, so that each item's output (and
        its backbone features, where the collection stores them) is stored for re-ranking (``vectors``), or by
        the run's saved codes alone (faster; re-ranked by their bits)."""
        from ..run import Run

        if run is None:  # the run it was made from (its saved codes), else the model copy (encodes the split)
            source = Path(self.meta.get("run") or "")
            run = Run.load(source) if (source / "checkpoint.pt").is_file() else Run.load(self.path / "model")
        data = run.data
        s = data.split(split)
        protocol = run.config.data.protocol
        if protocol is None:
            raise CollectionError("add_split takes a protocol split; add your own images with add(FOLDER)")
        sources = [f"{protocol}:{split}:{int(i)}" for i in s.ids]
        labels = label_names(s.labels, data.class_names, len(s))
        if vectors and self.feature_dim:
            h, f = self._split(run.encode(s.images, features=True))
            return self.add_codes(h, sources, labels, features=f)
        return self.add_codes(run.h(split) if vectors else run.codes(split), sources, labels)

    def remove(self, ids: Any) -> int:
        """Remove items by id; returns how many were removed (stored images of removed items are deleted)."""
        ids = [i for i in (int(v) for v in np.asarray(ids, dtype=object).reshape(-1)) if -(2**63) <= i < 2**63]
        if not ids:
            return 0
        with self._lock, self.files.changing():  # the rows go first, their files after
            gone = self.store.remove(ids)
            self.index.remove(np.array(ids, np.int64))
            self._filters.removed(np.array(ids, np.int64))
            with self._files_lock:
                for s in set(gone):  # a file another item still names stays
                    if not self.store.has_source(s):
                        self.files.forget(s)
        return len(gone)

    def snapshot(self, out: str | os.PathLike) -> dict[str, Any]:
        """A consistent, checksummed snapshot in the new folder ``out`` (``snapshot.py``), taken while writes go
        on; returns its manifest (items, every file's SHA-256, the snapshot's own checksum)."""
        with self._files_lock:
            return snapshot.take(self.path, Path(out))

    @staticmethod
    def restore(snapshot_dir: str | os.PathLike, path: str | os.PathLike) -> Collection:
        """Check a snapshot against its checksums and restore it as the collection folder ``path``; opens it."""
        snapshot.restore(Path(snapshot_dir), Path(path))
        return Collection.open(path)

    def codes_of(self, ids: Any) -> PackedCodes:
        """The packed codes of items already in the collection."""
        return self.store.codes_of([int(i) for i in np.asarray(ids).reshape(-1)], self.bits // 8)

    def get(self, ids: Any) -> list[Hit | None]:
        """Each id's item (distance 0), or None where the collection has no such id."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        rows = self.store.rows(ids)
        return [Hit(i, 0, *rows[i]) if i in rows else None for i in ids]

    def image(self, item_id: int) -> np.ndarray:
        """An item's image as uint8 (H, W) or (H, W, 3), read from its source."""
        hit = self.get([item_id])[0]
        if hit is None:
            raise CollectionError(f"no item {item_id}")
        return self.files.image(hit.source)

    def thumbnail(self, item_id: int) -> bytes:
        """A PNG or JPEG of at most ``THUMB_SIDE`` pixels a side, read only from inside the collection (or a
        protocol's pool): an image stored inside, the thumbnail written when a file was added, a protocol image."""
        hit = self.get([item_id])[0]
        if hit is None:
            raise CollectionError(f"no item {item_id}")
        return self.files.thumbnail(hit.source, item_id)

    def random_item(self) -> Hit | None:
        """A random item (None when the collection is empty)."""
        item_id = self.store.random_id()
        return None if item_id is None else self.get([item_id])[0]

    # ------------------------------------------------------------------ search
    def search(
        self, queries: Any = None, k: int = 10, radius: int | None = None, *, codes: Any = None, where: Any = None,
        rerank: str = RERANK, oversample: int = OVERSAMPLE, expand: int = EXPAND,
    ) -> list[list[Hit]]:  # fmt: skip
        """The nearest items of each query (images as ``add`` takes them, or ``codes``): at most ``k`` per query,
        ranked by Hamming distance (ties by id), with ``radius`` only those within it, and with ``where`` (a
        filter, ``metadata.py``: ``{"label": "Shirt"}``, ``{"meta.shop": {"in": ["a", "b"]}}``) only the items
        it allows: exactly the hits of ranking those items alone. Where the query has a continuous output (an
        image's; real-valued ``codes``), the items rank instead by its inner product with their bits (the
        asymmetric score, exact; ties by Hamming distance, then id), and ``rerank`` says what is kept
        (docs/search.md): ``stored`` (the default) rescores the top ``oversample x k`` by the output's cosine with
        each item's stored output (its bits where none was stored), then by the query expanded with its ``expand``
        best candidates' outputs (0: not); ``asymmetric`` keeps that ranking; ``features`` (a search by image in
        a collection that stores them) rescores by the cosine of the backbone features; ``none`` ranks by Hamming
        distance."""
        _check_k_radius(k, radius)
        if (queries is None) == (codes is None):
            raise CollectionError("search takes query images or codes")
        if codes is not None:
            return self.search_codes(codes, k, radius, where=where, rerank=rerank, oversample=oversample, expand=expand)
        return self.search_image(queries, k, radius, where=where, rerank=rerank, oversample=oversample, expand=expand)

    def search_image(
        self, images: Any, k: int = 10, radius: int | None = None, *, where: Any = None, rerank: str = RERANK,
        oversample: int = OVERSAMPLE, expand: int = EXPAND,
    ) -> list[list[Hit]]:  # fmt: skip
        """``search`` by images (anything ``add`` takes: files, a folder, arrays)."""
        _check_k_radius(k, radius)  # before the encoding
        _check_rerank(rerank, oversample, expand)
        where = Where.parse(where)
        rows = self.query_rows(images)
        return self.search_rows(rows, k, radius, where=where, rerank=rerank, oversample=oversample, expand=expand)

    def search_rows(self, rows: np.ndarray, k: int = 10, radius: int | None = None, **search: Any) -> list[list[Hit]]:
        """``search_codes`` by rows [h | f] as ``encode_arrays`` gives them (the service's searches by image)."""
        h, f = self._split(np.asarray(rows, np.float32))
        return self.search_codes(h, k, radius, features=f, **search)

    def prepare_image(self, image: np.ndarray) -> np.ndarray:
        """One decoded image (uint8 (H, W[, C])) as the encoder reads it (at the run's load size)."""
        return at_size(image, self.encoder.load_size)

    def outputs(self, images: Any) -> np.ndarray:
        """The continuous outputs h (n, bits) of images (anything ``add`` takes): what re-ranking scores with."""
        return self.query_rows(images)[:, : self.bits]

    def query_rows(self, images: Any) -> np.ndarray:
        """Rows [h | f] of images (anything ``add`` takes), as ``encode_arrays`` gives them."""
        batch, sources, _ = gather(images, self.encoder.load_size, self.max_pixels)
        return self._encode(batch, sources, thumbs=False)

    def encode_arrays(self, images: Any) -> np.ndarray:
        """Rows [h | f] of a batch of prepared images of one size (the service's micro-batches): the continuous
        codes h, then the backbone features f where the collection stores them (``search_rows`` takes them)."""
        return self.encoder.encode(images, features=bool(self.feature_dim))

    def search_codes(
        self, codes: Any, k: int = 10, radius: int | None = None, *, where: Any = None, strategy: str = "auto",
        rerank: str = RERANK, oversample: int = OVERSAMPLE, expand: int = EXPAND, features: Any = None,
    ) -> list[list[Hit]]:  # fmt: skip
        """``search`` by codes: ``PackedCodes`` (n, bits/8), or ±1 signs, bool bits or real values (n, bits):
        real values are continuous outputs, which ``rerank`` uses (binary queries rank by Hamming alone, which
        their asymmetric score would repeat); ``features`` (n, ``feature_dim``), the queries' backbone features,
        are what ``rerank="features"`` scores with. ``strategy`` of a filtered search: ``auto``, ``mask`` or
        ``scan`` (``filtered.py``; the same hits)."""
        _check_k_radius(k, radius)
        _check_rerank(rerank, oversample, expand)
        q = self._as_codes(codes)
        if rerank == "features":
            self._check_stores_features()
            f = self._check_features(features, len(q))
            if f is None:
                raise CollectionError("rerank features needs the queries' backbone features: search by image or by item")
            return self._search(q, _continuous(codes), k, radius, where, strategy, rerank, oversample, expand, f)
        h = _continuous(codes) if rerank != "none" else None
        return self._search(q, h, k, radius, where, strategy, rerank, oversample, expand)

    def search_items(
        self, ids: Any, k: int = 10, radius: int | None = None, *, where: Any = None, rerank: str = RERANK,
        oversample: int = OVERSAMPLE, expand: int = EXPAND,
    ) -> list[list[Hit]]:  # fmt: skip
        """``search`` by items already in the collection ("more like this"): by each item's code, re-ranked
        with its stored output (by its bits over sqrt(bits) where it has none), as a search by its image is;
        ``rerank="features"`` with its stored backbone features (each item must have them)."""
        _check_k_radius(k, radius)
        _check_rerank(rerank, oversample, expand)
        try:
            ids = [int(i) for i in np.asarray(ids, dtype=object).reshape(-1)]
        except (TypeError, ValueError):
            raise CollectionError(f"ids must be integers, got {ids!r}"[:200]) from None
        absent = [i for i, hit in zip(ids, self.get(ids)) if hit is None]
        if absent:
            raise CollectionError(f"no item {absent[0]}")
        q = self.codes_of(ids)
        h = f = None
        if rerank == "features":
            self._check_stores_features()
            with self._lock:
                f, has = self.feature_vectors.lookup(np.array(ids, np.int64))
            if not has.all():
                raise CollectionError(f"item {ids[int(np.argmin(has))]} has no stored features (added by its codes)")
        if rerank != "none":
            with self._lock:
                h, has = self.vectors.lookup(np.array(ids, np.int64))
            h[~has] = _unit_signs(q.array[~has])
        return self._search(q, h, k, radius, where, "auto", rerank, oversample, expand, f)

    def _search(
        self, q: PackedCodes, h: np.ndarray | None, k: int, radius: int | None, where: Any, strategy: str, rerank: str,
        oversample: int, expand: int, features: np.ndarray | None = None,
    ) -> list[list[Hit]]:  # fmt: skip
        """The searches of packed queries ``q``: ranked by the asymmetric score of their continuous outputs ``h``
        (None: by Hamming distance), the top ``oversample x k`` then rescored by ``rerank`` (``features``: with the
        queries' backbone ``features``)."""
        if strategy not in STRATEGIES:
            raise CollectionError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        where = Where.parse(where)
        by = None if h is None or rerank == "none" else ByScore(h, self.bits, self._code_bytes)
        rescore = by is not None or (rerank == "features" and features is not None)
        depth = k * int(oversample) if rescore and rerank != "asymmetric" else k
        with self._lock:
            if where is not None:
                per_query = search_filtered(q, depth, radius, where, self._filters, self.store, self.index, strategy, by)
            else:
                per_query = ranked(self.index, q, depth, radius, by)
            scored = (
                self._rescored(h, features, per_query, k, rerank, expand)
                if rescore
                else [[(i, d, None) for i, d in hits] for hits in per_query]
            )
        rows = self.store.rows(sorted({i for hits in scored for i, _, _ in hits}))
        return [[Hit(i, d, *rows[i], s) for i, d, s in hits if i in rows] for hits in scored]

    def _rescored(
        self, h: np.ndarray, features: np.ndarray | None, per_query: list, k: int, rerank: str, expand: int
    ) -> list[list[tuple[int, int, float | None]]]:
        """Each query's candidates, in the order of their asymmetric score, rescored (``asymmetric``: that score,
        ``<h_q, b>``; ``stored``: the cosine of ``h_q`` and the stored unit output, or ``b / sqrt(bits)`` where none
        was stored, then of the query expanded with its ``expand`` best candidates; ``features``: the cosine of the
        backbone ``features``, after them the items without, unscored): the ``k`` best, ties in the given order."""
        width = max((len(hits) for hits in per_query), default=0)
        ids = np.full((len(per_query), max(width, 1)), -1, np.int64)
        for r, hits in enumerate(per_query):
            ids[r, : len(hits)] = [i for i, _ in hits]
        if rerank == "asymmetric":
            scores = asymmetric_scores(h, self._code_bytes(ids))
        elif rerank == "features":
            vectors, has = self.feature_vectors.lookup(ids)
            scores = np.where(has, cosine_scores(features, vectors), -np.inf)  # (items added by their codes: last)
        else:
            vectors, has = self.vectors.lookup(ids)
            bare = (ids >= 0) & ~has
            if bare.any():  # items added by their bits: scored by their bits
                vectors[bare] = _unit_signs(self._code_bytes(ids)[bare])
            scores = expanded_scores(h, vectors, ids >= 0, expand)
        order = ranking(ids, scores, k)
        return [
            [(int(hits[j][0]), int(hits[j][1]), _score(scores[r, j])) for j in order[r] if j < len(hits)]
            for r, hits in enumerate(per_query)
        ]

    def _code_bytes(self, ids: np.ndarray) -> np.ndarray:
        """The packed codes of candidate ids (any shape; -1: zero bytes): from memory, or the item table."""
        if isinstance(self.index, HammingIndex):
            return self.index.code_bytes(ids)
        cand = np.zeros((*ids.shape, self.bits // 8), np.uint8)
        cand[ids >= 0] = self.store.codes_of(ids[ids >= 0].tolist(), self.bits // 8).array
        return cand

    # ------------------------------------------------------------------ inputs
    def _as_codes(self, codes: Any) -> PackedCodes:
        try:
            return pack(codes, self.bits, what="codes", holder="the collection")
        except CodesError as e:
            raise CollectionError(str(e)) from None


def _metadata_list(metadata: Any, n: int) -> list[str | None]:
    """``add``'s metadata (None, one object for all, or one per item) as checked JSON texts, one per item."""
    if metadata is None or isinstance(metadata, dict):
        return [check_metadata(metadata)] * n
    if not isinstance(metadata, list | tuple) or len(metadata) != n:
        got = f"{len(metadata)} objects" if isinstance(metadata, list | tuple) else type(metadata).__name__
        raise CollectionError(f"metadata: one JSON object for all {n} items, or a list of {n}; got {got}")
    return [check_metadata(m, f"metadata[{i}]") for i, m in enumerate(metadata)]


def _score(value: float) -> float | None:
    """A hit's re-ranking score; None for an item the score could not be computed for (no stored features)."""
    return float(value) if np.isfinite(value) else None


def _unit_signs(packed: np.ndarray) -> np.ndarray:
    """Packed codes (n, bits/8) as their signs b / sqrt(bits) (n, bits): unit vectors, what ``stored`` scores an
    item (or a query) without a stored output by."""
    signs = np.unpackbits(packed, axis=-1).astype(np.float32) * 2 - 1
    return signs / np.sqrt(signs.shape[-1])


def _check_rerank(rerank: Any, oversample: Any, expand: Any) -> None:
    if rerank not in RERANKS:
        raise CollectionError(f"rerank must be one of {', '.join(RERANKS)}, got {rerank!r}")
    if not isinstance(oversample, int | np.integer) or isinstance(oversample, bool) or not 1 <= oversample <= 100:
        raise CollectionError(f"oversample must be an integer in 1..100, got {oversample!r}")
    check_expand(expand, CollectionError)


def _continuous(codes: Any) -> np.ndarray | None:
    """Queries given as continuous outputs (a real-valued (n, bits) array): what re-ranking scores with."""
    if isinstance(codes, PackedCodes):
        return None
    try:
        a = np.asarray(to_numpy(codes))
    except (TypeError, ValueError):
        return None
    if a.dtype.kind != "f":
        return None
    return np.atleast_2d(a).astype(np.float32)


def _check_k_radius(k: Any, radius: Any) -> None:
    if not isinstance(k, int | np.integer) or k <= 0:
        raise CollectionError(f"k must be a positive integer, got {k!r}")
    if radius is not None and (not isinstance(radius, int | np.integer) or radius < 0):
        raise CollectionError(f"radius must be a non-negative integer, got {radius!r}")
