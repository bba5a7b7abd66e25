"""Exact search by the asymmetric score <h_q, b> (index/asymmetric.py, the scan kernel in index/kernels.py) against
a brute-force ranking from the formula; the search over a Hamming-only index gives the same results."""

import numpy as np
import pytest

from hashdistill.codes import hamming, pack
from hashdistill.errors import CodesError
from hashdistill.index import HammingIndex
from hashdistill.index.asymmetric import asymmetric_search


def case(bits, n, nq, seed=0):
    """Codes with a third of them repeated (tied scores), queries whose outputs are scaled per bit, with some
    outputs exactly 0 (sign +1, weight 0) and one query of pure signs."""
    rng = np.random.default_rng(seed)
    db = rng.normal(size=(n, bits))
    db[: n // 3] = db[n // 3 : 2 * (n // 3)]
    h = (rng.normal(size=(nq, bits)) * rng.random(bits)).astype(np.float32)
    h[:, :3] = 0
    h[0] = np.where(h[0] >= 0, 1.0, -1.0)
    return np.where(db >= 0, 1, -1), h


def brute(codes, h, k):
    """Positions ranked by <h, b> (float64, higher first), then Hamming distance, then position; the top k."""
    s = h.astype(np.float64) @ codes.T.astype(np.float64)
    d = hamming(pack(np.where(h >= 0, 1, -1)), pack(codes))
    n = len(codes)
    return [sorted(range(n), key=lambda j: (-round(s[i, j], 6), d[i, j], j))[:k] for i in range(len(h))], s, d


@pytest.mark.parametrize(
    ("bits", "n", "k", "nq"),
    [(8, 600, 7, 12), (64, 3000, 10, 150), (64, 300, 500, 12), (128, 2000, 100, 12), (256, 900, 30, 12)],
)  # (64, 3000, 10, 150): numpy takes its queries in two passes
def test_asymmetric_search_equals_brute_force_in_numpy_and_in_the_kernel(bits, n, k, nq):
    codes, h = case(bits, n, nq)
    ids = np.arange(n) * 5 + 2
    cold, warm = HammingIndex(bits), HammingIndex(bits)
    for index in (cold, warm):
        index.add(codes, ids)
    warm.warm_up()
    got_cold, got_warm = cold.search_asymmetric(h, k), warm.search_asymmetric(h, k)
    assert not cold._kernels_ready  # the small search ran in numpy, the warm one in the kernel
    for a, b in zip(got_cold, got_warm):
        assert np.array_equal(a, b)  # the same floats, the same order
    scores, dist, got = got_warm
    want, s, d = brute(codes, h, k)
    kk = min(k, n)
    ties = 0
    for i in range(len(h)):
        assert got[i, :kk].tolist() == [int(ids[j]) for j in want[i]]
        assert np.allclose(scores[i, :kk], s[i, want[i]], atol=1e-4)
        assert dist[i, :kk].tolist() == d[i, want[i]].tolist()
        ties += len(want[i]) - len(set(np.round(s[i, want[i]], 6)))
    assert ties > 0  # tied scores were in the results, broken by distance, then insertion order
    assert (got[:, kk:] == -1).all() and (dist[:, kk:] == -1).all() and np.isneginf(scores[:, kk:]).all()
    hamming_order = sorted(range(n), key=lambda j: (d[0, j], j))[:kk]
    assert got[0, :kk].tolist() == [int(ids[j]) for j in hamming_order]  # a query of signs ranks as Hamming does


class HammingOnly:
    """An index that ranks by Hamming distance alone (as Milvus does): no ``search_asymmetric``."""

    def __init__(self, index):
        self.index, self.bits, self.searches = index, index.bits, []

    def __len__(self):
        return len(self.index)

    def search(self, q, k):
        self.searches.append(k)
        return self.index.search(q, k)

    def code_bytes(self, ids):
        return self.index.code_bytes(ids)


@pytest.mark.parametrize("k", [1, 10, 400])
def test_an_index_without_the_kernel_gives_the_same_results_by_widening_its_hamming_search(k):
    codes, h = case(64, 1500, 16, seed=1)
    index = HammingIndex(64)
    index.add(codes)
    slow = HammingOnly(index)
    got, want = asymmetric_search(slow, h, k), index.search_asymmetric(h, k)
    for a, b in zip(got, want):
        assert np.array_equal(a, b)
    assert (
        len(slow.searches) > 1
        and slow.searches[0] == k
        and all(b == min(2 * a, 1500) for a, b in zip(slow.searches, slow.searches[1:]))
    )


def test_asymmetric_search_refuses_bad_input_in_one_line():
    index = HammingIndex(16)
    index.add(np.ones((3, 16)))
    for h, k, match in [(np.ones((2, 8)), 3, r"expected \(n, 16\) continuous values, got shape \(2, 8\)"),
                        (np.full((1, 16), np.nan), 3, "NaN or infinite"),
                        (np.ones((1, 16)), 0, "k must be a positive integer, got 0")]:  # fmt: skip
        with pytest.raises(CodesError, match=match):
            index.search_asymmetric(h, k)
    empty = HammingIndex(16).search_asymmetric(np.ones((2, 16)), 4)
    assert (empty[2] == -1).all() and np.isneginf(empty[0]).all()
