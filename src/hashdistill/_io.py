"""Small file helpers: atomic writes, so nothing is ever left half written; a folder a failed command made is
removed; and the one loader of torch files, which never runs code."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .errors import ModelError

TEMPORARY = ".*.tmp"  # the glob of atomic_path's temporaries: a file still being written, not yet in place


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename. On failure nothing
    is left: neither the temporary file nor the folders made for it."""
    path = Path(path)
    with removed_on_failure(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # TEMPORARY
        os.close(fd)
        tmp_path = Path(tmp)
        os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; results are meant to be shared
        try:
            yield tmp_path
            os.replace(tmp_path, path)
        finally:
            tmp_path.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> Path:
    """Call ``write(fileobj)`` on a temporary file, fsync it and rename it to ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    data = (json.dumps(obj, indent=2, default=_json_default) + "\n").encode()
    return atomic_write(path, lambda f: f.write(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class TensorFileError(ModelError):
    """A torch file that is missing, empty, damaged, or holds more than tensors and plain values."""


def load_tensors(path: str | os.PathLike, device: str = "cpu") -> Any:
    """A torch file of tensors and plain values only (``weights_only=True``): a file holding any other Python
    object is refused with one line, and nothing in it runs."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise TensorFileError(f"{path}: no such weights file")
    if path.stat().st_size == 0:
        raise TensorFileError(f"{path}: empty file (0 bytes)")
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04" and head[:1] != b"\x80":  # neither torch's zip format nor a legacy pickle
        raise TensorFileError(f"{path}: not a PyTorch weights file (neither torch's zip format nor a legacy torch file)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols: the error below says what matters
            return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower():
            raise TensorFileError(
                f"{path}: refused: it holds Python objects, not only tensors (loading them could run code)"
            ) from None
        raise TensorFileError(f"{path}: not a PyTorch weights file (or a damaged one)") from None
    except Exception:  # torch raises RuntimeError, KeyError, EOFError, ... for files it cannot parse
        raise TensorFileError(f"{path}: not a PyTorch weights file (or a truncated one)") from None


@contextmanager
def removed_on_failure(folder: str | os.PathLike, keep: Callable[[Path], bool] = lambda p: False) -> Iterator[Path]:
    """Run the body; if it fails (or is interrupted), remove ``folder`` and the parents it made if ``folder`` did
    not exist before, unless ``keep(folder)`` (e.g. a run that already saved a checkpoint it can resume from)."""
    folder = Path(folder)
    new = None if folder.exists() else folder
    while new is not None and new.parent != new and not new.parent.exists():
        new = new.parent
    try:
        yield folder
    except BaseException:
        if new is not None and new.is_dir() and not keep(folder):
            shutil.rmtree(new, ignore_errors=True)
        raise
