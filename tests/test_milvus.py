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


def test_filtered_search_on_a_milvus_collection_equals_brute_force(shapes_run, tmp_path):
    """A collection on Milvus Lite: filtered search by mask (a flat index over the allowed items' codes: exact,
    ties by id) and by scan (Milvus's own search, deepened until enough allowed items: the same distances)."""
    from hashdistill.codes import hamming, pack, unpack
    from hashdistill.collection import Collection
    from hashdistill.run import Run

    run = Run.load(shapes_run)
    real = unpack(run.codes("database"))  # (60, 16)
    rng = np.random.default_rng(1)
    reps = np.repeat(real, 10, axis=0)
    codes = np.where(rng.random(reps.shape) < 0.08, -reps, reps).astype(np.int8)
    names = run.data.class_names
    labels = [names[j] for j in np.repeat(run.data.split("database").labels, 10)]
    meta = [{"shop": "abcde"[i % 5]} for i in range(len(codes))]
    with Collection.create(tmp_path / "m.hdc", shapes_run, engine="torch", backend="milvus", uri=str(tmp_path / "m.db")) as col:
        ids = col.add_codes(codes, [f"x:{i}" for i in range(len(codes))], labels, metadata=meta)
        gone = ids[rng.choice(len(ids), 40, replace=False)]
        assert col.remove(gone) == 40
        keep = ~np.isin(ids, gone)
        q = codes[:5]
        d = hamming(pack(q), pack(codes))
        for spec, allowed in [({"meta.shop": {"in": ["b", "c"]}}, [m["shop"] in "bc" for m in meta]),
                              ({"label": names[0]}, [lab == names[0] for lab in labels])]:  # fmt: skip
            allowed = np.array(allowed) & keep
            want = [sorted((int(row[j]), int(ids[j])) for j in np.flatnonzero(allowed))[:12] for row in d]
            mask = col.search_codes(q, 12, where=spec, strategy="mask")
            assert [[(h.distance, h.id) for h in hits] for hits in mask] == want
            scan = col.search_codes(q, 12, where=spec, strategy="scan")
            assert [[h.distance for h in hits] for hits in scan] == [[x for x, _ in w] for w in want]
            assert all(set(h.id for h in hits) <= set(ids[allowed].tolist()) for hits in scan)
