"""The images a collection folder holds: images stored inside it (arrays and uploads, ``images/``, named by
their content hash) and a small thumbnail of each file that lives outside (``thumbs/``), so nothing outside
is read to show it. Only files inside the folder are ever served (``inside``)."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from .. import _io
from ..data.images import decode_image
from ..errors import CollectionError
from .store import STORED

THUMB_SIDE = 160
PENDING = "pending"  # one marker per add or remove in progress (files and rows are not one transaction)


class ImageFiles:
    """The stored images and thumbnails of the collection at ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def store(self, image: np.ndarray) -> str:
        """Write an image into the collection (PNG, named by its content hash) before its row is committed;
        returns its source."""
        buf = io.BytesIO()
        Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image).save(buf, format="PNG")
        data = buf.getvalue()
        name = f"images/{hashlib.sha256(data).hexdigest()[:24]}.png"
        if not (self.root / name).is_file():
            _io.atomic_write(self.root / name, lambda f: f.write(data))
        return STORED + name

    def write_thumb(self, source: str, image: np.ndarray) -> None:
        """The thumbnail of a file outside, from the array the encoder sees."""
        write_thumb(self.root / thumb_name(source), image)

    def image(self, source: str) -> np.ndarray:
        return read_source(source, self.root)

    def thumbnail(self, source: str, item_id: int) -> bytes:
        """A PNG or JPEG of at most ``THUMB_SIDE`` pixels a side, read only from inside the collection (or a
        protocol's pool)."""
        if is_file_source(source):
            thumb = self.root / thumb_name(source)
            if not thumb.is_file():
                raise CollectionError(f"item {item_id} has no thumbnail (its image lives outside the collection)")
            return thumb.read_bytes()
        image = Image.fromarray(read_source(source, self.root))
        image.thumbnail((THUMB_SIDE, THUMB_SIDE))
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()

    def forget(self, source: str) -> None:
        """Delete what the collection holds for a source no item names any more."""
        if source.startswith(STORED):
            inside(self.root, source.removeprefix(STORED)).unlink(missing_ok=True)
        elif is_file_source(source):
            (self.root / thumb_name(source)).unlink(missing_ok=True)

    @contextmanager
    def changing(self) -> Iterator[None]:
        """Mark an add or a remove in progress. It writes or deletes files and commits rows, which are not one
        transaction: a crash or an error in between leaves the marker, and the next open cleans up."""
        marker = self.root / PENDING / f"{os.getpid()}-{uuid.uuid4().hex}"
        marker.parent.mkdir(exist_ok=True)
        marker.touch()
        yield
        marker.unlink()

    def interrupted(self) -> bool:
        """Whether an add or remove was interrupted since the last clean-up (a marker is left)."""
        folder = self.root / PENDING
        return folder.is_dir() and any(folder.iterdir())

    def remove_orphans(self, stored: set[str], outside: set[str]) -> None:
        """Delete the stored images and thumbnails no row names (an add interrupted between the file and the
        commit, a remove between the commit and the files), then the markers; ``stored`` and ``outside``: the
        sources the rows name."""
        markers = list((self.root / PENDING).iterdir())
        named = {s.removeprefix(STORED) for s in stored} | {thumb_name(s) for s in outside if is_file_source(s)}
        for folder in ("images", "thumbs"):
            (self.root / folder).mkdir(exist_ok=True)
            for f in (self.root / folder).iterdir():
                if f"{folder}/{f.name}" not in named:
                    f.unlink(missing_ok=True)
        for m in markers:
            m.unlink(missing_ok=True)


def inside(root: Path, relative: str) -> Path:
    """``root / relative``, refused unless it stays inside ``root`` (a crafted source cannot reach out)."""
    path = (root / relative).resolve()
    if root.resolve() not in path.parents:
        raise CollectionError(f"{relative}: outside the collection")
    return path


def read_source(source: str, root: Path | None = None) -> np.ndarray:
    """The image a source names: a file, an image stored in the collection at ``root``, or a protocol item."""
    if source.startswith(STORED):
        return decode_image(inside(Path(root), source.removeprefix(STORED)))
    parts = source.split(":")
    if len(parts) == 3 and parts[2].isdigit():
        from ..data import PROTOCOLS, load_protocol

        if parts[0] in PROTOCOLS:
            return load_protocol(parts[0]).images[int(parts[2])]
    return decode_image(source)


def is_file_source(source: str) -> bool:
    """A source naming a file outside the collection (not a stored image, not a protocol item)."""
    if source.startswith(STORED):
        return False
    parts = source.split(":")
    return not (len(parts) == 3 and parts[2].isdigit() and not source.startswith("/"))


def thumb_name(source: str) -> str:
    return f"thumbs/{hashlib.sha1(source.encode()).hexdigest()[:24]}.jpg"


def write_thumb(path: Path, image: np.ndarray) -> None:
    thumb = Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image).convert("RGB")
    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
    _io.atomic_write(path, lambda f: thumb.save(f, format="JPEG", quality=85))
