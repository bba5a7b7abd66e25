"""User image collections: DHD / DeepHash-pytorch list files, class-per-folder trees, unlabelled folders.

A list file has one image per line: a path relative to an image root, then one 0/1 column per
class (``train/n01440764/x.JPEG 0 1 0 ...``), or no columns (unlabelled). Lines are read from the
right, so paths may contain spaces. A path that is absolute or leaves the root (``..``) is refused
unless ``allow_outside_root``. Errors name the file and line.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, at_size, decode_image


class ListFileError(DataError):
    """A problem in a list file or an image it names; the message starts with ``file:line:``."""


@dataclass
class ImageList:
    """Image paths with optional labels (multi-hot (N, C) or class vector (N,)), read on demand.

    Indexed like an array of images (``images[idx]`` -> uint8 (B, size, size, 3)): each image is loaded as
    RGB and resized to ``size`` x ``size`` (``at_size``), with ``workers`` threads. ``load(i)`` gives one
    image as stored.
    """

    paths: list[Path]
    labels: np.ndarray | None = None
    class_names: list[str] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)  # "file:line" (or the path) per image, for errors
    size: int | None = None  # the side images are resized to when indexed
    workers: int = 4
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images are refused from their header (data/images.py)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int, mode: str = "RGB") -> np.ndarray:
        """Image ``i`` as a uint8 array (H, W, 3) for RGB, (H, W) for L."""
        return decode_image(self.paths[i], self.origins[i] if self.origins else None, self.max_pixels, mode)

    def fingerprint(self) -> str:
        """A short hash of the files (path, size, modification time): a changed or replaced image changes it."""
        h = hashlib.sha1()
        for path in self.paths:
            try:
                st = path.stat()
                h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{path}\0missing\n".encode())
        return h.hexdigest()[:12]

    def at_size(self, size: int | None, workers: int | None = None, max_pixels: int | None = None) -> ImageList:
        """The same images, resized to ``size`` x ``size`` when read (``None``: each at its own size)."""
        return replace(self, size=size, workers=max(1, workers or self.workers), max_pixels=max_pixels or self.max_pixels)

    def _read(self, i: int) -> np.ndarray:
        return at_size(self.load(int(i)), self.size)

    def __getitem__(self, idx: Any) -> np.ndarray:
        """A uint8 batch (B, H, W, 3) of the images at ``idx`` (without a size, they must share one)."""
        idx = np.atleast_1d(np.asarray(idx))
        with ThreadPoolExecutor(self.workers) as pool:
            images = list(pool.map(self._read, idx))
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise DataError(f"images of different sizes ({', '.join(map(str, sorted(shapes)))}): read them with batches()")
        return np.stack(images)

    def batches(self, batch: int = 256) -> Iterator[np.ndarray]:
        """uint8 arrays (B, H, W, 3) of at most ``batch`` consecutive images, in order; without a size a batch
        also ends where the image size changes."""
        with ThreadPoolExecutor(self.workers) as pool:
            for a in range(0, len(self), batch):
                images = list(pool.map(self._read, range(a, min(a + batch, len(self)))))
                start = 0
                for i in range(1, len(images) + 1):
                    if i == len(images) or images[i].shape != images[start].shape:
                        yield np.stack(images[start:i])
                        start = i


def read_list_file(
    list_file: str | os.PathLike,
    root: str | os.PathLike | None = None,
    *,
    check: str = "exists",
    class_names: list[str] | None = None,
    allow_outside_root: bool = False,
) -> ImageList:
    """Read a DHD-format list file (labelled or not); ``root`` defaults to the list file's folder.

    ``check``: ``"none"``, ``"exists"`` (every image file exists) or ``"open"`` (every image decodes).
    """
    if check not in ("none", "exists", "open"):
        raise DataError(f"check must be none, exists or open, got {check!r}")
    list_file = Path(list_file)
    root = Path(root) if root is not None else list_file.parent
    try:
        lines = list_file.read_bytes().decode("utf-8").splitlines()
    except FileNotFoundError:
        raise ListFileError(f"{list_file}: list file not found") from None
    except UnicodeDecodeError as e:
        raise ListFileError(f"{list_file}: not UTF-8 text (byte {e.start}); is it an image or a binary file?") from None
    except OSError as e:
        raise ListFileError(f"{list_file}: unreadable list file ({e.strerror or e})") from None
    entries, labels = parse_list(lines, str(list_file), None if class_names is None else len(class_names))
    paths, origins = [], []
    for lineno, name in entries:
        origin = f"{list_file}:{lineno}"
        path = _under_root(root, name, origin, allow_outside_root)
        if check != "none" and not path.is_file():
            _refuse_non_binary_labels(origin, name)
            hint = " (a line with more label columns than the others?)" if name.endswith((" 0", " 1")) else ""
            raise ListFileError(f"{origin}: image not found: {path}{hint}")
        if check == "open":
            decode_image(path, origin)
        paths.append(path)
        origins.append(origin)
    n_classes = 0 if labels is None else labels.shape[1]
    names = class_names or [str(i) for i in range(n_classes)]
    return ImageList(paths, labels, names if n_classes else [], origins)


def parse_list(lines: list[str], origin: str, n_classes: int | None = None) -> tuple[list[tuple[int, str]], np.ndarray | None]:
    """The (line number, image path) entries and the multi-hot labels (``None`` when unlabelled) of a list
    file's lines. The label columns are the 0/1 tokens that end every line (``n_classes`` of them when
    given, else as many as most lines have); each line is split from the right, so paths keep their spaces."""
    entries = [(i, line.strip()) for i, line in enumerate(lines, 1) if line.strip()]
    if not entries:
        raise ListFileError(f"{origin}: empty list file (no images)")
    if n_classes is None:  # the count most lines end with: a line with fewer is the one named in the error
        counts = Counter(_trailing_bits(text) for _, text in entries)
        n_classes = max(counts, key=lambda c: (counts[c], -c))
    out, rows = [], []
    for lineno, text in entries:
        parts = text.rsplit(None, n_classes) if n_classes else [text]
        cols = parts[1:]
        if len(parts) != n_classes + 1 or _trailing_bits(text) < n_classes:
            tail = text.split()[1:][-n_classes:]
            if len(tail) == n_classes and any(c not in ("0", "1") for c in tail):
                raise ListFileError(f"{origin}:{lineno}: label columns must be 0 or 1, got {' '.join(tail)}")
            found = _trailing_bits(text)
            raise ListFileError(f"{origin}:{lineno}: expected {n_classes} label columns, found {found} (an image path, "
                                f"then one 0/1 column per class)")  # fmt: skip
        out.append((lineno, parts[0]))
        rows.append([c == "1" for c in cols])
    return out, (np.array(rows, dtype=np.uint8) if n_classes else None)


def _refuse_non_binary_labels(origin: str, name: str) -> None:
    """A missing image whose name ends in numbers other than 0/1 (``a.png 0 2``): the label columns are wrong."""
    tokens = name.split()
    tail = []
    while len(tail) < len(tokens) - 1 and tokens[-1 - len(tail)].lstrip("-").isdigit():
        tail.insert(0, tokens[-1 - len(tail)])
    if tail and any(t not in ("0", "1") for t in tail):
        raise ListFileError(f"{origin}: label columns must be 0 or 1 (one column per class), got {' '.join(tail)}")


def _trailing_bits(text: str) -> int:
    """How many whitespace-separated 0/1 tokens end ``text`` (leaving at least one token for the path)."""
    tokens = text.split()
    n = 0
    while n < len(tokens) - 1 and tokens[-1 - n] in ("0", "1"):
        n += 1
    return n


def _under_root(root: Path, name: str, origin: str, allow_outside_root: bool) -> Path:
    """``root / name``, refusing a name that is absolute or climbs out of ``root`` unless allowed."""
    if not allow_outside_root and (Path(name).is_absolute() or os.path.normpath(name).split(os.sep)[0] == ".."):
        raise ListFileError(f"{origin}: {name} lies outside the image root {root} (absolute or '..'); "
                            "allow it with --allow-outside-root (data.allow_outside_root)")  # fmt: skip
    return root / name


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def read_image_folder(root: str | os.PathLike, class_names: list[str] | None = None) -> ImageList:
    """A class-per-folder tree (``root/<class>/**/*.jpg``), classes in sorted order, as torchvision's ImageFolder.

    ``class_names`` fixes the classes and their order (a query or database tree labelled like the training
    tree); a folder not among them is an error.
    """
    root = Path(root)
    if not root.is_dir():
        raise ListFileError(f"{root}: not a folder")
    found_classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    classes = list(class_names) if class_names is not None else found_classes
    unknown = sorted(set(found_classes) - set(classes))
    if unknown:
        raise ListFileError(
            f"{root}: class folder(s) {', '.join(unknown)} not among the training classes ({', '.join(classes)})"
        )
    paths, labels = [], []
    for i, c in enumerate(classes):
        found = _images_under(root / c) if (root / c).is_dir() else []
        if not found and class_names is None:  # a training tree: a class without images would train a proxy for nothing
            raise ListFileError(f"{root / c}: class folder without images (add images or remove the folder)")
        paths += found
        labels += [i] * len(found)
    if not paths:
        raise ListFileError(f"{root}: no images in class folders (expected {root}/<class>/<image>)")
    return ImageList(paths, np.array(labels, dtype=np.int64), classes, [str(p) for p in paths])


def folder_layout(path: str | os.PathLike) -> str:
    """``image`` (an image file), ``list`` (any other file), ``classes`` (a folder whose images all sit in
    sub-folders, one per class) or ``unlabelled`` (a folder with images at its top level)."""
    path = Path(path)
    if path.is_file():
        return "image" if path.suffix.lower() in IMAGE_EXTENSIONS else "list"
    if path.suffix.lower() in IMAGE_EXTENSIONS and not path.exists():
        raise ListFileError(f"{path}: no such image")
    if not path.is_dir():
        raise ListFileError(f"{path}: no such list file or folder")
    top = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    subfolders = [d for d in path.iterdir() if d.is_dir()]
    return "classes" if subfolders and not top else "unlabelled"


def read_images(
    path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    class_names: list[str] | None = None,
    *,
    allow_outside_root: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ImageList:
    """Images named by ``path``: one image file, a list file (``root``: its image root), a class-per-folder
    tree (labelled with ``class_names`` when given), or an unlabelled folder (``folder_layout``)."""
    layout = folder_layout(path)
    if layout == "image":
        image = Path(path).resolve()
        found = ImageList([image], None, [], [str(image)])
    elif layout == "list":
        found = read_list_file(path, root, class_names=class_names, allow_outside_root=allow_outside_root)
    elif layout == "classes":
        found = read_image_folder(path, class_names)
    else:
        found = read_unlabelled_folder(path)
    return replace(found, max_pixels=max_pixels)


def read_unlabelled_folder(root: str | os.PathLike) -> ImageList:
    """Every image below ``root``, in sorted path order, without labels."""
    root = Path(root)
    if not root.is_dir():
        raise ListFileError(f"{root}: not a folder")
    paths = _images_under(root)
    if not paths:
        raise ListFileError(f"{root}: no images found")
    return ImageList(paths, None, [], [str(p) for p in paths])
