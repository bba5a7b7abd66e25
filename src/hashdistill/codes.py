"""Binary codes: sign, bit packing, Hamming distances and bit statistics.

Conventions (docs/protocols.md): a code is a vector in {-1, +1}^K with sign(0) = +1; packed codes are
``uint8`` arrays of shape (N, K/8) in numpy ``packbits`` order (bit +1 -> 1, first bit is the
most significant bit of the first byte). K must be a multiple of 8 for packing.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._io import save_npz
from .errors import CodesError

__all__ = [
    "binarize",
    "pack",
    "unpack",
    "as_packed",
    "hamming",
    "bit_balance",
    "BitStats",
    "save_codes",
    "load_codes",
    "check_codes",
    "CodesFileError",
]


def _to_numpy(x: Any) -> np.ndarray:
    """Return ``x`` as a numpy array (accepts torch tensors without importing torch)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def binarize(h: Any) -> np.ndarray:
    """sign(h) as ``int8`` in {-1, +1}, with sign(0) = +1."""
    h = _to_numpy(h)
    if h.dtype == np.bool_:
        return np.where(h, 1, -1).astype(np.int8)
    return np.where(h >= 0, 1, -1).astype(np.int8)


def _check_bits(bits: int) -> None:
    if bits <= 0 or bits % 8:
        raise CodesError(f"code length must be a positive multiple of 8 bits to pack, got {bits}")


def pack(codes: Any) -> np.ndarray:
    """Pack ±1 (or real-valued, binarized by sign) codes of shape (N, K) into ``uint8`` (N, K/8)."""
    b = binarize(codes)
    if b.ndim == 1:
        b = b[None, :]
    if b.ndim != 2:
        raise CodesError(f"codes must be 2-D (N, K), got shape {b.shape}")
    _check_bits(b.shape[1])
    return np.packbits(b > 0, axis=1)


def unpack(packed: Any, bits: int | None = None) -> np.ndarray:
    """Inverse of :func:`pack`: ``uint8`` (N, K/8) -> ±1 ``int8`` (N, K)."""
    p = _to_numpy(packed)
    if p.dtype != np.uint8:
        raise CodesError(f"packed codes must be uint8, got {p.dtype}")
    if p.ndim == 1:
        p = p[None, :]
    bits = p.shape[1] * 8 if bits is None else bits
    _check_bits(bits)
    if bits != p.shape[1] * 8:
        raise CodesError(f"packed width {p.shape[1]} bytes does not hold {bits} bits")
    return np.unpackbits(p, axis=1).astype(np.int8) * 2 - 1


def as_packed(codes: Any) -> np.ndarray:
    """Accept ±1 / real codes (numpy or torch) or packed ``uint8``; return packed ``uint8`` (N, K/8).

    ``uint8`` input is taken to be packed already; anything else is binarized by sign.
    """
    c = _to_numpy(codes)
    if c.dtype == np.uint8:
        return np.atleast_2d(c)
    return pack(c)


def _words(packed: np.ndarray) -> np.ndarray:
    """View packed codes as uint64 words (zero-padded to a multiple of 8 bytes)."""
    n, nbytes = packed.shape
    pad = (-nbytes) % 8
    if pad:
        packed = np.concatenate([packed, np.zeros((n, pad), np.uint8)], axis=1)
    return np.ascontiguousarray(packed).view(np.uint64)


def hamming(a: Any, b: Any) -> np.ndarray:
    """Pairwise Hamming distances, shape (len(a), len(b)), ``int32``.

    Either argument may be ±1 codes or packed ``uint8``; both must have the same length K.
    """
    pa, pb = as_packed(a), as_packed(b)
    if pa.shape[1] != pb.shape[1]:
        raise CodesError(f"code lengths differ: {pa.shape[1] * 8} vs {pb.shape[1] * 8} bits")
    wa, wb = _words(pa), _words(pb)
    out = np.zeros((wa.shape[0], wb.shape[0]), np.int32)
    for w in range(wa.shape[1]):
        out += np.bitwise_count(wa[:, w, None] ^ wb[None, :, w])
    return out


@dataclass(frozen=True)
class BitStats:
    """Bit-balance statistics of a set of codes."""

    mean: np.ndarray  # per-bit mean in [-1, 1]; 0 is perfectly balanced
    ones_fraction: np.ndarray  # per-bit fraction of +1
    balance: float  # 1 - mean |per-bit mean|; 1 is perfectly balanced
    mean_abs_correlation: float  # mean |corr| between distinct bits; 0 is independent
    unique_codes: int

    def as_dict(self) -> dict[str, float]:
        return {
            "balance": self.balance,
            "mean_abs_correlation": self.mean_abs_correlation,
            "unique_codes": self.unique_codes,
            "min_ones_fraction": float(self.ones_fraction.min()),
            "max_ones_fraction": float(self.ones_fraction.max()),
        }


def bit_balance(codes: Any) -> BitStats:
    """Per-bit balance, bit correlation and the number of distinct codes."""
    c = _to_numpy(codes)
    b = unpack(c) if c.dtype == np.uint8 else binarize(c)
    bf = b.astype(np.float64)
    mean = bf.mean(axis=0)
    k = bf.shape[1]
    if k > 1 and len(bf) > 1:
        std = bf.std(axis=0)
        safe = np.where(std > 0, std, 1.0)
        z = (bf - mean) / safe
        corr = (z.T @ z) / len(bf)
        corr[:, std == 0] = 0
        corr[std == 0, :] = 0
        off = corr[~np.eye(k, dtype=bool)]
        mac = float(np.abs(off).mean())
    else:
        mac = 0.0
    unique = len(np.unique(np.packbits(b > 0, axis=1), axis=0))
    return BitStats(
        mean=mean,
        ones_fraction=(mean + 1) / 2,
        balance=float(1 - np.abs(mean).mean()),
        mean_abs_correlation=mac,
        unique_codes=unique,
    )


