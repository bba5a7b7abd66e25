import numpy as np
import pytest

from hashdistill.codes import hamming, pack
from hashdistill.index import HammingIndex, IndexFileError
from hashdistill.index import hamming as index_module
from hashdistill.metrics import mean_average_precision


def _brute(q, db, k):
    d = hamming(q, db)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, axis=1), order


def _tied_codes(rng, n, bits, n_distinct):
    """Few distinct codes: heavy ties, so insertion order decides."""
    pool = rng.choice([-1, 1], (n_distinct, bits)).astype(np.int8)
    return pool[rng.integers(0, n_distinct, n)]


def _clustered(rng, n, bits, n_centers=20, flip=0.1):
    c = rng.choice([-1, 1], (n_centers, bits)).astype(np.int8)[rng.integers(0, n_centers, n)]
    return np.where(rng.random((n, bits)) < flip, -c, c).astype(np.int8)


@pytest.mark.parametrize(("method", "scan"), [("flat", "kernels"), ("mih", "kernels"), ("auto", "kernels"), ("flat", "numpy")])
@pytest.mark.parametrize("bits", [8, 24, 64, 128, 256])
def test_search_is_exact_with_ties(method, bits, scan, monkeypatch):
    """Exact, ties by insertion order, whichever runs: the numba kernels, or numpy for small work (flat only)."""
    if scan == "kernels":
        monkeypatch.setattr(index_module, "NUMPY_WORK_BELOW", 0)
    rng = np.random.default_rng(bits)
    for db, q in [
        (_tied_codes(rng, 3000, bits, 40), _tied_codes(rng, 50, bits, 40)),
        (_clustered(rng, 5000, bits), _clustered(rng, 50, bits)),
        (rng.choice([-1, 1], (2000, bits)), rng.choice([-1, 1], (30, bits))),
    ]:
        index = HammingIndex(bits, method)
        index.add(db)
        for k in (1, 10, 257):
            d, ids = index.search(q, k)
            want_d, want_i = _brute(q, db, k)
            assert (d == want_d).all() and (ids == want_i).all(), (method, bits, k)


@pytest.mark.parametrize("method", ["flat", "mih", "auto"])
def test_ids_padding_packed_input_and_remove(method):
    rng = np.random.default_rng(0)
    db = _tied_codes(rng, 500, 32, 10)
    index = HammingIndex(32, method)
    ids = rng.permutation(10_000)[:500]
    index.add(pack(db[:200]), ids[:200])
    index.add(db[200:], ids[200:])
    q = db[:7]
    d, got = index.search(pack(q), 600)
    want_d, order = _brute(q, db, 500)
    assert (d[:, :500] == want_d).all() and (got[:, :500] == ids[order]).all()
    assert (d[:, 500:] == -1).all() and (got[:, 500:] == -1).all()  # fewer than k codes
    removed = index.remove(ids[::3])
    assert removed == len(ids[::3]) and index.ntotal == 500 - removed
    keep = np.ones(500, bool)
    keep[::3] = False
    d, got = index.search(q, 50)
    want_d, order = _brute(q, db[keep], 50)
    assert (d == want_d).all() and (got == ids[keep][order]).all()  # survivors keep insertion order
    with pytest.raises(ValueError, match="unique"):
        index.add(db[:1], ids[1:2])
    with pytest.raises(ValueError, match="index holds 32-bit"):
        index.search(np.ones((1, 64)), 3)
    with pytest.raises(ValueError, match="k must be"):
        index.search(q, 0)


def test_range_search_is_exact():
    rng = np.random.default_rng(1)
    db = _clustered(rng, 4000, 64)
    q = _clustered(rng, 20, 64)
    index = HammingIndex(64)
    index.add(db, np.arange(4000) + 100)
    d_all = hamming(q, db)
    for r in (0, 5, 12):
        lims, d, ids = index.range_search(q, r)
        assert lims.shape == (21,)
        for i in range(20):
            inside = np.flatnonzero(d_all[i] <= r)
            order = inside[np.argsort(d_all[i, inside], kind="stable")]
            assert (ids[lims[i] : lims[i + 1]] == order + 100).all()
            assert (d[lims[i] : lims[i + 1]] == d_all[i, order]).all()


