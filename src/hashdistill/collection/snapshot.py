"""Snapshots of a collection and their restore (docs/service.md, "Snapshots").

A snapshot is a folder: the collection's ``collection.json`` and ``model/``, ``items.sqlite`` copied with
SQLite's online backup (one consistent state of the item table, even while another connection writes), the
stored images and thumbnails, and ``snapshot.json``: every file's SHA-256 and, over that list, the
snapshot's own checksum. Keys (``token``, ``read-token``) are never copied. ``restore`` checks every file
against the manifest (none missing, none added, none changed) before it writes anything, and writes the
collection into a temporary folder renamed into place.

Stored images are written before the row that names them and deleted only after it (``Collection.remove``
waits for a snapshot before it deletes files), so every row in the backup finds its image. An image still
being written (``_io.TEMPORARY``, renamed into place a moment later) is not copied.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from .. import _io
from ..errors import CollectionError

FORMAT = 1
MANIFEST = "snapshot.json"
KEYS = ("token", "read-token")
COPIED = ("collection.json", "model", "images", "thumbs")


def take(root: Path, out: Path) -> dict[str, Any]:
    """Snapshot the collection folder ``root`` into the new folder ``out``; returns the manifest. The caller
    keeps stored images from being deleted meanwhile (``Collection.snapshot``)."""
    out = Path(out)
    if out.exists():
        raise CollectionError(f"{out}: already exists (a snapshot goes into a new folder)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.taking-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        src = sqlite3.connect(f"file:{root / 'items.sqlite'}?mode=ro", uri=True, timeout=30)
        dst = sqlite3.connect(tmp / "items.sqlite")
        try:
            src.backup(dst)  # SQLite's online backup: one consistent state
            items = dst.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        finally:
            src.close()
            dst.close()
        for name in COPIED:
            if (root / name).is_dir():
                # an image still being written (a temporary that is renamed or gone a moment later) is not copied
                shutil.copytree(
                    root / name, tmp / name, copy_function=_link_or_copy, ignore=shutil.ignore_patterns(_io.TEMPORARY)
                )
            elif (root / name).is_file():
                shutil.copy2(root / name, tmp / name)
        files = {rel: _sha256(tmp / rel) for rel in _listing(tmp)}
        manifest = {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "items": items,
                    "files": files, "sha256": _digest(files)}  # fmt: skip
        _io.write_json(tmp / MANIFEST, manifest)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def verify(snapshot: Path) -> dict[str, Any]:
    """The manifest of a snapshot whose every file matches it; ``CollectionError`` naming the first that does not."""
    snapshot = Path(snapshot)
    path = snapshot / MANIFEST
    if not snapshot.exists():
        raise CollectionError(f"{snapshot}: no such snapshot folder")
    if not path.is_file():
        raise CollectionError(f"{snapshot}: not a snapshot (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CollectionError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise CollectionError(f"{path}: no file list")
    if manifest.get("format") != FORMAT:
        raise CollectionError(f"{path}: snapshot format {manifest.get('format')}, this hashdistill reads {FORMAT}")
    files = manifest["files"]
    if manifest.get("sha256") != _digest(files):
        raise CollectionError(f"{path}: the file list does not match its checksum (edited or damaged)")
    present = set(_listing(snapshot)) - {MANIFEST}
    for rel in sorted(set(files) - present):
        raise CollectionError(f"{snapshot}: {rel} is missing")
    for rel in sorted(present - set(files)):
        raise CollectionError(f"{snapshot}: {rel} is not in the snapshot's manifest")
    for rel, digest in sorted(files.items()):
        if _sha256(snapshot / rel) != digest:
            raise CollectionError(f"{snapshot}: {rel} does not match its checksum (damaged)")
    return manifest


def restore(snapshot: Path, dest: Path) -> dict[str, Any]:
    """Check ``snapshot`` and restore it as the collection folder ``dest`` (new, or an empty folder)."""
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise CollectionError(f"{dest}: already exists (a collection is restored into a new or empty folder)")
    manifest = verify(snapshot)
    tmp = dest.parent / f".{dest.name}.restoring-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(snapshot, tmp, ignore=shutil.ignore_patterns(MANIFEST))
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name not in KEYS)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _digest(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link (the files are never changed in place: written whole, then renamed), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
