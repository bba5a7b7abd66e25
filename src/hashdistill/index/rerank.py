"""Searching by a query's continuous output: the asymmetric score, then re-ranking (docs/search.md, "Searching by
a continuous output").

A query with a continuous output ``h_q`` (an image's) ranks the items by the asymmetric score ``<h_q, b>``, its
output against each item's stored bits (``b`` in {-1, +1}; ``asymmetric.py``): exact over every item, no memory
beyond the codes, product quantization's asymmetric distance for binary codes. ``rerank`` then says what the
``k`` results are:

- ``asymmetric``: the top ``k`` by that score.
- ``stored``: its top ``R = oversample x k`` rescored by the cosine of ``h_q`` and a float vector stored per item
  (``vectors.VectorFile``, float16, memory-mapped), say the model's own continuous output, or the backbone's
  features. With ``expand = n`` (query expansion, alpha-QE with alpha = 1): the unit query plus its ``n`` best
  candidates' unit vectors, each weighted by its cosine (negative ones by 0), rescores the candidates once more.
- ``none``: the top ``k`` by the Hamming distance of sign(h_q), as a query of bits ranks.

Ties keep the order before them: the asymmetric score's ties go by Hamming distance, then insertion order, and a
rescoring's ties by the asymmetric order, so every result is defined. Padding (an index holding fewer than R
codes) stays last, as id -1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..codes import pack
from ..errors import CodesError
from .asymmetric import asymmetric_search, check_outputs, tables, weights

RERANK = ("none", "asymmetric", "stored")
EXPAND, MAX_EXPAND = 2, 10  # query expansion's default (chosen by benchmarks/rerank_scores.py) and its bound


def check_expand(expand: Any, error: type[Exception] = CodesError) -> None:
    """``expand`` must be an integer in 0..``MAX_EXPAND``: else ``error``, one line."""
    if not isinstance(expand, int | np.integer) or isinstance(expand, bool) or not 0 <= expand <= MAX_EXPAND:
        raise error(f"expand must be an integer in 0..{MAX_EXPAND}, got {expand!r}")


def asymmetric_scores(h: Any, candidates: np.ndarray) -> np.ndarray:
    """``<h_q, b>`` of each query ``h`` (nq, K) and its candidates' packed codes ``candidates`` (nq, R, K/8):
    (nq, R) float64, with b = +1 for a set bit, -1 otherwise; the same floats as ``asymmetric_search`` gives."""
    cand = np.asarray(candidates, np.uint8)
    h = check_outputs(h, cand.shape[-1] * 8)
    t, s = tables(h)
    return s[:, None] - 2 * weights(t, pack(h).array, cand)


def _unit(x: np.ndarray) -> np.ndarray:
    """``x`` scaled to unit length along its last axis (a zero vector stays zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def cosine_scores(h: Any, vectors: np.ndarray) -> np.ndarray:
    """Cosine of each query ``h`` (nq, D) and its candidates' stored vectors (nq, R, D): (nq, R) float32."""
    v = np.asarray(vectors, np.float32)
    return np.einsum("qd,qrd->qr", _unit(check_outputs(h, v.shape[-1])), _unit(v))


def expanded_scores(h: Any, vectors: np.ndarray, valid: np.ndarray, n: int) -> np.ndarray:
    """``stored``'s score: the cosine of each query ``h`` (nq, D) and its candidates' vectors (nq, R, D), then, for
    ``n`` > 0 (query expansion), the cosine of ``unit(h) + sum_j max(s_j, 0) unit(v_j)`` over its ``n`` best
    candidates j by that first cosine s (ties in the given order; ``valid``: False for padding): (nq, R) float32.
    Each vector is normalised once. Ties are equal float32 cosines: distinct vectors whose cosines tie only in exact
    arithmetic go by their rounded values."""
    v = np.asarray(vectors, np.float32)
    q, v = _unit(check_outputs(h, v.shape[-1])), _unit(v)
    scores = np.einsum("qd,qrd->qr", q, v)
    if n <= 0:
        return scores
    best = ranking(np.where(valid, 0, -1), scores, n)  # (nq, n) positions
    w = np.where(np.take_along_axis(valid, best, 1), np.take_along_axis(scores, best, 1), 0).clip(0)
    q = _unit(q + np.einsum("qn,qnd->qd", w, np.take_along_axis(v, best[..., None], 1)))
    return np.einsum("qd,qrd->qr", q, v)


def ranking(ids: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` best of each row by ``scores`` (higher first), ties in the rows' given order
    (the Hamming ranking), padding (id -1) last: (nq, k)."""
    return np.argsort(-np.where(ids >= 0, scores, -np.inf), axis=1, kind="stable")[:, :k]


def search_reranked(
    index: Any,
    h: Any,
    k: int,
    rerank: str = "asymmetric",
    oversample: int = 10,
    vectors: Callable[[np.ndarray], np.ndarray] | None = None,
    query_vectors: Any = None,
    expand: int = EXPAND,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Search ``index`` (a ``HammingIndex``, or any index ``asymmetric_search`` takes) by continuous query outputs
    ``h`` (nq, K): the top ``k`` by ``<h_q, b>`` (``asymmetric``), its top ``oversample * k`` rescored
    (``stored``: ``vectors(ids)`` returns the stored vectors (nq, R, D) of candidate ids (nq, R), say
    ``VectorFile.lookup``, scored by their cosine with ``query_vectors`` (nq, D), by default ``h`` itself, then by
    the query expanded with its ``expand`` best candidates, ``expanded_scores``; 0: not), or the top ``k`` by the
    Hamming distance of sign(h) (``none``).
    Returns (ids (nq, k), scores (nq, k), Hamming distances (nq, k)); ``none`` scores are minus the distance."""
    if rerank not in RERANK:
        raise CodesError(f"rerank must be one of {', '.join(RERANK)}, got {rerank!r}")
    if not isinstance(oversample, int | np.integer) or oversample < 1:
        raise CodesError(f"oversample must be a positive integer, got {oversample!r}")
    check_expand(expand)
    if rerank == "stored" and vectors is None:
        raise CodesError("rerank 'stored' needs the stored vectors")
    h = check_outputs(h, index.bits)
    if rerank == "none":
        dist, ids = index.search(pack(h), k)  # real values: packed by sign, sign(0) = +1
        return ids, np.where(ids >= 0, -dist, -np.inf).astype(np.float32), dist
    scores, dist, ids = asymmetric_search(index, h, k if rerank == "asymmetric" else k * int(oversample))
    if rerank == "asymmetric":
        return ids, scores, dist
    qv = h if query_vectors is None else query_vectors
    scores = np.where(ids >= 0, expanded_scores(qv, vectors(ids), ids >= 0, int(expand)), -np.inf).astype(np.float32)
    order = ranking(ids, scores, k)
    return tuple(np.take_along_axis(a, order, 1) for a in (ids, scores, dist))


__all__ = [
    "EXPAND",
    "MAX_EXPAND",
    "RERANK",
    "asymmetric_scores",
    "check_expand",
    "cosine_scores",
    "expanded_scores",
    "ranking",
    "search_reranked",
]
