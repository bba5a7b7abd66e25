"""User image collections: DHD / DeepHash-pytorch list files, class-per-folder trees, unlabelled folders.

A list file has one image per line: a path relative to an image root, then one 0/1 column per
class (``train/n01440764/x.JPEG 0 1 0 ...``). Errors name the file and line.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class ListFileError(ValueError):
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

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int, mode: str = "RGB") -> np.ndarray:
        """Image ``i`` as a uint8 array (H, W, 3) for RGB, (H, W) for L."""
        return load_image(self.paths[i], mode, self.origins[i] if self.origins else str(self.paths[i]))

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

    def at_size(self, size: int | None, workers: int | None = None) -> ImageList:
        """The same images, resized to ``size`` x ``size`` when read (``None``: each at its own size)."""
        return replace(self, size=size, workers=max(1, workers or self.workers))

    def _read(self, i: int) -> np.ndarray:
        return at_size(self.load(int(i)), self.size)

    def __getitem__(self, idx: Any) -> np.ndarray:
        """A uint8 batch (B, H, W, 3) of the images at ``idx`` (without a size, they must share one)."""
        idx = np.atleast_1d(np.asarray(idx))
        with ThreadPoolExecutor(self.workers) as pool:
            images = list(pool.map(self._read, idx))
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise ValueError(f"images of different sizes ({', '.join(map(str, sorted(shapes)))}): read them with batches()")
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


def at_size(image: np.ndarray, size: int | None) -> np.ndarray:
    """An image resized to ``size`` x ``size`` (bilinear), as files are read for a run; ``None``: unchanged."""
    if size is None or image.shape[:2] == (size, size):
        return image
    flat = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
    return np.asarray(Image.fromarray(flat).resize((size, size), Image.BILINEAR))


def load_image(path: str | os.PathLike, mode: str = "RGB", origin: str | None = None) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode))
    except FileNotFoundError:
        raise ListFileError(f"{origin or path}: image not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ListFileError(f"{origin or path}: unreadable image {path} ({e})") from None


def read_list_file(
    list_file: str | os.PathLike,
    root: str | os.PathLike | None = None,
    *,
    check: str = "exists",
    class_names: list[str] | None = None,
) -> ImageList:
    """Read a DHD-format list file; ``root`` defaults to the list file's folder.

    ``check``: ``"none"``, ``"exists"`` (every image file exists) or ``"open"`` (every image opens).
    """
    if check not in ("none", "exists", "open"):
        raise ValueError(f"check must be none, exists or open, got {check!r}")
    list_file = Path(list_file)
    root = Path(root) if root is not None else list_file.parent
    try:
        lines = list_file.read_text().splitlines()
    except FileNotFoundError:
        raise ListFileError(f"{list_file}: list file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ListFileError(f"{list_file}: unreadable list file ({e})") from None

    paths, rows, origins = [], [], []
    n_classes = None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        origin = f"{list_file}:{lineno}"
        name, *cols = line.split()
        if n_classes is None:
            n_classes = len(cols)
            if n_classes == 0:
                raise ListFileError(f"{origin}: no label columns after the image path")
        if len(cols) != n_classes:
            raise ListFileError(f"{origin}: expected {n_classes} label columns, found {len(cols)}")
        if any(c not in ("0", "1") for c in cols):
            raise ListFileError(f"{origin}: label columns must be 0 or 1, got {' '.join(cols)}")
        path = root / name
        if check != "none" and not path.is_file():
            raise ListFileError(f"{origin}: image not found: {path}")
        if check == "open":
            _verify(path, origin)
        paths.append(path)
        rows.append([c == "1" for c in cols])
        origins.append(origin)
    if not paths:
        raise ListFileError(f"{list_file}: empty list file (no images)")
    if class_names is not None and len(class_names) != n_classes:
        raise ListFileError(f"{list_file}: {n_classes} label columns but {len(class_names)} class names")
    names = class_names or [str(i) for i in range(n_classes or 0)]
    return ImageList(paths, np.array(rows, dtype=np.uint8), names, origins)


def _verify(path: Path, origin: str) -> None:
    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ListFileError(f"{origin}: unreadable image {path} ({e})") from None


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
    path: str | os.PathLike, root: str | os.PathLike | None = None, class_names: list[str] | None = None
) -> ImageList:
    """Images named by ``path``: one image file, a list file (``root``: its image root), a class-per-folder
    tree (labelled with ``class_names`` when given), or an unlabelled folder (``folder_layout``)."""
    layout = folder_layout(path)
    if layout == "image":
        return ImageList([Path(path).resolve()], None, [], [str(path)])
    if layout == "list":
        return read_list_file(path, root, class_names=class_names)
    if layout == "classes":
        return read_image_folder(path, class_names)
    return read_unlabelled_folder(path)


def read_unlabelled_folder(root: str | os.PathLike) -> ImageList:
    """Every image below ``root``, in sorted path order, without labels."""
    root = Path(root)
    if not root.is_dir():
        raise ListFileError(f"{root}: not a folder")
    paths = _images_under(root)
    if not paths:
        raise ListFileError(f"{root}: no images found")
    return ImageList(paths, None, [], [str(p) for p in paths])
