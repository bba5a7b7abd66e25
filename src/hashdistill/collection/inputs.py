"""What a collection accepts as images, turned into one shape: (images to encode, their sources, their labels).
A folder (class-per-folder or unlabelled), a list file (its paths inside its folder unless allowed out), image
files, an ``ImageList``, a uint8 array (N, H, W[, C]) or a list of arrays of different sizes (uploads). Images
are read as the run read its own (files at ``data.load_size``), so an array and its file encode alike."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import at_size
from ..data.lists import ImageList, read_images
from ..errors import CollectionError


def gather(
    images: Any, load_size: int | None, max_pixels: int, store: Callable[[np.ndarray], str] | None = None,
    outside_root: bool = False,
) -> tuple[Any, list[str], list[str | None]]:  # fmt: skip
    """(images to encode, their sources, their labels) from any accepted input; arrays are written into the
    collection with ``store`` (returning their sources), or named ``array`` without it."""

    def listed(lst: ImageList) -> tuple[ImageList, list[str], list[str | None]]:
        sources = [str(Path(p).resolve()) for p in lst.paths]
        return lst.at_size(load_size, max_pixels=max_pixels), sources, label_names(lst.labels, lst.class_names, len(lst))

    if isinstance(images, str | os.PathLike):
        return listed(read_images(images, allow_outside_root=outside_root))
    if isinstance(images, list | tuple) and images and all(isinstance(p, str | os.PathLike) for p in images):
        paths = [Path(p).resolve() for p in images]
        for p in paths:
            if not p.is_file():
                raise CollectionError(f"{p}: no such image")
        return listed(ImageList(paths, None, [], [str(p) for p in paths]))
    if isinstance(images, ImageList):
        return listed(images)
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
    sources = [store(a) for a in arrays] if store is not None else ["array"] * len(arrays)
    return [at_size(a, load_size) for a in arrays], sources, [None] * len(arrays)


def label_names(labels: np.ndarray | None, names: list[str], n: int) -> list[str | None]:
    """Labels as text: the class name, or the comma-joined names of a multi-hot row; None where unknown."""
    if labels is None:
        return [None] * n
    if labels.ndim == 1:
        return [names[int(y)] if names else str(int(y)) for y in labels]
    return [",".join(names[j] if names else str(j) for j in np.flatnonzero(row)) for row in labels]
