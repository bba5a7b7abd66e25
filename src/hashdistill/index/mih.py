"""Exact multi-index hashing (Norouzi, Punjani & Fleet, CVPR 2012 / TPAMI 2014).

Codes are cut into m disjoint substrings of ``sub_bits`` bits; each substring indexes a table of
buckets. If two codes are within Hamming distance r, some substring is within floor(r / m)
(pigeonhole), so a query probes, for s = 0, 1, 2, ..., every bucket at substring distance s in each
table, verifies the candidates with the full distance, and stops once the k-th best distance is
below the bound on everything unseen: after substring j of round s every unseen code is at
distance >= (s + 1)(j + 1) + s(m - j - 1).

Each table keeps its own copy of the codes in bucket order, so verification reads memory
sequentially (with the round's buckets prefetched); a candidate already met in another table is
recognised from its own substring distances, so no visited set is kept. When
the bound says the remaining rounds would verify more codes than a scan costs (random, unclustered
codes), the query falls back to the flat scan: MIH is never much slower than ``flat``.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .kernels import BLOCK, _kth, popcount64, scan_topk_one


def choose_substrings(bits: int, n: int) -> tuple[int, int]:
    """(m, sub_bits): substrings of about log2(n) bits (Norouzi's rule), 8 or 16 bits each."""
    sub = 16 if (n >= 4096 and bits % 16 == 0) else 8
    return bits // sub, sub


def substrings(packed: np.ndarray, sub_bits: int) -> np.ndarray:
    """(m, n) substring values of packed codes (big-endian within each substring)."""
    if sub_bits == 8:
        return np.ascontiguousarray(packed.T.astype(np.int64))
    pairs = packed.reshape(len(packed), -1, 2).astype(np.int64)
    return np.ascontiguousarray((pairs[:, :, 0] << 8 | pairs[:, :, 1]).T)


def masks_by_weight(sub_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """All sub_bits-bit masks sorted by popcount, and the offsets of each weight."""
    masks = np.arange(1 << sub_bits, dtype=np.int64)
    weight = np.bitwise_count(masks)
    order = np.argsort(weight, kind="stable")
    offsets = np.zeros(sub_bits + 2, np.int64)
    offsets[1:] = np.cumsum(np.bincount(weight, minlength=sub_bits + 1))
    return masks[order], offsets


class MIHTables:
    """The m bucket tables of a code set (rebuilt from the codes whenever they change)."""

    def __init__(self, packed: np.ndarray, words: np.ndarray, sub_bits: int) -> None:
        n = len(packed)
        self.sub_bits = sub_bits
        subs = substrings(packed, sub_bits)  # (m, n)
        self.m = subs.shape[0]
        index_type = np.int32 if n < 2**31 else np.int64
        self.order = np.empty((self.m, n), index_type)
        self.offsets = np.empty((self.m, (1 << sub_bits) + 1), index_type)
        self.codes = np.empty((self.m, n, words.shape[1]), np.uint64)
        for j in range(self.m):
            o = np.argsort(subs[j], kind="stable")
            self.order[j] = o
            self.offsets[j, 0] = 0
            self.offsets[j, 1:] = np.cumsum(np.bincount(subs[j], minlength=1 << sub_bits))
            self.codes[j] = words[o]
        self.masks, self.mask_offsets = masks_by_weight(sub_bits)
        # sub_masks[j] selects substring j's bits in the uint64 words of a code
        byte_mask = np.zeros((self.m, words.shape[1] * 8), np.uint8)
        per = sub_bits // 8
        for j in range(self.m):
            byte_mask[j, j * per : (j + 1) * per] = 0xFF
        self.sub_masks = np.ascontiguousarray(byte_mask).view(np.uint64)
        self.nbytes = self.order.nbytes + self.offsets.nbytes + self.codes.nbytes


@intrinsic
def _prefetch(typingctx, codes, j, i):
    """``llvm.prefetch`` of codes[j, i] (read, keep in all cache levels); a hint with no effect on results."""

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        zero = context.get_constant(types.intp, 0)
        j_, i_ = (context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], signature.args[1:]))
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [j_, i_, zero])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(codes, j, i), codegen


@njit(cache=True)
def _grow(a, size):
    b = np.empty(max(2 * a.shape[0], size), a.dtype)
    b[: a.shape[0]] = a
    return b


@njit(cache=True)
def _expected(n, m, sub_bits, s_from, s_to, binom):
    """Expected candidates of rounds s_from..s_to for uniform codes: n m C(b, s) / 2^b each."""
    e = 0.0
    for s in range(s_from, min(s_to, sub_bits) + 1):
        e += n * m * binom[s] / float(1 << sub_bits)
    return e


