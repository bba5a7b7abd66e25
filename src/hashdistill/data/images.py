"""Reading one image safely: every way a file can be bad becomes one ``ImageError`` naming it.

Used by everything that reads an image a user gives: list files and folders (``lists.py``), collections
and the HTTP service. A decompression bomb is refused from its header, before any pixel is decoded:
``max_pixels`` (default ``DEFAULT_MAX_PIXELS``, Pillow's own warning threshold) is checked first, and
Pillow's hard limit (twice its threshold) stands behind it.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's Image.MAX_IMAGE_PIXELS: a 9,459 x 9,459 image


class ImageError(DataError):
    """An image that cannot be read; ``reason`` is one of ``missing``, ``empty``, ``not-an-image``,
    ``truncated``, ``too-large``, ``unreadable``. The message names the image (and its list line)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def decode_image(
    source: str | os.PathLike | bytes,
    origin: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    mode: str = "RGB",
) -> np.ndarray:
    """A file (or the bytes of one) as a uint8 array: (H, W, 3) for RGB, (H, W) for L.

    ``origin`` names it in errors (``list.txt:12`` or an upload's name; default the path).
    """
    name = origin or (str(source) if not isinstance(source, bytes) else "image")
    if isinstance(source, bytes):
        if not source:
            raise ImageError(f"{name}: empty file", "empty")
        return _decode(io.BytesIO(source), name, max_pixels, mode)
    path = Path(source)
    where = name if origin is None or origin == str(path) else f"{name}: {path}"
    try:
        if path.stat().st_size == 0:
            raise ImageError(f"{where}: empty file (0 bytes)", "empty")
        with open(path, "rb") as f:
            return _decode(f, where, max_pixels, mode)
    except FileNotFoundError:
        raise ImageError(f"{where}: no such image file", "missing") from None
    except IsADirectoryError:
        raise ImageError(f"{where}: a folder, not an image file", "unreadable") from None
    except PermissionError:
        raise ImageError(f"{where}: permission denied", "unreadable") from None
    except OSError as e:
        raise ImageError(f"{where}: unreadable ({e.strerror or e})", "unreadable") from None


def _decode(f: BinaryIO, where: str, max_pixels: int, mode: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit follows
            with Image.open(f) as im:
                if im.width * im.height > max_pixels:
                    raise ImageError(_too_large(where, im.width, im.height, max_pixels), "too-large")
                im.load()
                return np.asarray(im.convert(mode))
    except Image.DecompressionBombError as e:  # a header past Pillow's hard limit (twice its threshold)
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
        raise ImageError(f"{where}: {size}, over Pillow's hard limit; refused unread as a possible decompression bomb",
                         "too-large") from None  # fmt: skip
    except UnidentifiedImageError:
        raise ImageError(f"{where}: not an image (or not a format Pillow reads)", "not-an-image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        if isinstance(e, ImageError):
            raise
        raise ImageError(f"{where}: truncated or damaged image ({_first(e)})", "truncated") from None


def _too_large(where: str, width: int, height: int, limit: int) -> str:
    return f"{where}: {width} x {height} = {width * height:,} pixels, over the limit of {limit:,} (max_pixels)"


def _first(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:160] if text else type(e).__name__


def at_size(image: np.ndarray, size: int | None) -> np.ndarray:
    """An image resized to ``size`` x ``size`` (bilinear), as files are read for a run; ``None``: unchanged."""
    if size is None or image.shape[:2] == (size, size):
        return image
    flat = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
    return np.asarray(Image.fromarray(flat).resize((size, size), Image.BILINEAR))
