"""``HammingIndex``: exact Hamming search with faiss's shape (add, search, range_search, remove, save, load).

Results are exact and ranked by (distance, insertion order), the order ``hashdistill.metrics``
ranks by, so mAP computed from ``search`` equals the metric. Positions are insertion order;
``remove`` keeps the survivors' relative order.
"""

from __future__ import annotations

import os
import time
from math import comb
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..codes import PackedCodes, hamming, pack, to_numpy, words
from ..errors import CodesError
from ..registry import INDEX_BACKENDS
from . import storage
from .storage import INDEX_METHODS

if TYPE_CHECKING:
    from .mih import MIHTables

CALIBRATION_QUERIES = 128  # queries ``auto`` times both methods on
MIH_MARGIN = 0.95  # ``auto`` runs MIH only where it took under this fraction of the scan's time
AUTO_FLAT_BELOW = 1 << 18  # ``auto`` scans an index under this many codes without timing (at 69k codes the
# scan answered 3.5x MIH's queries per second: benchmarks/results/search.md)
NUMPY_WORK_BELOW = 1 << 22  # a scan of fewer (queries x codes) runs in numpy: a one-off search of a small
# collection never pays for importing numba and loading its kernels (about 0.4 s)


def smallest(d: np.ndarray, k: int, bits: int) -> np.ndarray:
    """Positions of each row's ``k`` smallest distances (``d``: int, 0..bits), ranked by (distance, position),
    as a full stable sort would rank them, by counting: the k-th distance from the row's histogram, then every
    position below it and the first positions at it. O(n) a row instead of a sort's O(n log n)."""
    out = np.empty((len(d), k), np.int64)
    for r, row in enumerate(d):
        t = int(np.searchsorted(np.cumsum(np.bincount(row, minlength=bits + 1)), k))  # the k-th smallest distance
        below = np.flatnonzero(row < t)
        pos = np.concatenate([below, np.flatnonzero(row == t)[: k - len(below)]])
        out[r] = pos[np.argsort(row[pos], kind="stable")]
    return out