@njit(cache=True, boundscheck=False)
def mih_topk_one(q, qsub, n, k, bits, order, offsets, codes, sub_masks, masks, mask_offsets, binom, budget,
                 hist, cand_d, cand_j, cand_i, out_d, out_p):  # fmt: skip
    """Exact top-k of one query; returns the number of codes verified, or -1 if the scan should answer.

    A candidate met in table j at round s is new unless an earlier probe already met it: a table
    j' < j where its substring distance is <= s, or j' > j where it is < s. That is computed from
    the code itself, so no visited set is kept; positions are looked up only for the final candidates.
    """
    m = order.shape[0]
    w = q.shape[0]
    sub_bits = mask_offsets.shape[0] - 2
    hist[:] = 0
    T = bits + 1  # the k-th smallest distance held (bits + 1 until k are held)
    held = 0  # candidates held with distance <= T
    nc = 0
    verified = 0
    done = False
    for s in range(sub_bits + 1):
        # fall back to the scan once the verified codes pass the budget, or, from round 2 on (when T
        # has settled), when the rounds still needed for the k-th distance T (until m(s'+1) > T)
        # would clearly pass it for uniform codes
        hopeless = s >= 2 and T <= bits and verified + _expected(n, m, sub_bits, s, T // m, binom) > 8 * budget
        if verified > budget or hopeless:
            return -1
        for j in range(m):
            base = qsub[j]
            # prefetch each bucket's first codes, so that the cache misses of this round overlap
            for mi in range(mask_offsets[s], mask_offsets[s + 1]):
                a = offsets[j, base ^ masks[mi]]
                if a < n:
                    _prefetch(codes, j, a)
            for mi in range(mask_offsets[s], mask_offsets[s + 1]):
                key = base ^ masks[mi]
                lo, hi = offsets[j, key], offsets[j, key + 1]
                verified += hi - lo
                for idx in range(lo, hi):
                    d = 0
                    for t in range(w):
                        d += popcount64(q[t] ^ codes[j, idx, t])
                    if d > T:
                        continue
                    seen = False
                    for jj in range(m):
                        if jj == j:
                            continue
                        sd = 0
                        for t in range(w):
                            sd += popcount64((q[t] ^ codes[j, idx, t]) & sub_masks[jj, t])
                        if sd < s or (jj < j and sd == s):
                            seen = True
                            break
                    if seen:
                        continue
                    if nc == cand_d.shape[0]:
                        cand_d, cand_j, cand_i = _grow(cand_d, nc + 1), _grow(cand_j, nc + 1), _grow(cand_i, nc + 1)
                    cand_d[nc], cand_j[nc], cand_i[nc] = d, j, idx
                    nc += 1
                    hist[d] += 1
                    held += 1
                    if T > bits and held >= k:  # k held: T becomes the k-th smallest distance
                        T = _kth(hist, k, bits + 1)
                        held = 0
                        for t in range(T + 1):
                            held += hist[t]
                    while held - hist[T] >= k:  # drop the T shell while k remain below it
                        held -= hist[T]
                        T -= 1
            if T <= bits and T < (s + 1) * (j + 1) + s * (m - j - 1):
                done = True
                break
        if done:
            break
    # the top k by (distance, position) among the held candidates
    keys = np.empty(nc, np.int64)
    nk = 0
    for i in range(nc):
        if cand_d[i] <= T:
            keys[nk] = cand_d[i] * (n + 1) + order[cand_j[i], cand_i[i]]
            nk += 1
    keys = np.sort(keys[:nk])
    for r in range(min(k, nk)):
        out_d[r] = keys[r] // (n + 1)
        out_p[r] = keys[r] % (n + 1)
    return verified


@njit(parallel=True, cache=True)
def mih_topk(queries, qsubs, planes, n, k, bits, order, offsets, codes, sub_masks, masks, mask_offsets, binom,
             budget, scratch, lane_scratch):  # fmt: skip
    """Top-k of every query by MIH (falling back to the scan per query); also returns codes verified."""
    nq = queries.shape[0]
    out_d = np.full((nq, k), -1, np.int32)
    out_p = np.full((nq, k), -1, np.int64)
    work = np.zeros(nq, np.int64)
    n_chunks = scratch.shape[0]
    per = (nq + n_chunks - 1) // n_chunks
    cap = k * (bits + 2)
    for c in prange(n_chunks):
        cand_d = np.empty(max(16 * k, 4096), np.int32)
        cand_j = np.empty(max(16 * k, 4096), np.int64)
        cand_i = np.empty(max(16 * k, 4096), np.int64)
        hist = np.zeros(bits + 2, np.int64)
        scan_d = np.empty(cap, np.int32)
        scan_p = np.empty(cap, np.int64)
        for qi in range(c * per, min((c + 1) * per, nq)):
            v = mih_topk_one(queries[qi], qsubs[qi], n, k, bits, order, offsets, codes, sub_masks, masks,
                             mask_offsets, binom, budget, hist, cand_d, cand_j, cand_i, out_d[qi], out_p[qi])  # fmt: skip
            if v < 0:
                scan_topk_one(queries[qi], planes, n, k, bits, scratch[c], lane_scratch[c], hist,
                              scan_d, scan_p, out_d[qi], out_p[qi])  # fmt: skip
                v = n
            work[qi] = v
    return out_d, out_p, work


__all__ = ["MIHTables", "choose_substrings", "mih_topk", "BLOCK"]