def test_search_ranks_exactly_as_the_metric(fmnist):
    """mAP computed from the index's ranking equals hashdistill.metrics on real labels."""
    rng = np.random.default_rng(2)
    db_idx = rng.choice(fmnist.database, 3000, replace=False)
    yq, ydb = fmnist.labels[fmnist.query[:100]], fmnist.labels[db_idx]
    # codes with heavy ties: 16-bit projections of real images
    proj = rng.standard_normal((784, 16))
    code = lambda idx: np.where(fmnist.images[idx].reshape(len(idx), -1) @ proj >= 128 * proj.sum(0), 1, -1)
    q, db = code(fmnist.query[:100]), code(db_idx)
    for method in ("flat", "mih"):
        index = HammingIndex(16, method)
        index.add(db)
        for k in (100, 3000):
            _, ids = index.search(q, k)
            rel = yq[:, None] == ydb[ids]
            prec = np.cumsum(rel, 1) / np.arange(1, k + 1)
            ap = np.divide((prec * rel).sum(1), rel.sum(1), out=np.zeros(100), where=rel.sum(1) > 0)
            assert ap.mean() == pytest.approx(mean_average_precision(q, db, yq, ydb, topk=k), abs=1e-12)


def test_save_load_round_trip_and_bad_files(tmp_path):
    rng = np.random.default_rng(3)
    db = _clustered(rng, 3000, 64)
    index = HammingIndex(64, "mih")
    index.add(db, rng.permutation(3000) * 7)
    index.remove(index.ids[:5])
    path = index.save(tmp_path / "a.hidx")
    assert [p.name for p in tmp_path.iterdir()] == ["a.hidx"]  # atomic: no temp file left
    assert path.stat().st_size < 3000 * (8 + 8) + 1024  # K/8 bytes per code plus the ids
    back = HammingIndex.load(path)
    assert back.method == "mih" and back.ntotal == 2995 and (back.ids == index.ids).all()
    q = db[:10]
    for a, b in zip(index.search(q, 20), back.search(q, 20)):
        assert (a == b).all()
    data = path.read_bytes()
    (tmp_path / "trunc.hidx").write_bytes(data[:-100])
    with pytest.raises(IndexFileError, match="truncated"):
        HammingIndex.load(tmp_path / "trunc.hidx")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1
    (tmp_path / "flip.hidx").write_bytes(bytes(flipped))
    with pytest.raises(IndexFileError, match="checksum"):
        HammingIndex.load(tmp_path / "flip.hidx")
    (tmp_path / "foreign.hidx").write_bytes(b"PK\x03\x04 something else entirely")
    with pytest.raises(IndexFileError, match="not a hashdistill index"):
        HammingIndex.load(tmp_path / "foreign.hidx")
    with pytest.raises(IndexFileError, match="no such index file"):
        HammingIndex.load(tmp_path / "missing.hidx")


def test_mih_is_sublinear_on_clustered_codes():
    rng = np.random.default_rng(4)
    centers = rng.choice([-1, 1], (300, 64)).astype(np.int8)

    def draw(n):
        c = centers[rng.integers(0, 300, n)]
        return np.where(rng.random((n, 64)) < 0.1, -c, c)

    db = draw(300_000)  # 1,000 codes per cluster
    index = HammingIndex(64, "mih")
    index.add(db)
    q = draw(100)
    d, ids = index.search(q, 10)
    assert (d == _brute(q, db, 10)[0]).all()
    assert np.median(index.last_work) < 0.05 * len(db)  # codes verified per query


def test_constructor_errors():
    with pytest.raises(ValueError, match="multiple of 8"):
        HammingIndex(12)
    with pytest.raises(ValueError, match="unknown method"):
        HammingIndex(64, "ivf")
    with pytest.raises(ValueError, match="substrings"):
        HammingIndex(64, "mih", m=5)
    empty = HammingIndex(64)
    d, i = empty.search(np.ones((2, 64)), 3)
    assert (i == -1).all() and d.shape == (2, 3)