def save_codes(path: str | os.PathLike, codes: Any, ids: Any, labels: Any = None) -> Path:
    """A codes file (.npz, written atomically): packed ``codes`` (n, K/8), ``ids`` and, where known, ``labels``."""
    arrays = {"codes": pack(codes), "ids": np.asarray(ids, np.int64)}
    if labels is not None:
        arrays["labels"] = np.asarray(labels)
    return save_npz(path, **arrays)


class CodesFileError(CodesError):
    """A codes file that cannot be used; the message names the file and what is wrong."""


def load_codes(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(packed codes (n, K/8) uint8, ids (n,) int64 or ``None``, labels or ``None``) from a codes ``.npz``
    (``codes`` [, ``ids``, ``labels``]) or a ``.npy`` of codes, every array checked (``check_codes``).

    Never unpickles: a file holding Python objects is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise CodesFileError(f"{path}: no such codes file")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic[:4] != b"PK\x03\x04" and magic != b"\x93NUMPY":
        raise CodesFileError(f"{path}: not a numpy .npz or .npy file")
    try:
        if magic == b"\x93NUMPY":
            codes, ids, labels = np.load(path, allow_pickle=False), None, None
        else:
            with np.load(path, allow_pickle=False) as z:
                if "codes" not in z.files:
                    raise CodesFileError(f"{path}: no 'codes' array (found: {', '.join(z.files) or 'nothing'})")
                codes, ids, labels = z["codes"], z.get("ids"), z.get("labels")
    except CodesFileError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise CodesFileError(f"{path}: refused: it holds Python objects (loading them could run code)") from None
        raise CodesFileError(f"{path}: unreadable codes file ({str(e).splitlines()[0][:120]})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise CodesFileError(f"{path}: unreadable or truncated codes file ({type(e).__name__})") from None
    packed = check_codes(codes, str(path))
    return packed, check_ids(ids, len(packed), str(path)), check_labels(labels, len(packed), str(path))


def check_codes(codes: Any, origin: str = "codes") -> np.ndarray:
    """Codes of any accepted form as packed ``uint8`` (n, K/8), or one ``CodesFileError`` line naming ``origin``.

    Accepted: packed ``uint8`` bytes; ``bool`` bits; integers in {-1, +1}; finite floats (binarized by sign).
    Refused: other dtypes, NaN / inf, integer 0/1 codes (is 0 a -1 bit or a packed byte?), and ``uint8``
    arrays of 0/1 values only (bits, not packed bytes). K must be a multiple of 8.
    """
    c = _to_numpy(codes)
    if c.ndim != 2:
        raise CodesFileError(f"{origin}: codes must be a 2-D array (n, K), got shape {c.shape}")
    if not len(c):
        raise CodesFileError(f"{origin}: holds no codes (shape {c.shape})")
    if c.dtype.kind not in "buif":
        raise CodesFileError(f"{origin}: codes must be numbers, got dtype {c.dtype}")
    if not c.shape[1]:
        raise CodesFileError(f"{origin}: codes of 0 bits (shape {c.shape})")
    if c.dtype == np.uint8:
        if c.size >= 32 and c.max() <= 1:
            raise CodesFileError(
                f"{origin}: uint8 codes are packed bytes, but every value is 0 or 1: for bits, save a bool array, ±1 "
                "int8, or np.packbits(bits, axis=1)"
            )
        return np.ascontiguousarray(c)
    if c.dtype.kind == "f":
        bad = ~np.isfinite(c)
        if bad.any():
            r, b = (int(i[0]) for i in np.nonzero(bad))
            raise CodesFileError(f"{origin}: codes hold {int(bad.sum())} NaN / inf values (first: row {r}, bit {b})")
    elif c.dtype.kind in "iu":
        values = np.unique(c)
        if not np.isin(values, (-1, 1)).all():
            shown = ", ".join(str(v) for v in values[:5]) + (", ..." if len(values) > 5 else "")
            hint = (" (0/1 bits are ambiguous: save a bool array, 2*bits-1, or np.packbits(bits, axis=1))"
                    if np.isin(values, (0, 1)).all() else "")  # fmt: skip
            raise CodesFileError(f"{origin}: integer codes must be -1 or +1, found {shown}{hint}")
    if c.shape[1] % 8:
        raise CodesFileError(f"{origin}: code length {c.shape[1]} bits is not a multiple of 8")
    return pack(c)


def check_ids(ids: Any, n: int, origin: str = "codes") -> np.ndarray | None:
    """Item ids (n,) as int64, or one ``CodesFileError`` line: integers only, one per code."""
    if ids is None:
        return None
    ids = np.asarray(ids)
    if ids.ndim != 1 or len(ids) != n:
        raise CodesFileError(f"{origin}: {n} codes but ids of shape {ids.shape}")
    if ids.dtype.kind not in "iu":
        nan = ids.dtype.kind == "f" and np.isnan(ids).any()
        raise CodesFileError(f"{origin}: ids must be integers, got {ids.dtype}" + (" holding NaN" if nan else ""))
    if ids.dtype.kind == "u" and len(ids) and ids.max() > np.iinfo(np.int64).max:
        raise CodesFileError(f"{origin}: ids must fit in int64")
    return ids.astype(np.int64)


def check_labels(labels: Any, n: int, origin: str = "codes") -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim not in (1, 2) or len(labels) != n:
        raise CodesFileError(f"{origin}: {n} codes but labels of shape {labels.shape}")
    return labels
