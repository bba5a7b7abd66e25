"""Exact search by the asymmetric score ``<h_q, b>`` (docs/search.md "Searching by a continuous output").

For a query's continuous output h and a stored code b in {-1, +1}^K, ``<h, b> = S - 2 w(b)``, with S the sum of
``|h_i|`` and ``w(b)`` the sum of ``|h_i|`` over the bits where b disagrees with sign(h): a Hamming distance
weighted by the query's confidence in each bit. This is product quantization's asymmetric distance for binary
codes: the query stays continuous, the items keep their bits. Results are ranked by w (score descending), ties by
Hamming distance, then insertion order; a query of signs (every |h_i| equal) ranks as Hamming does.

Two exact ways to the top k:

- ``kernels.asymmetric_topk`` (a ``HammingIndex``'s codes, numba): one scan. A code at Hamming distance d has
  ``w >= L(d)``, the sum of the d smallest ``|h_i|``; once k codes are held, a code is scored (one table
  lookup per byte) only when ``L(d)`` does not exceed the k-th best w so far, so the scan costs little more
  than a Hamming one.
- ``by_hamming`` (any index with a Hamming ``search``, say Milvus): the top R by Hamming distance, scored; exact
  once every code outside them is known to score worse (``L`` of the last one's distance above the k-th best
  w), else R doubles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..codes import pack
from ..errors import CodesError

_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float64)  # (256, 8), MSB first
_SLACK = 1e-9  # relative margin of the lower bound L(d): rounding never prunes a code that could enter


def check_outputs(h: Any, bits: int) -> np.ndarray:
    """Continuous query outputs as float32 (n, bits) (one row may come as a vector); else ``CodesError``, one line."""
    h = np.asarray(h, np.float32)
    if h.ndim == 1:
        h = h[None]
    if h.ndim != 2 or h.shape[1] != bits:
        raise CodesError(f"query outputs: expected (n, {bits}) continuous values, got shape {h.shape}")
    if not np.isfinite(h).all():
        raise CodesError("query outputs: NaN or infinite values")
    return h


def tables(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query (rows of ``h``, (nq, K)): the byte tables ``t[q, p, v]`` = sum of ``|h|`` over the bits that
    differ where byte p of (sign(h) XOR b) is v, so ``w = sum_p t[q, p, x_p]`` (nq, K/8, 256); and S = sum |h|
    (nq,). float64."""
    a = np.abs(np.asarray(h, np.float64))
    nq, bits = a.shape
    t = np.ascontiguousarray(np.einsum("vj,qpj->qpv", _BITS, a.reshape(nq, bits // 8, 8)))
    return t, a.sum(1)


def lower_bounds(h: np.ndarray) -> np.ndarray:
    """``L[q, d]`` <= any w at Hamming distance d: the sum of the d smallest ``|h|`` of each query, less a relative
    slack so that rounding never prunes a code that could enter (nq, K + 1), float64; what the pruning scans read."""
    a = np.abs(np.asarray(h, np.float64))
    low = np.concatenate([np.zeros((len(a), 1)), np.cumsum(np.sort(a, axis=1), axis=1)], axis=1)
    return np.ascontiguousarray(low - _SLACK * (low[:, -1:] + 1))


def weights(t: np.ndarray, signs: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """w of packed codes ``codes`` ((nq or 1), R, K/8) for the queries of tables ``t`` (nq, K/8, 256) and packed
    signs ``signs`` (nq, K/8): (nq, R), summed byte by byte in the order the scan sums them (so both give the same
    floats)."""
    x = np.bitwise_xor(codes, signs[:, None, :])
    w = np.zeros((len(t), x.shape[1]))
    rows = np.arange(len(t))[:, None]
    for p in range(x.shape[2]):
        w += t[rows, p, x[:, :, p]]
    return w


def by_hamming(
    h: np.ndarray, k: int, n: int, search: Callable[[int], tuple[np.ndarray, np.ndarray]],
    code_bytes: Callable[[np.ndarray], np.ndarray], sign_bytes: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The exact top ``k`` by ``<h_q, b>`` from an index that only ranks by Hamming distance: ``search(R)`` gives
    its top R (distances, ids; -1 padding) for every query, ``code_bytes(ids)`` their packed codes, ``sign_bytes``
    the queries' packed signs (nq, K/8); ``n`` codes are held. R starts at k and doubles until exact.
    (scores float32, distances int32, ids int64), each (nq, k), -1 / -inf padding where fewer than k are held."""
    (t, s), low = tables(h), lower_bounds(h)
    depth = min(max(k, 1), n)
    while True:
        dist, ids = search(depth)
        w = np.where(ids >= 0, weights(t, sign_bytes, code_bytes(ids)), np.inf)
        order = np.lexsort((np.broadcast_to(np.arange(depth), w.shape), dist, w), axis=-1)[:, :k]
        kth = np.take_along_axis(w, order[:, -1:], 1)[:, 0]
        last = np.take_along_axis(low, dist[:, -1:].clip(0), 1)[:, 0]
        if depth >= n or (last > kth).all():
            break
        depth = min(n, 2 * depth)
    ids, dist, w = (np.take_along_axis(a, order, 1) for a in (ids, dist, w))
    if order.shape[1] < k:
        pad = k - order.shape[1]
        ids, dist, w = (np.pad(a, ((0, 0), (0, pad)), constant_values=v) for a, v in ((ids, -1), (dist, -1), (w, np.inf)))
    scores = np.where(ids >= 0, s[:, None] - 2 * w, -np.inf).astype(np.float32)
    return scores, dist.astype(np.int32), ids


def asymmetric_search(index: Any, h: Any, k: int, code_bytes: Callable[[np.ndarray], np.ndarray] | None = None):
    """The exact top ``k`` by ``<h_q, b>`` of continuous queries ``h`` (nq, bits) in ``index``: its own
    ``search_asymmetric`` (``HammingIndex``: one scan), else ``by_hamming`` over its Hamming ``search`` with the
    candidates' packed codes from ``code_bytes`` (default ``index.code_bytes``). (scores float32, Hamming distances
    int32, ids int64), each (nq, k), best first."""
    h = check_outputs(h, index.bits)
    if hasattr(index, "search_asymmetric"):
        return index.search_asymmetric(h, k)
    signs = pack(h, index.bits)  # real values: packed by sign, sign(0) = +1
    return by_hamming(h, k, len(index), lambda r: index.search(signs, r), code_bytes or index.code_bytes, signs.array)


class ByScore:
    """Ranks the candidates of queries ``h`` (nq, bits) by ``<h_q, b>``, for searches that gather candidates in
    several ways (a collection's filters and radii): ``top(index, k)`` is an index's exact top k (distances,
    ids) in that order; ``order(per_query)`` sorts each query's (id, distance) list, given in Hamming order, by the
    score (ties keep the Hamming order, as ``top`` ranks them). ``code_bytes(ids)``: the packed codes of ids, for
    indexes without ``search_asymmetric`` and for ``order``."""

    def __init__(self, h: Any, bits: int, code_bytes: Callable[[np.ndarray], np.ndarray]) -> None:
        self.h, self.bits, self.code_bytes = check_outputs(h, bits), bits, code_bytes

    def top(self, index: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        _, dist, ids = asymmetric_search(index, self.h, k, self.code_bytes)
        return dist, ids

    def order(self, per_query: list[list[tuple[int, int]]]) -> list[list[tuple[int, int]]]:
        t, signs, out = tables(self.h)[0], pack(self.h, self.bits).array, []
        for r, hits in enumerate(per_query):
            if len(hits) < 2:
                out.append(list(hits))
                continue
            codes = self.code_bytes(np.array([i for i, _ in hits], np.int64))
            w = weights(t[r : r + 1], signs[r : r + 1], codes[None])[0]
            out.append([hits[j] for j in np.argsort(w, kind="stable")])
        return out


__all__ = ["ByScore", "asymmetric_search", "by_hamming", "check_outputs", "lower_bounds", "tables", "weights"]