class HammingIndex:
    """Exact k-nearest-neighbour and radius search over binary codes.

    ``method="flat"``: a vectorised scan (about K/8 bytes per code plus 8 bytes per id).
    ``method="mih"``: multi-index hashing, sub-linear on clustered codes (m tables hold a copy of
    the codes each); falls back to the scan per query where that is cheaper. ``m`` substrings are
    chosen from the code length and database size unless given. ``n_threads`` caps the threads.
    ``method="auto"``: for each k (by power-of-two buckets) times both on a sample of the queries it gets (128
    of them, or 128 stored codes with 3% of their bits flipped when a call brings fewer) and keeps MIH where it
    took under 0.95 of the scan's time, else the scan, until the index grows or shrinks by a quarter; learned
    codes that pile up at a few distances favour the scan, spread clustered codes MIH at small k. Results
    are identical whichever runs.
    """

    def __init__(
        self,
        bits: int,
        method: str = "flat",
        m: int | None = None,
        n_threads: int | None = None,
        fallback_ratio: float = 1 / 50,
    ) -> None:
        if not isinstance(bits, (int, np.integer)) or bits <= 0 or bits % 8:
            raise CodesError(f"bits must be a positive multiple of 8, got {bits!r}")
        if method not in INDEX_METHODS:
            raise CodesError(f"unknown method {method!r}; choose one of {', '.join(INDEX_METHODS)}")
        if m is not None and (m <= 0 or bits % m or (bits // m) not in (8, 16)):
            raise CodesError(f"m must split {bits} bits into substrings of 8 or 16 bits, got m={m}")
        self.bits = int(bits)
        self.method = method
        self.m = m
        self.n_threads = n_threads
        self.fallback_ratio = fallback_ratio
        self._words = (self.bits + 63) // 64
        self._planes = np.zeros((self._words, 0), np.uint64)  # word planes, capacity-grown
        self._ids = np.zeros(0, np.int64)
        self._n = 0
        self._next_id = 0
        self._mih: MIHTables | None = None
        self.last_work: np.ndarray | None = None  # codes verified per query in the last MIH search
        self._last_choice: str | None = None
        self.choices: dict[int, str] = {}  # what ``auto`` runs per k bucket, once timed
        self._chosen_at = 0  # the index's size when ``auto`` last timed
        self._cpus = os.cpu_count() or 1
        self._sorted = True  # ids held in increasing order (as a collection adds them): lookups by bisection
        self._kernels_ready = False  # once loaded (``warm_up``, or a large search), every scan runs them

    # ------------------------------------------------------------------ contents
    @property
    def ntotal(self) -> int:
        return self._n

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"HammingIndex(bits={self.bits}, method={self.method!r}, ntotal={self._n})"

    @property
    def ids(self) -> np.ndarray:
        return self._ids[: self._n].copy()

    def codes(self) -> PackedCodes:
        """The stored codes, in insertion order."""
        stored = np.ascontiguousarray(self._planes[:, : self._n].T)
        return PackedCodes(stored.view(np.uint8)[:, : self.bits // 8])

    def add(self, codes: Any, ids: Any = None) -> None:
        """Append codes (``PackedCodes``, ±1, bool or real); ``ids`` default to consecutive integers."""
        packed = pack(codes, self.bits, what="codes", holder="the index")
        n_new = len(packed)
        increasing = True
        if ids is None:
            new_ids = np.arange(self._next_id, self._next_id + n_new, dtype=np.int64)
        else:
            new_ids = np.asarray(to_numpy(ids), dtype=np.int64).reshape(-1)
            if len(new_ids) != n_new:
                raise CodesError(f"{n_new} codes but {len(new_ids)} ids")
            increasing = bool((new_ids[1:] > new_ids[:-1]).all())  # (an item table's ids: no sort to check them)
            if not increasing and len(np.unique(new_ids)) != n_new:
                raise CodesError("ids must be unique (and not already in the index)")
            if self._n and np.isin(new_ids, self._ids[: self._n]).any():
                raise CodesError("ids must be unique (and not already in the index)")
        need = self._n + n_new
        if need > self._planes.shape[1]:
            grown = np.zeros((self._words, max(need, 2 * self._planes.shape[1], 1024)), np.uint64)
            grown[:, : self._n] = self._planes[:, : self._n]
            grown_ids = np.zeros(grown.shape[1], np.int64)
            grown_ids[: self._n] = self._ids[: self._n]
            self._planes, self._ids = grown, grown_ids
        self._planes[:, self._n : need] = words(packed, self._words).T
        self._ids[self._n : need] = new_ids
        if n_new:
            self._sorted = self._sorted and increasing and (self._n == 0 or new_ids[0] > self._ids[self._n - 1])
        self._n = need
        if n_new:
            self._next_id = max(self._next_id, int(new_ids.max()) + 1)
        self._mih = None

    def remove(self, ids: Any) -> int:
        """Remove codes by id; returns how many were removed. Survivors keep their order."""
        drop = np.isin(self._ids[: self._n], np.asarray(to_numpy(ids), dtype=np.int64).reshape(-1))
        n_drop = int(drop.sum())
        if n_drop:
            keep = ~drop
            self._planes = np.ascontiguousarray(self._planes[:, : self._n][:, keep])
            self._ids = self._ids[: self._n][keep].copy()
            self._n = len(self._ids)
            self._mih = None
        return n_drop

    def code_bytes(self, ids: Any) -> np.ndarray:
        """The stored packed codes of ``ids`` (any shape) as uint8 (*ids.shape, K/8); an id not held (the -1
        of a search's padding) gives zero bytes."""
        ids = np.asarray(to_numpy(ids), np.int64)
        flat, held = ids.reshape(-1), self._ids[: self._n]
        if self._n == 0:
            return np.zeros((*ids.shape, self.bits // 8), np.uint8)
        if self._sorted:
            pos = np.minimum(np.searchsorted(held, flat), self._n - 1)
        else:  # ids added out of order: bisect a sorted copy (built per call: a rare case)
            order = np.argsort(held, kind="stable")
            pos = order[np.minimum(np.searchsorted(held[order], flat), self._n - 1)]
        found = held[pos] == flat
        out = np.ascontiguousarray(self._planes[:, pos].T).view(np.uint8)[:, : self.bits // 8]
        out[~found] = 0
        return out.reshape(*ids.shape, self.bits // 8)

    def reset(self) -> None:
        self.__init__(self.bits, self.method, self.m, self.n_threads, self.fallback_ratio)

    # ------------------------------------------------------------------ search
    def _scratch(self, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
        from . import kernels

        threads = self.n_threads or self._cpus
        n_chunks = max(1, min(n_queries, 4 * threads))
        lanes_per_word = 8 if self.bits < 256 else 4
        words = np.empty((n_chunks, kernels.BLOCK // lanes_per_word), np.uint64)
        return words, words.view(np.uint8 if self.bits < 256 else np.uint16)

    def _threads(self):
        import numba

        return _NumbaThreads(numba, self.n_threads)

    def _tables(self) -> MIHTables:
        from .mih import MIHTables, choose_substrings

        if self._mih is None:
            m, sub = (self.m, self.bits // self.m) if self.m else choose_substrings(self.bits, self._n)
            stored = np.ascontiguousarray(self._planes[:, : self._n].T)
            self._mih = MIHTables(self.codes().array, stored, sub)
        return self._mih

    def warm_up(self) -> None:
        """Load the scan's kernels now (numba, about 0.4 s): small searches, which a cold index answers in numpy
        to spare a one-off search that cost, then run them too (a 69,000-code scan: 0.03 ms instead of 0.18)."""
        if self._n:
            self._search(PackedCodes(np.zeros((1, self.bits // 8), np.uint8)), 1, "flat", force_kernels=True)
        else:  # nothing to scan yet: import them (their compiled code loads from numba's cache at the first scan)
            from . import kernels  # noqa: F401

            self._kernels_ready = True

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest codes of each query: (distances int32 (nq, k), ids int64 (nq, k)).

        Ranked by distance, ties by insertion order; -1 fills rows where the index holds fewer than k.
        """
        if not isinstance(k, (int, np.integer)) or k <= 0:
            raise CodesError(f"k must be a positive integer, got {k!r}")
        qp = pack(queries, self.bits, what="queries", holder="the index")
        nq = len(qp)
        if self._n == 0 or nq == 0:
            return np.full((nq, k), -1, np.int32), np.full((nq, k), -1, np.int64)
        kk = int(min(k, self._n))
        method = self._auto(qp, kk) if self.method == "auto" else self.method
        d, ids = self._search(qp, kk, method)
        if kk < k:
            d = np.concatenate([d, np.full((nq, k - kk), -1, np.int32)], axis=1)
            ids = np.concatenate([ids, np.full((nq, k - kk), -1, np.int64)], axis=1)
        return d, ids

    def search_asymmetric(self, h: Any, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The k best codes by the asymmetric score ``<h_q, b>`` of continuous queries ``h`` (nq, bits), exact over
        every code (``asymmetric.py``): (scores float32, Hamming distances int32, ids int64), each (nq, k), best
        first, ties by distance, then insertion order; -inf / -1 / -1 fill rows where the index holds fewer than k.
        """
        from .asymmetric import check_outputs, lower_bounds, tables, weights

        if not isinstance(k, (int, np.integer)) or k <= 0:
            raise CodesError(f"k must be a positive integer, got {k!r}")
        h = check_outputs(h, self.bits)
        nq, kk = len(h), int(min(k, self._n))
        scores = np.full((nq, k), -np.inf, np.float32)
        dist, ids = np.full((nq, k), -1, np.int32), np.full((nq, k), -1, np.int64)
        if kk == 0 or nq == 0:
            return scores, dist, ids
        qp = pack(h, self.bits)  # real values: packed by sign, sign(0) = +1
        if nq * self._n < NUMPY_WORK_BELOW and not self._kernels_ready:  # small work: numpy, no kernels to load
            t, s = tables(h)
            codes, step = self.codes(), max(1, (1 << 18) // self._n)  # queries per pass: bounded scratch memory
            p, dd = np.empty((nq, kk), np.int64), np.empty((nq, kk), np.int32)
            sc = np.empty((nq, kk))
            for a in range(0, nq, step):
                w = weights(t[a : a + step], qp.array[a : a + step], codes.array[None])
                d = hamming(qp[a : a + step], codes)
                p[a : a + step] = np.lexsort((np.broadcast_to(np.arange(self._n), w.shape), d, w), axis=-1)[:, :kk]
                sc[a : a + step] = s[a : a + step, None] - 2 * np.take_along_axis(w, p[a : a + step], 1)
                dd[a : a + step] = np.take_along_axis(d, p[a : a + step], 1)
        else:
            from . import kernels

            (t, s), low = tables(h), lower_bounds(h)
            scratch, lanes = self._scratch(nq)
            with self._threads():
                w, dd, p = kernels.asymmetric_topk(words(qp, self._words), t, low, self._planes, self._n, kk, self.bits,
                                                   scratch, lanes)  # fmt: skip
            sc = s[:, None] - 2 * w
            self._kernels_ready = True
        scores[:, :kk], dist[:, :kk], ids[:, :kk] = sc, dd, self._ids[p]
        return scores, dist, ids

    def _search(self, qp: PackedCodes, kk: int, method: str, force_kernels: bool = False) -> tuple[np.ndarray, np.ndarray]:
        small = len(qp) * self._n < NUMPY_WORK_BELOW and not (force_kernels or self._kernels_ready)
        if method == "flat" and small:
            d = hamming(qp, self.codes())  # (small work: the codes' own numpy distances)
            p = smallest(d, kk, self.bits)
            return np.take_along_axis(d, p, axis=1), self._ids[p]
        qw = words(qp, self._words)
        from . import kernels
        from .mih import mih_topk, substrings

        scratch, lanes = self._scratch(len(qp))
        with self._threads():
            if method == "mih":
                t = self._tables()
                binom = np.array([comb(t.sub_bits, s) for s in range(t.sub_bits + 1)], np.float64)
                qsub = np.ascontiguousarray(substrings(qp.array, t.sub_bits).T)
                budget = self.fallback_ratio * self._n
                d, p, self.last_work = mih_topk(
                    qw, qsub, self._planes, self._n, kk, self.bits, t.order, t.offsets, t.codes, t.sub_masks, t.masks,
                    t.mask_offsets, binom, budget, scratch, lanes,
                )  # fmt: skip
            else:
                d, p = kernels.flat_topk(qw, self._planes, self._n, kk, self.bits, scratch, lanes)
        self._kernels_ready = True
        return d, np.where(p >= 0, self._ids[np.maximum(p, 0)], -1)

    @property
    def choice(self) -> str | None:
        """What ``auto`` ran last (for reports)."""
        return self._last_choice

    def _auto(self, qp: PackedCodes, k: int) -> str:
        """``auto``'s method for this k: the faster of flat and MIH on a timed probe (MIH only when clearly
        faster), re-timed when the size moves by a quarter."""
        if self._n < AUTO_FLAT_BELOW:
            self._last_choice = "flat"
            return "flat"
        if not 0.75 * self._chosen_at <= self._n <= 1.25 * self._chosen_at:
            self.choices, self._chosen_at = {}, self._n
        bucket = 1 << (k - 1).bit_length()
        if bucket not in self.choices:
            self.choices[bucket] = self._time_both(qp, k)
        self._last_choice = self.choices[bucket]
        return self._last_choice

    def _time_both(self, qp: PackedCodes, k: int) -> str:
        rng = np.random.default_rng(self._n)
        if len(qp) >= CALIBRATION_QUERIES:  # a sample, not the first queries: batches often come sorted
            probe = qp[np.sort(rng.choice(len(qp), CALIBRATION_QUERIES, replace=False))]
        else:
            stored = self.codes().array[rng.integers(0, self._n, CALIBRATION_QUERIES)]
            probe = PackedCodes(stored ^ np.packbits(rng.random((len(stored), self.bits)) < 0.03, axis=1))
        times = {}
        for method in ("flat", "mih"):
            self._search(probe[:2], k, method)  # compile kernels, build MIH's tables: not part of the timing
            best = float("inf")
            for _ in range(2):
                t0 = time.perf_counter()
                self._search(probe, k, method)
                best = min(best, time.perf_counter() - t0)
            times[method] = best
        return "mih" if times["mih"] < MIH_MARGIN * times["flat"] else "flat"

    def range_search(self, queries: Any, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every code within ``radius``: faiss's (lims, distances, ids); query i owns [lims[i], lims[i+1]).

        Within a query, results are ranked by distance, ties by insertion order.
        """
        if not isinstance(radius, (int, np.integer)) or radius < 0:
            raise CodesError(f"radius must be a non-negative integer, got {radius!r}")
        qp = pack(queries, self.bits, what="queries", holder="the index")
        if self._n == 0 or len(qp) == 0:
            return np.zeros(len(qp) + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64)
        from . import kernels

        scratch, lanes = self._scratch(len(qp))
        with self._threads():
            lims, d, p = kernels.flat_range(
                words(qp, self._words), self._planes, self._n, int(min(radius, self.bits)), self.bits, scratch, lanes
            )
        return lims, d, self._ids[p]

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        """Write the index atomically (versioned header, checksum)."""
        header = {"bits": self.bits, "method": self.method, "m": self.m, "n": self._n, "next_id": self._next_id}
        return storage.write_index(path, header, self.codes().array, self._ids[: self._n])

    @classmethod
    def load(cls, path: str | os.PathLike, n_threads: int | None = None) -> HammingIndex:
        header, packed, ids = storage.read_index(path)
        try:
            index = cls(header["bits"], header["method"], header.get("m"), n_threads)
            index.add(PackedCodes(packed), ids)
        except ValueError as e:  # fields valid one by one, not together (m for bits, duplicate ids)
            raise storage.IndexFileError(f"{path}: damaged index ({e})") from None
        index._next_id = int(header.get("next_id", index._next_id))
        return index


class _NumbaThreads:
    """Temporarily cap numba's threads (restored afterwards)."""

    def __init__(self, numba, n: int | None) -> None:
        self.numba, self.n, self.old = numba, n, None

    def __enter__(self) -> None:
        if self.n:
            self.old = self.numba.get_num_threads()
            self.numba.set_num_threads(min(self.n, self.numba.config.NUMBA_NUM_THREADS))

    def __exit__(self, *exc: object) -> None:
        if self.old is not None:
            self.numba.set_num_threads(self.old)


@INDEX_BACKENDS.register("flat", uri=False)
def flat_backend(bits: int, options: dict[str, Any], ids: np.ndarray, codes: PackedCodes) -> HammingIndex:
    """A collection's index in memory (``auto``: flat scan or multi-index hashing, whichever is faster here),
    built from the item table's ``ids`` and packed ``codes``."""
    index = HammingIndex(bits, "auto")
    if len(ids):
        index.add(codes, ids)
    return index
