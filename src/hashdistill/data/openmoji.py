"""OpenMoji 17.0.0 colour emoji: the source of the ``openmoji`` protocol (docs/protocols.md).

Where it looks, in order: the ``root`` argument (the npm tarball ``openmoji-17.0.0.tgz`` or the folder it
unpacks to, holding ``data/openmoji.json`` and ``color/svg/``) -> ``$HASHDISTILL_OPENMOJI`` ->
``<data_home>/openmoji/openmoji-17.0.0.tgz`` -> ``npm pack openmoji@17.0.0`` into that folder (the npm
registry; a tarball is checked against npm's published sha512). The tarball is read in place, never
unpacked; only ``openmoji.json`` and the colour SVGs it names are read, and the SVGs are rendered by
``resvg-py`` (a wheel, no system library) onto white at a fixed size, with no system fonts (the SVGs draw
no text), so the pixels are the same on every machine with the same resvg.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .sources import DataNotFoundError, data_home

VERSION = "17.0.0"
PACKAGE = f"openmoji@{VERSION}"
TARBALL = f"openmoji-{VERSION}.tgz"
# npm's `integrity` of openmoji@17.0.0 and the sha256 of its data/openmoji.json (the protocol's definition)
TARBALL_SHA512 = "EBnYrNGdcdw+OSXmENeNE1yBNRu6tOraTmoOyUbJkTmvT/+XETp8RZLSJFzD3lrPc5N9CzsyPnRTk0Vp4UaI9w=="
METADATA_SHA256 = "ab181dd523021dfbe2b98a13d96ab384b7b3014d17815261bc267fb39d9a211b"
METADATA = "data/openmoji.json"
SVG_DIR = "color/svg"
MAX_SVG_BYTES = 2 << 20
HEXCODE = re.compile(r"^[0-9A-F]{2,6}(-[0-9A-F]{2,6})*$")


@dataclass(frozen=True)
class Emoji:
    hexcode: str
    subgroup: str
    group: str
    base: str  # the skin-tone base's hexcode; its own for an emoji without tones
    annotation: str


class OpenMojiPackage:
    """The files of the npm package, read from its tarball (in place) or from the folder it unpacks to."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._files: dict[str, bytes] | None = None  # a tarball's files, read in one pass
        if self.path.is_file():
            _check_tarball(self.path)
            self._files = _read_tarball(self.path)
        elif not (self.path / METADATA).is_file():
            raise DataNotFoundError(f"{self.path}: no {METADATA} (give the {TARBALL} tarball or the folder it unpacks to)")

    def read(self, name: str, limit: int = 64 << 20) -> bytes:
        if self._files is not None:
            if name not in self._files:
                raise DataError(f"{self.path}: {name} is missing")
            return self._files[name]
        target = self.path / name
        if not target.is_file():
            raise DataError(f"{self.path}: {name} is missing")
        if target.stat().st_size > limit:
            raise DataError(f"{target}: larger than {limit} bytes")
        return target.read_bytes()

    def emoji(self) -> list[Emoji]:
        """Every entry of ``openmoji.json`` (checked against the 17.0.0 file), in its order."""
        raw = self.read(METADATA)
        if hashlib.sha256(raw).hexdigest() != METADATA_SHA256:
            raise DataError(f"{self.path}: {METADATA} is not OpenMoji {VERSION}'s (its sha256 differs)")
        out = []
        for e in json.loads(raw):
            base = e.get("skintone_base_hexcode") or e["hexcode"]
            if not (HEXCODE.match(e["hexcode"]) and HEXCODE.match(base)):
                raise DataError(f"{self.path}: unexpected hexcode {e['hexcode']!r} in {METADATA}")
            out.append(Emoji(e["hexcode"], e["subgroups"], e["group"], base, e["annotation"]))
        return out

    def render(self, hexcodes: list[str], size: int = 64) -> np.ndarray:
        """The colour SVGs of ``hexcodes`` rendered onto white: uint8 (N, size, size, 3)."""
        try:
            import resvg_py
        except ImportError:
            raise DataNotFoundError("rendering OpenMoji needs resvg-py: pip install 'resvg-py==0.5.0'") from None
        from PIL import Image

        out = np.empty((len(hexcodes), size, size, 3), np.uint8)
        for i, h in enumerate(hexcodes):
            svg = self.read(f"{SVG_DIR}/{h}.svg", MAX_SVG_BYTES).decode("utf-8")
            try:
                png = resvg_py.svg_to_bytes(
                    svg_string=svg, background="#ffffff", width=size, height=size, skip_system_fonts=True
                )
            except ValueError as e:
                raise DataError(f"{self.path}: {SVG_DIR}/{h}.svg does not render ({e})") from None
            out[i] = np.asarray(Image.open(io.BytesIO(bytes(png))).convert("RGB"))
        return out


def _read_tarball(path: Path) -> dict[str, bytes]:
    """The metadata and the colour SVGs of the tarball, streamed once (a gzip stream cannot seek back cheaply)."""
    files = {}
    try:
        with tarfile.open(path, "r|gz") as tar:
            for m in tar:
                name = m.name.removeprefix("package/")
                if m.isfile() and (name == METADATA or (name.startswith(SVG_DIR + "/") and name.endswith(".svg"))):
                    if m.size > (64 << 20 if name == METADATA else MAX_SVG_BYTES):
                        raise DataError(f"{path}: {name} is larger than expected ({m.size} bytes)")
                    f = tar.extractfile(m)
                    files[name] = f.read() if f is not None else b""
    except (OSError, tarfile.TarError, EOFError) as e:
        raise DataError(f"{path}: unreadable OpenMoji tarball ({e})") from None
    return files


def _check_tarball(path: Path) -> None:
    digest = hashlib.sha512()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if base64.b64encode(digest.digest()).decode() != TARBALL_SHA512:
        raise DataError(f"{path}: not the npm tarball of {PACKAGE} (its sha512 differs)")


def find_openmoji(root: str | os.PathLike | None = None, fetch: bool = True) -> OpenMojiPackage:
    """The OpenMoji package: ``root``, ``$HASHDISTILL_OPENMOJI``, the data home's tarball, else ``npm pack``."""
    if root is not None:
        if not Path(root).exists():
            raise DataNotFoundError(f"{root}: no such file or folder (give the {TARBALL} tarball or its folder)")
        return OpenMojiPackage(root)
    env = os.environ.get("HASHDISTILL_OPENMOJI")
    if env:
        return OpenMojiPackage(env)
    home = data_home() / "openmoji"
    if (home / TARBALL).is_file():
        return OpenMojiPackage(home / TARBALL)
    if fetch and _npm_pack(home):
        return OpenMojiPackage(home / TARBALL)
    raise DataNotFoundError(
        f"OpenMoji not found: run `npm pack {PACKAGE}` and pass the tarball with --root (or set "
        f"HASHDISTILL_OPENMOJI to it), or put it at {home / TARBALL}"
    )


def _npm_pack(folder: Path, timeout: float = 300.0) -> bool:
    """``npm pack openmoji@17.0.0`` into ``folder`` (atomically); False when npm or the registry is missing."""
    npm = shutil.which("npm")
    if npm is None:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".pack"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        done = subprocess.run(
            [npm, "pack", PACKAGE, "--pack-destination", str(tmp), "--silent"],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        got = tmp / TARBALL
        if done.returncode != 0 or not got.is_file():
            return False
        _check_tarball(got)
        os.replace(got, folder / TARBALL)
        return True
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
