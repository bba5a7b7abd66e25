"""Binary codes: sign, bit packing, Hamming distances and bit statistics.

Conventions (docs/protocols.md): a code is a vector in {-1, +1}^K with sign(0) = +1. Packed codes are a
:class:`PackedCodes`: ``uint8`` bytes of shape (N, K/8) in numpy ``packbits`` order (bit +1 -> 1, first bit
is the most significant bit of the first byte); K must be a multiple of 8 for packing.

The format of a code array is said, never guessed from its dtype (docs/architecture.md, "Code formats"):
``PackedCodes`` holds packed bytes; a plain array is ±1 signs (any integer dtype), ``bool`` bits or real
values binarized by sign. A plain ``uint8`` array is refused where codes are expected, since its bytes could
be packed codes or 0/1 bits; ``PackedCodes(array)`` (or ``unpack``) says which.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._io import save_npz
from .errors import CodesError

__all__ = [
    "PackedCodes",
    "to_numpy",
    "binarize",
    "pack",
    "unpack",
    "words",
    "hamming",
    "bit_balance",
    "BitStats",
    "save_codes",
    "load_codes",
    "check_codes",
    "CodesFileError",
]


class PackedCodes:
    """Packed binary codes: ``array`` is ``uint8`` (n, bits/8) in ``packbits`` order, one row per code.

    What :func:`pack`, ``HammingIndex.codes``, ``Collection.codes`` and :func:`load_codes` return, and how
    packed bytes are handed to anything that takes codes. Rows index like an array (``p[:10]``, ``p[ids]``
    keep the type); ``np.asarray(p)`` is the bytes.
    """

    __slots__ = ("array",)

    def __init__(self, array: Any) -> None:
        a = to_numpy(array)
        if a.dtype != np.uint8:
            raise CodesError(f"packed codes are uint8 bytes, got {a.dtype}")
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2 or not a.shape[1]:
            raise CodesError(f"packed codes are 2-D (n, bits/8) with at least one byte, got shape {a.shape}")
        self.array = np.ascontiguousarray(a)

    @property
    def bits(self) -> int:
        return self.array.shape[1] * 8

    @property
    def shape(self) -> tuple[int, int]:
        return self.array.shape

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, rows: Any) -> PackedCodes:
        return PackedCodes(self.array[rows])

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return self.array if dtype is None else self.array.astype(dtype)

    def __repr__(self) -> str:
        return f"PackedCodes(n={len(self)}, bits={self.bits})"


def to_numpy(x: Any) -> np.ndarray:
    """``x`` as a numpy array (a torch tensor without importing torch; ``PackedCodes`` as its bytes)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def binarize(h: Any) -> np.ndarray:
    """sign(h) as ``int8`` in {-1, +1}, with sign(0) = +1; ``bool`` bits map True -> +1."""
    h = to_numpy(h)
    if h.dtype == np.bool_:
        return np.where(h, 1, -1).astype(np.int8)
    return np.where(h >= 0, 1, -1).astype(np.int8)


def _check_bits(bits: int) -> None:
    if bits <= 0 or bits % 8:
        raise CodesError(f"code length must be a positive multiple of 8 bits to pack, got {bits}")


def pack(codes: Any, bits: int | None = None, *, what: str | None = None, holder: str | None = None) -> PackedCodes:
    """Codes of shape (N, K) as :class:`PackedCodes` (N, K/8).

    Takes ``PackedCodes`` (returned as they are), ±1 integers, ``bool`` bits, or real values (numpy or torch,
    binarized by sign). Refuses a plain ``uint8`` array and integers other than ±1: their meaning would be a
    guess (0/1 bits read as signs are all +1). With ``bits``, codes of another length are refused too; ``what``
    names the codes in the error ("queries") and ``holder`` what holds ``bits``-bit codes ("the index").
    """
    try:
        packed = codes if isinstance(codes, PackedCodes) else _pack(codes)
    except CodesError as e:
        raise CodesError(f"{what}: {e}" if what else str(e)) from None
    if bits is not None and packed.bits != bits:
        said = f"{holder} holds {bits}-bit codes" if holder else f"expected {bits}"
        raise CodesError(f"{what or 'codes'} have {packed.bits} bits, {said}")
    return packed


