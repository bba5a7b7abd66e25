"""Retrieval metrics over Hamming ranking: mAP@K, precision@k, precision@radius, PR curves.

Conventions (docs/protocols.md, fixed for every figure the project reports):

- the database is ranked by Hamming distance to the query; ties are broken by database order
  (a stable sort), so results never depend on the sort algorithm;
- a database item is relevant when it shares at least one label with the query (integer class
  vectors compare for equality, multi-hot matrices by a non-zero dot product);
- AP@K is the mean of the precisions at the ranks of the relevant items inside the top K, i.e.
  their sum divided by the number of relevant items inside the top K; a query with no relevant
  item in its top K scores 0; ``topk=None`` ranks the whole database (mAP@all);
- P@r (precision at Hamming radius r) is the precision of the items at distance <= r; a query
  that retrieves nothing within r scores 0.

Codes may be ``PackedCodes``, ±1 arrays (numpy or torch), ``bool`` bits or real-valued (binarized by sign).
Work is done in blocks of queries sized to ``memory_mb`` and spread over threads, so a
1,000 x 69,000 evaluation stays within a few hundred MB.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .codes import pack, to_numpy, words
from .errors import CodesError
from .labels import shares_label

__all__ = [
    "mean_average_precision",
    "precision_at_radius",
    "precision_at_k",
    "precision_recall_curve",
    "evaluate_retrieval",
    "float_scores",
    "ranking_scores",
    "score",
    "sibling_map",
]

# bytes of scratch memory per (query, database item) pair inside one block
_BYTES_PER_PAIR = 24


@dataclass
class _Problem:
    q_words: np.ndarray
    db_words: np.ndarray
    bits: int
    q_labels: np.ndarray
    db_labels: np.ndarray
    multilabel: bool

    @property
    def n_db(self) -> int:
        return self.db_words.shape[0]


def _labels(y: Any, name: str) -> np.ndarray:
    y = to_numpy(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim not in (1, 2):
        raise CodesError(f"{name} must be a class vector (N,) or a multi-hot matrix (N, C), got {y.shape}")
    return y


def _problem(query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any) -> _Problem:
    q, d = pack(query_codes), pack(db_codes)
    if q.bits != d.bits:
        raise CodesError(f"query codes have {q.bits} bits but database codes {d.bits}")
    ql, dl = _labels(query_labels, "query_labels"), _labels(db_labels, "db_labels")
    if len(ql) != len(q):
        raise CodesError(f"{len(q)} query codes but {len(ql)} query labels")
    if len(dl) != len(d):
        raise CodesError(f"{len(d)} database codes but {len(dl)} database labels")
    if ql.ndim != dl.ndim or (ql.ndim == 2 and ql.shape[1] != dl.shape[1]):
        raise CodesError(f"query labels {ql.shape} and database labels {dl.shape} are not of one kind")
    multilabel = ql.ndim == 2
    if multilabel:
        ql, dl = (ql != 0).astype(np.float32), (dl != 0).astype(np.float32)
    return _Problem(words(q), words(d), q.bits, ql, dl, multilabel)


def _distances(p: _Problem, rows: slice) -> np.ndarray:
    """Hamming distances of a block of queries to the whole database (uint8 / uint16)."""
    qw = p.q_words[rows]
    dtype = np.uint8 if p.bits < 256 else np.uint16
    out = np.bitwise_count(qw[:, 0, None] ^ p.db_words[None, :, 0]).astype(dtype)
    for w in range(1, qw.shape[1]):
        out += np.bitwise_count(qw[:, w, None] ^ p.db_words[None, :, w]).astype(dtype)
    return out


def _relevance(p: _Problem, rows: slice) -> np.ndarray:
    return shares_label(p.q_labels[rows], p.db_labels)


def _blocks(n_query: int, n_db: int, memory_mb: float) -> list[slice]:
    size = max(1, int(memory_mb * 2**20 // (_BYTES_PER_PAIR * max(n_db, 1))))
    return [slice(i, min(i + size, n_query)) for i in range(0, n_query, size)]


def _map_blocks(fn, p: _Problem, memory_mb: float, n_jobs: int | None) -> Iterator:
    n_jobs = n_jobs or os.cpu_count() or 1
    # each thread holds one block: split the budget between them
    blocks = _blocks(p.q_words.shape[0], p.n_db, memory_mb / n_jobs)
    if n_jobs == 1 or len(blocks) == 1:
        yield from map(fn, blocks)
        return
    with ThreadPoolExecutor(n_jobs) as pool:
        yield from pool.map(fn, blocks)


def _mean_over_queries(fn, p: _Problem, memory_mb: float, n_jobs: int | None) -> np.ndarray:
    """Mean over queries of per-query values computed blockwise (independent of the blocking)."""
    return np.concatenate(list(_map_blocks(fn, p, memory_mb, n_jobs))).mean(axis=0)


def _ranked_relevance(p: _Problem, rows: slice, depth: int) -> np.ndarray:
    """Relevance of the top ``depth`` items of each query, in stable Hamming order."""
    dist = _distances(p, rows)
    rel = _relevance(p, rows)
    # radix sort on small unsigned integers: O(n) per row, stable (ties in database order)
    order = np.argsort(dist, axis=1, kind="stable")[:, :depth]
    return np.take_along_axis(rel, order, axis=1)


def _average_precision(rel_sorted: np.ndarray, topk: int) -> np.ndarray:
    """AP@topk per row of a ranked relevance matrix."""
    r = rel_sorted[:, :topk]
    cum = np.cumsum(r, axis=1, dtype=np.int32)
    rows, cols = np.nonzero(r)
    prec = cum[rows, cols] / (cols + 1.0)
    total = np.bincount(rows, weights=prec, minlength=len(r))
    n_rel = cum[:, -1] if r.shape[1] else np.zeros(len(r), np.int32)
    return np.divide(total, n_rel, out=np.zeros(len(r)), where=n_rel > 0)


def _topks(topk: int | None | Sequence[int | None], n_db: int) -> list[int]:
    ks = list(topk) if isinstance(topk, (list, tuple)) else [topk]
    out = []
    for k in ks:
        if k is not None and k <= 0:
            raise CodesError(f"topk must be positive or None, got {k}")
        out.append(n_db if k is None else min(int(k), n_db))
    return out


def mean_average_precision(
    query_codes: Any,
    db_codes: Any,
    query_labels: Any,
    db_labels: Any,
    topk: int | None = None,
    *,
    memory_mb: float = 512,
    n_jobs: int | None = None,
) -> float:
    """mAP@topk over Hamming ranking (``topk=None``: the whole database)."""
    p = _problem(query_codes, db_codes, query_labels, db_labels)
    (k,) = _topks(topk, p.n_db)
    block = lambda rows: _average_precision(_ranked_relevance(p, rows, k), k)
    return float(_mean_over_queries(block, p, memory_mb, n_jobs))


def precision_at_k(
    query_codes: Any,
    db_codes: Any,
    query_labels: Any,
    db_labels: Any,
    ks: int | Sequence[int] = (1, 10, 100, 1000),
    *,
    memory_mb: float = 512,
    n_jobs: int | None = None,
) -> np.ndarray | float:
    """Mean precision of the top k results for each k in ``ks`` (P@top-M); k beyond the database is clipped.
    An int ``ks`` gives one float, a sequence an array with one value per k."""
    if isinstance(ks, int | np.integer):
        return float(precision_at_k(query_codes, db_codes, query_labels, db_labels, [int(ks)], memory_mb=memory_mb,
                                    n_jobs=n_jobs)[0])  # fmt: skip
    p = _problem(query_codes, db_codes, query_labels, db_labels)
    kk = np.array(_topks(list(ks), p.n_db))
    depth = int(kk.max())

    def block(rows: slice) -> np.ndarray:
        cum = np.cumsum(_ranked_relevance(p, rows, depth), axis=1, dtype=np.int64)
        return cum[:, kk - 1] / kk

    return _mean_over_queries(block, p, memory_mb, n_jobs)


def _radius_counts(p: _Problem, rows: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query: cumulative counts of retrieved and relevant items within radius 0..K, and total relevant."""
    dist = _distances(p, rows).astype(np.int64)
    rel = _relevance(p, rows)
    nb = p.bits + 1
    flat = dist + (np.arange(dist.shape[0]) * nb)[:, None]
    size = dist.shape[0] * nb
    hits = np.bincount(flat.ravel(), minlength=size).reshape(-1, nb)
    good = np.bincount(flat[rel], minlength=size).reshape(-1, nb)
    return np.cumsum(hits, axis=1), np.cumsum(good, axis=1), rel.sum(axis=1)


