"""MilvusIndex against Milvus Lite 2.5.1 (BIN_FLAT, HAMMING): distances equal HammingIndex's."""

import numpy as np
import pytest

pytest.importorskip("milvus_lite", reason="the [milvus] extra is not installed")

from hashdistill.index import HammingIndex, MilvusIndex


@pytest.fixture(scope="module")
def milvus(tmp_path_factory):
    return MilvusIndex(str(tmp_path_factory.mktemp("milvus") / "test.db"), "codes", 64, drop_existing=True)


def test_parity_with_hamming_index(milvus, tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.choice([-1, 1], (10, 64))
    db = np.where(rng.random((3000, 64)) < 0.15, -1, 1) * centers[rng.integers(0, 10, 3000)]
    q = np.where(rng.random((20, 64)) < 0.15, -1, 1) * centers[rng.integers(0, 10, 20)]
    ids = rng.permutation(100_000)[:3000]
    milvus.add(db, ids)
    assert milvus.ntotal == 3000
    ref = HammingIndex(64)
    ref.add(db, ids)

    d, got = milvus.search(q, 25)
    want_d, want = ref.search(q, 25)
    assert (d == want_d).all()
    for i in range(len(q)):  # ids agree except in the order of codes tied at the same distance
        for dist in np.unique(want_d[i][:-1]):
            if dist < want_d[i, -1]:
                assert set(got[i][d[i] == dist]) == set(want[i][want_d[i] == dist])

    lims, rd, rid = milvus.range_search(q, 12)
    rl, rrd, rrid = ref.range_search(q, 12)
    assert (lims == rl).all() and (rd == rrd).all()
    assert all(set(rid[lims[i] : lims[i + 1]]) == set(rrid[rl[i] : rl[i + 1]]) for i in range(len(q)))

    assert milvus.remove(ids[:100]) == 100 and milvus.ntotal == 2900
    exported = HammingIndex.load(milvus.save(tmp_path / "export.hidx"))
    ref.remove(ids[:100])
    assert exported.ntotal == 2900
    assert (exported.search(q, 10)[0] == ref.search(q, 10)[0]).all()
    with pytest.raises(ValueError, match="64-bit"):
        milvus.search(np.ones((1, 32)), 3)