def _pack(codes: Any) -> PackedCodes:
    c = to_numpy(codes)
    if c.ndim == 1:
        c = c[None, :]
    if c.ndim != 2:
        raise CodesError(f"codes must be 2-D (N, K), got shape {c.shape}")
    if c.dtype == np.uint8:
        raise CodesError(
            "a uint8 array could be packed bytes or 0/1 bits: wrap packed bytes as PackedCodes(array), "
            "give bits as bool or signs as ±1"
        )
    if c.dtype.kind in "iu" and c.size and not (np.abs(c) == 1).all():
        raise CodesError("integer codes must be -1 or +1 (for 0/1 bits give a bool array)")
    if c.dtype.kind not in "biuf":
        raise CodesError(f"codes must be numbers, got dtype {c.dtype}")
    if c.dtype.kind == "f" and not np.isfinite(c).all():
        raise CodesError("real-valued codes hold NaN or infinite values (their signs are not defined)")
    _check_bits(c.shape[1])
    return PackedCodes(np.packbits(c if c.dtype == np.bool_ else c >= 0, axis=1))


def unpack(packed: Any, bits: int | None = None) -> np.ndarray:
    """Inverse of :func:`pack`: packed bytes (``PackedCodes`` or ``uint8`` (N, K/8)) -> ±1 ``int8`` (N, K)."""
    p = packed if isinstance(packed, PackedCodes) else PackedCodes(packed)
    if bits is not None and bits != p.bits:
        _check_bits(bits)
        raise CodesError(f"packed width {p.shape[1]} bytes does not hold {bits} bits")
    return np.unpackbits(p.array, axis=1).astype(np.int8) * 2 - 1