def test_auto_times_both_methods_per_k_and_keeps_the_choice_until_the_size_moves(monkeypatch):
    monkeypatch.setattr(index_module, "AUTO_FLAT_BELOW", 0)  # (time even a small index)
    rng = np.random.default_rng(3)
    index = HammingIndex(64, "auto")
    index.add(_clustered(rng, 4000, 64, n_centers=5, flip=0.02))
    timed = []
    real = HammingIndex._search

    def spy(self, qp, k, method):
        timed.append((method, len(qp), k))
        return real(self, qp, k, method)

    monkeypatch.setattr(HammingIndex, "_search", spy)
    index.search(_clustered(rng, 1, 64), 5)  # one query: the probe is 128 stored codes with a few bits flipped
    assert {m for m, n, _ in timed if n == 128} == {"flat", "mih"} and index.choice in ("flat", "mih")
    timed.clear()
    index.search(_clustered(rng, 3, 64), 7)  # the same k bucket (8): no timing
    assert timed == [(index.choice, 3, 7)]
    timed.clear()
    index.search(_clustered(rng, 3, 64), 100)  # another k: timed for it
    assert {m for m, n, k in timed if n == 128 and k == 100} == {"flat", "mih"}
    index.add(_clustered(rng, 2000, 64))  # +50%: every k is timed again
    timed.clear()
    index.search(_clustered(rng, 130, 64), 5)
    assert {m for m, n, _ in timed if n == 128} == {"flat", "mih"} and timed[-1] == (index.choice, 130, 5)


def test_auto_scans_a_small_index_in_numpy_without_timing_or_numba(monkeypatch):
    """Under AUTO_FLAT_BELOW codes ``auto`` scans without timing, and a small search runs in numpy: a one-off
    search of a small collection imports no numba (checked in a fresh interpreter)."""
    import subprocess
    import sys

    rng = np.random.default_rng(4)
    db, q = _clustered(rng, 3000, 64), _clustered(rng, 2, 64)
    index = HammingIndex(64, "auto")
    index.add(db)
    timed = []
    real = HammingIndex._search
    monkeypatch.setattr(HammingIndex, "_search", lambda self, qp, k, m: timed.append((m, len(qp))) or real(self, qp, k, m))
    d, ids = index.search(q, 10)
    want_d, want_i = _brute(q, db, 10)
    assert timed == [("flat", 2)] and index.choice == "flat" and (d == want_d).all() and (ids == want_i).all()
    code = ("import sys, numpy as np; from hashdistill.index import HammingIndex; i = HammingIndex(64, 'auto'); "
            "i.add(np.ones((5000, 64), np.int8)); i.search(np.ones((1, 64)), 3); print('numba' in sys.modules)")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_warm_up_scans_small_work_with_the_kernels(monkeypatch):
    """A cold index answers a small search in numpy; once warmed, with the kernels: the same hits."""
    rng = np.random.default_rng(5)
    db, q = _tied_codes(rng, 3000, 64, 30), _tied_codes(rng, 5, 64, 30)
    want_d, want_i = _brute(q, db, 20)
    index = HammingIndex(64, "flat")
    index.add(db)
    calls = []
    numpy_topk = index_module.smallest
    monkeypatch.setattr(index_module, "smallest", lambda *a: calls.append(1) or numpy_topk(*a))
    d, ids = index.search(q, 20)
    assert calls == [1] and (d == want_d).all() and (ids == want_i).all()
    index.warm_up()
    d, ids = index.search(q, 20)
    assert calls == [1] and (d == want_d).all() and (ids == want_i).all()  # numpy no longer ran
    empty = HammingIndex(64, "flat")
    empty.warm_up()  # nothing stored: still fine, and the first add's search scans with the kernels
    empty.add(db)
    d, ids = empty.search(q, 20)
    assert calls == [1] and (d == want_d).all() and (ids == want_i).all()