def precision_recall_curve(
    query_codes: Any,
    db_codes: Any,
    query_labels: Any,
    db_labels: Any,
    *,
    memory_mb: float = 512,
    n_jobs: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at every Hamming radius r = 0..K (one point per radius), averaged over queries.

    Precision at r follows :func:`precision_at_radius` (0 for a query that retrieves nothing);
    recall at r is the fraction of the query's relevant items within r (0 for a query with none).
    """
    p = _problem(query_codes, db_codes, query_labels, db_labels)

    def block(rows: slice) -> np.ndarray:
        hits, good, n_rel = _radius_counts(p, rows)
        prec = np.divide(good, hits, out=np.zeros(hits.shape), where=hits > 0)
        rec = np.divide(good, n_rel[:, None], out=np.zeros(hits.shape), where=n_rel[:, None] > 0)
        return np.concatenate([prec, rec], axis=1)

    total = _mean_over_queries(block, p, memory_mb, n_jobs)
    return total[: p.bits + 1], total[p.bits + 1 :]


def precision_at_radius(
    query_codes: Any,
    db_codes: Any,
    query_labels: Any,
    db_labels: Any,
    radius: int = 2,
    *,
    memory_mb: float = 512,
    n_jobs: int | None = None,
) -> float:
    """Mean precision of the items within Hamming radius ``radius`` (P@H<=r); a query with none scores 0."""
    if radius < 0:
        raise CodesError(f"radius must be >= 0, got {radius}")
    precision, _ = precision_recall_curve(query_codes, db_codes, query_labels, db_labels, memory_mb=memory_mb, n_jobs=n_jobs)
    return float(precision[min(radius, len(precision) - 1)])


def evaluate_retrieval(
    query_codes: Any,
    db_codes: Any,
    query_labels: Any,
    db_labels: Any,
    topks: Sequence[int | None] = (1000, None),
    radius: int = 2,
    *,
    memory_mb: float = 512,
    n_jobs: int | None = None,
) -> dict[str, float]:
    """The standard report in one pass: ``map_at_<k>`` (``map_all`` for None) and ``p_at_h<radius>``."""
    p = _problem(query_codes, db_codes, query_labels, db_labels)
    ks = _topks(list(topks), p.n_db)
    depth = max(ks)

    def block(rows: slice) -> np.ndarray:
        ranked = _ranked_relevance(p, rows, depth)
        aps = [_average_precision(ranked, k) for k in ks]
        hits, good, _ = _radius_counts(p, rows)
        r = min(radius, p.bits)
        pr = np.divide(good[:, r], hits[:, r], out=np.zeros(len(hits)), where=hits[:, r] > 0)
        return np.stack(aps + [pr], axis=1)

    total = _mean_over_queries(block, p, memory_mb, n_jobs)
    names = ["map_all" if k is None else f"map_at_{k}" for k in topks]
    out = {n: float(v) for n, v in zip(names, total[:-1])}
    out[f"p_at_h{radius}"] = float(total[-1])
    return out


def sibling_map(query_codes: Any, db_codes: Any, query_family: Any, db_family: Any, **kw: Any) -> float | None:
    """The instance-level mAP@all: a query's relevant items are the database items of its own family (for
    ``openmoji``, the other skin tones of its base emoji). Queries with no sibling in the database are left out;
    None when no query has one."""
    qf, dbf = np.asarray(query_family), np.asarray(db_family)
    has = np.isin(qf, dbf)
    if not has.any():
        return None
    q = pack(query_codes)[np.flatnonzero(has)]
    return mean_average_precision(q, db_codes, qf[has], dbf, None, **kw)


def float_scores(
    query_features: Any,
    db_features: Any,
    query_labels: Any,
    db_labels: Any,
    topk: int = 1000,
    *,
    query_family: Any = None,
    db_family: Any = None,
    block: int = 256,
) -> dict[str, float]:
    """What :func:`score` reports, for float features ranked by cosine similarity (the training-free bar a code
    must beat): ``map_at_<topk>``, ``map_all`` and, given families, ``map_siblings``. Ties keep database order."""
    q, db = (np.asarray(to_numpy(x), np.float32) for x in (query_features, db_features))
    if q.ndim != 2 or db.ndim != 2 or q.shape[1] != db.shape[1]:
        raise CodesError(f"query features {q.shape} and database features {db.shape} are not (N, D) of one D")
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    db = db / np.maximum(np.linalg.norm(db, axis=1, keepdims=True), 1e-12)
    return ranking_scores(
        lambda rows: np.argsort(-(q[rows] @ db.T), axis=1, kind="stable"), query_labels, db_labels, topk,
        query_family=query_family, db_family=db_family, block=block,
    )  # fmt: skip


def ranking_scores(
    order_of: Any,
    query_labels: Any,
    db_labels: Any,
    topk: int = 1000,
    *,
    query_family: Any = None,
    db_family: Any = None,
    block: int = 256,
) -> dict[str, float]:
    """What :func:`score` reports, for any ranking: ``order_of(rows)`` gives, for the query positions
    ``rows``, every database position best first (``(len(rows), n_db)``, a permutation per row). Returns
    ``map_at_<topk>``, ``map_all`` and, given families, ``map_siblings`` (queries with a sibling only)."""
    ql, dl = _labels(query_labels, "query_labels"), _labels(db_labels, "db_labels")
    (k,) = _topks(topk, len(dl))

    def aps(rows: np.ndarray, qlab: np.ndarray, dlab: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(rows), block):
            r = rows[i : i + block]
            rel = np.take_along_axis(shares_label(qlab[r], dlab), np.asarray(order_of(r)), axis=1)
            out.append(np.stack([_average_precision(rel, k), _average_precision(rel, len(dl))], axis=1))
        return np.concatenate(out) if out else np.zeros((0, 2))

    every = aps(np.arange(len(ql)), ql, dl).mean(axis=0)
    result = {f"map_at_{topk}": float(every[0]), "map_all": float(every[1])}
    if query_family is not None and db_family is not None:
        qf, dbf = np.asarray(query_family), np.asarray(db_family)
        has = np.flatnonzero(np.isin(qf, dbf))
        if len(has):
            result["map_siblings"] = float(aps(has, qf, dbf)[:, 1].mean())
    return result


def score(
    query_codes: Any,
    db_codes: Any,
    query_labels: Any,
    db_labels: Any,
    topk: int = 1000,
    *,
    query_family: Any = None,
    db_family: Any = None,
    **kw: Any,
) -> dict[str, float]:
    """The headline metrics every figure of the project reports (docs/protocols.md): ``map_at_<topk>``,
    ``map_all``, for single-label data ``p_at_h2`` (precision within Hamming radius 2) and, given each item's
    family, ``map_siblings`` (:func:`sibling_map`)."""
    out = evaluate_retrieval(query_codes, db_codes, query_labels, db_labels, topks=(topk, None), radius=2, **kw)
    if np.asarray(query_labels).ndim == 2:
        out.pop("p_at_h2")
    if query_family is not None and db_family is not None:
        siblings = sibling_map(query_codes, db_codes, query_family, db_family, **kw)
        if siblings is not None:
            out["map_siblings"] = siblings
    return out