def words(codes: Any, n_words: int | None = None) -> np.ndarray:
    """Codes (anything :func:`pack` takes) as ``uint64`` words (N, W), zero-padded to ``n_words`` (default: the
    fewest that hold the code); the layout the Hamming kernels and ``metrics`` scan."""
    p = pack(codes).array
    n, nbytes = p.shape
    pad = (n_words or -(-nbytes // 8)) * 8 - nbytes
    if pad < 0:
        raise CodesError(f"{nbytes * 8}-bit codes do not fit in {n_words} words")
    if pad:
        p = np.concatenate([p, np.zeros((n, pad), np.uint8)], axis=1)
    return np.ascontiguousarray(p).view(np.uint64)


def hamming(a: Any, b: Any) -> np.ndarray:
    """Pairwise Hamming distances, shape (len(a), len(b)), ``int32``.

    Either argument may be ``PackedCodes`` or anything :func:`pack` takes; both must have the same length K.
    """
    pa, pb = pack(a), pack(b)
    if pa.bits != pb.bits:
        raise CodesError(f"code lengths differ: {pa.bits} vs {pb.bits} bits")
    wa, wb = words(pa), words(pb)
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
    b = unpack(pack(codes))
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
    """A codes file (.npz, written atomically): packed ``codes`` (n, K/8) with their length ``bits`` (what makes
    the bytes packed codes), ``ids`` and, where known, ``labels``."""
    packed = pack(codes)
    arrays = {"codes": packed.array, "bits": np.int64(packed.bits), "ids": np.asarray(ids, np.int64)}
    if labels is not None:
        arrays["labels"] = np.asarray(labels)
    return save_npz(path, **arrays)


class CodesFileError(CodesError):
    """A codes file that cannot be used; the message names the file and what is wrong."""


def load_codes(path: str | os.PathLike, bits: int | None = None) -> tuple[PackedCodes, np.ndarray | None, np.ndarray | None]:
    """(packed codes, ids (n,) int64 or ``None``, labels or ``None``) from a codes ``.npz`` (``codes`` [, ``bits``,
    ``ids``, ``labels``]) or a ``.npy`` of codes, every array checked (``check_codes``). ``bits``: the code length
    the caller expects (a run's, an index's), which also says that ``uint8`` codes of that width are packed.

    Never unpickles: a file holding Python objects is refused.
    """
    import zipfile  # (here: the search path reads no codes file)

    path = Path(path)
    if not path.is_file():
        raise CodesFileError(f"{path}: no such codes file")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic[:4] != b"PK\x03\x04" and magic != b"\x93NUMPY":
        raise CodesFileError(f"{path}: not a numpy .npz or .npy file")
    stated = None
    try:
        if magic == b"\x93NUMPY":
            codes, ids, labels = np.load(path, allow_pickle=False), None, None
        else:
            with np.load(path, allow_pickle=False) as z:
                if "codes" not in z.files:
                    raise CodesFileError(f"{path}: no 'codes' array (found: {', '.join(z.files) or 'nothing'})")
                codes, ids, labels, stated = z["codes"], z.get("ids"), z.get("labels"), z.get("bits")
    except CodesFileError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise CodesFileError(f"{path}: refused: it holds Python objects (loading them could run code)") from None
        raise CodesFileError(f"{path}: unreadable codes file ({str(e).splitlines()[0][:120]})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise CodesFileError(f"{path}: unreadable or truncated codes file ({type(e).__name__})") from None
    if stated is not None:
        if stated.shape != () or stated.dtype.kind not in "iu":
            raise CodesFileError(f"{path}: 'bits' must be one integer, got {stated.dtype} {stated.shape}")
        if bits is not None and int(stated) != bits:
            raise CodesFileError(f"{path}: holds {int(stated)}-bit codes, expected {bits}")
        bits = int(stated)
    packed = check_codes(codes, str(path), bits)
    if bits is not None and packed.bits != bits:
        raise CodesFileError(f"{path}: holds {packed.bits}-bit codes, expected {bits}")
    return packed, check_ids(ids, len(packed), str(path)), check_labels(labels, len(packed), str(path))


def check_codes(codes: Any, origin: str = "codes", bits: int | None = None) -> PackedCodes:
    """Codes of any accepted form as :class:`PackedCodes`, or one ``CodesFileError`` line naming ``origin``.

    Accepted: ``PackedCodes``; ``bool`` bits; integers in {-1, +1}; finite floats (binarized by sign); ``uint8``
    bytes (n, bits/8) when ``bits`` says they are packed. Refused: other dtypes, NaN / inf, integer 0/1 codes (is
    0 a -1 bit or a byte?), and ``uint8`` without ``bits`` or of another width. K must be a multiple of 8.
    """
    if isinstance(codes, PackedCodes):
        return codes
    c = to_numpy(codes)
    if c.ndim != 2:
        raise CodesFileError(f"{origin}: codes must be a 2-D array (n, K), got shape {c.shape}")
    if not len(c):
        raise CodesFileError(f"{origin}: holds no codes (shape {c.shape})")
    if c.dtype.kind not in "buif":
        raise CodesFileError(f"{origin}: codes must be numbers, got dtype {c.dtype}")
    if not c.shape[1]:
        raise CodesFileError(f"{origin}: codes of 0 bits (shape {c.shape})")
    if c.dtype == np.uint8:
        if bits is None:
            raise CodesFileError(
                f"{origin}: uint8 codes without a code length: packed bytes or 0/1 bits? Save packed bytes with "
                "their length (hashdistill.codes.save_codes), bits as bool, or signs as ±1 int8"
            )
        if c.shape[1] * 8 != bits:
            raise CodesFileError(
                f"{origin}: uint8 codes of {c.shape[1]} bytes are not {bits}-bit packed codes; for 0/1 bits save a "
                "bool array or ±1 int8"
            )
        return PackedCodes(c)
    if c.dtype.kind == "f":
        bad = ~np.isfinite(c)
        if bad.any():
            r, b = (int(i[0]) for i in np.nonzero(bad))
            raise CodesFileError(f"{origin}: codes hold {int(bad.sum())} NaN / inf values (first: row {r}, bit {b})")
    elif c.dtype.kind in "iu":
        values = np.unique(c)
        if not np.isin(values, (-1, 1)).all():
            shown = ", ".join(str(v) for v in values[:5]) + (", ..." if len(values) > 5 else "")
            hint = (" (0/1 bits are ambiguous: save a bool array, 2*bits-1, or packed bytes with save_codes)"
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
