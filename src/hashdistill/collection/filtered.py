"""Filtered search, exact: the hits are those of ranking only the items a filter allows as the unfiltered index
ranks: by (distance, id), or for continuous queries by their asymmetric score, then (distance, id)
(docs/service.md, "Metadata and filters").

Two ways, the same results (``tests/test_collection_filters.py`` checks both against brute force):

- ``mask``: the allowed items' ids from the item table and a Hamming index over just their codes, built on the
  first search with that filter and kept in step with adds and removals (``FilterCache``); a search then scans
  only the allowed items.
- ``scan``: the whole index searched for more than k, the hits the filter does not allow dropped, and the
  search repeated with twice the depth until k allowed hits are found (or the index is exhausted).

Both read the allowed ids from the item table once per filter (the ``FilterCache`` keeps them in step with
writes): most of a first search's time. Once built, the mask was faster at every fraction measured
(``benchmarks/results/filters.md``: 0.03 ms at 0.4 % of 100,000 items, 2.8 ms at all of them, against the scan's
3-5 ms), but it holds a copy of the allowed codes; ``auto`` scans for filters allowing at least ``SCAN_ABOVE``
of the items (where the mask saved under a fifth of the time) and masks the rest.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from ..codes import PackedCodes
from ..index import HammingIndex
from ..index.asymmetric import ByScore
from .metadata import Where
from .store import ItemStore

SCAN_ABOVE = 0.9  # measured: from 0.9 of the items up a mask saves under a fifth of the scan's time, for a copy of the codes
STRATEGIES = ("auto", "mask", "scan")
PerQuery = list[list[tuple[int, int]]]  # (id, distance) per query, ranked


class _Entry:
    """One filter's allowed ids (ascending) and, once a ``mask`` search needed it, their index."""

    def __init__(self, where: Where, ids: np.ndarray) -> None:
        self.where, self.ids, self.sub = where, ids, None


class FilterCache:
    """Per filter (the ``size`` most recently used), its allowed ids and their index, kept in step with the
    collection: ``added`` and ``removed`` update each entry; ``clear`` (a metadata change) drops them all."""

    def __init__(self, bits: int, size: int = 16) -> None:
        self.bits, self.size = bits, size
        self._cache: OrderedDict[str, _Entry] = OrderedDict()

    def clear(self) -> None:
        self._cache.clear()

    def added(self, store: ItemStore, ids: np.ndarray, codes: PackedCodes) -> None:
        """New items (ids above every id held): each entry gains those its filter allows."""
        for e in self._cache.values():
            hit = np.isin(ids, store.matching(e.where, among=ids))
            if hit.any():
                e.ids = np.concatenate([e.ids, ids[hit]])
                if e.sub is not None:
                    e.sub.add(PackedCodes(codes.array[hit]), ids[hit])

    def removed(self, ids: np.ndarray) -> None:
        for e in self._cache.values():
            e.ids = e.ids[~np.isin(e.ids, ids)]
            if e.sub is not None:
                e.sub.remove(ids)

    def entry(self, where: Where, store: ItemStore) -> _Entry:
        key = where.key()
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        e = self._cache[key] = _Entry(where, store.matching(where))
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return e

    def mask(self, e: _Entry, store: ItemStore, index: Any) -> HammingIndex:
        """A flat index over the allowed items' codes, in id order (built once per entry)."""
        if e.sub is None:
            e.sub = HammingIndex(self.bits, "flat")
            if len(e.ids):
                if isinstance(index, HammingIndex):  # the codes already in memory, in id order
                    codes = index.codes().array[np.isin(index.ids, e.ids, assume_unique=True)]
                else:
                    codes = store.codes_of(e.ids.tolist(), self.bits // 8).array
                e.sub.add(PackedCodes(codes), e.ids)
        return e.sub


def search_filtered(
    q: PackedCodes, k: int, radius: int | None, where: Where, cache: FilterCache, store: ItemStore, index: Any,
    strategy: str = "auto", by: ByScore | None = None,
) -> PerQuery:  # fmt: skip
    """The k nearest allowed items of each query (within ``radius`` if given), by ``strategy``; ranked by
    ``by`` (the asymmetric score of continuous queries) where given, else by Hamming distance."""
    e = cache.entry(where, store)
    allowed, n = e.ids, len(index)
    if not len(allowed) or not n:
        return [[] for _ in range(len(q))]
    if strategy == "auto":
        strategy = "scan" if len(allowed) >= SCAN_ABOVE * n else "mask"
    if strategy == "mask":
        return ranked(cache.mask(e, store, index), q, k, radius, by)
    if radius is not None:
        lims, dist, ids = index.range_search(q, int(radius))
        keep = np.isin(ids, allowed)
        hits = [list(zip(ids[a:b][keep[a:b]].tolist(), dist[a:b][keep[a:b]].tolist())) for a, b in zip(lims[:-1], lims[1:])]
        return [h[:k] for h in (by.order(hits) if by else hits)]
    want = min(k, len(allowed))
    depth = min(n, max(2 * k, int(1.2 * k * n / len(allowed)) + 1))
    while True:
        dist, ids = by.top(index, depth) if by else index.search(q, depth)
        keep = np.isin(ids, allowed) & (ids >= 0)
        if depth >= n or (keep.sum(axis=1) >= want).all():
            break
        depth = min(n, 2 * depth)
    return [list(zip(i[m][:k].tolist(), d[m][:k].tolist())) for i, d, m in zip(ids, dist, keep)]


def ranked(index: Any, q: PackedCodes, k: int, radius: int | None, by: ByScore | None = None) -> PerQuery:
    """An index's k nearest (within ``radius`` if given) as (id, distance) per query, ranked by ``by`` (the
    asymmetric score of continuous queries) where given, else by Hamming distance: a collection's unfiltered
    search, and the mask strategy's over its masked index."""
    if radius is None:
        kk = int(min(k, max(1, len(index))))  # (an empty index: one padded column, no hit)
        dist, ids = by.top(index, kk) if by else index.search(q, kk)
        return [[(int(i), int(d)) for i, d in zip(ri, rd) if i >= 0] for ri, rd in zip(ids, dist)]
    lims, dist, ids = index.range_search(q, int(radius))
    hits = [list(zip(ids[a:b].tolist(), dist[a:b].tolist())) for a, b in zip(lims[:-1], lims[1:])]
    return [h[:k] for h in (by.order(hits) if by else hits)]
