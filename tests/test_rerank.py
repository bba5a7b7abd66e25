"""Searching by continuous outputs (index/rerank.py, index/asymmetric.py): the asymmetric ranking and its re-ranking
against a brute-force computation from the formulas, on a trained run's real continuous outputs; the stored-vector
file (index/vectors.py): round trip, damage, bad input."""

import itertools

import numpy as np
import pytest

from hashdistill.codes import hamming, pack, unpack
from hashdistill.errors import CodesError
from hashdistill.index import HammingIndex, VectorFile, VectorFileError, search_reranked, write_vectors
from hashdistill.index.rerank import asymmetric_scores
from hashdistill.run import Run


@pytest.fixture(scope="module")
def outputs(shapes_run):
    """The shapes run's continuous outputs (16 bits): queries and database, rounded to eighths so that every
    sum is exact in float32 and float64 alike (ties are then real ties, in both computations)."""
    run = Run.load(shapes_run)
    q, db = (np.round(run.h(s).astype(np.float64) * 8) / 8 for s in ("query", "database"))
    return q, db


def candidates(q, db, i):
    """Every database position, ranked for query ``i`` as a search ranks them: by the asymmetric score <q_i, sign(b)>
    (higher first), then the Hamming distance of the signs, then insertion order."""
    signs = np.where(db >= 0, 1.0, -1.0)
    d = hamming(pack(np.where(q[i : i + 1] >= 0, 1, -1)), pack(signs))[0]
    return sorted(range(len(db)), key=lambda j: (-float(q[i] @ signs[j]), d[j], j))


def brute(q, db, db_ids, k, depth, score):
    """Top ``depth`` by ``candidates``, then the ``k`` best by ``score(query, item)`` (higher first), ties in that
    order: computed here, from the formulas."""
    out = []
    for i in range(len(q)):
        cand = candidates(q, db, i)[:depth]
        s = [score(i, j) for j in cand]
        ranked = sorted(range(len(cand)), key=lambda r: (-s[r], r))[:k]
        out.append(([int(db_ids[cand[r]]) for r in ranked], [s[r] for r in ranked]))
    return out


def brute_expanded(q, db, db_ids, k, depth, vectors, n):
    """``brute`` for query expansion, from its formula: each query's candidates scored by cosine, its ``n`` best
    (ties in the candidates' order) added to the unit query, each times max(its cosine, 0), and the candidates
    scored again by the cosine of that sum; the ``k`` best, ties in the candidates' order. Per query, every
    admissible answer: where distinct vectors tie for the n-th place in exact arithmetic (their cosines within 1e-6),
    float32 rounding may pick any of them, so each pick gives one answer (the first: the candidates' order's)."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    out = []
    for i in range(len(q)):
        cand = candidates(q, db, i)[:depth]
        qn = q[i] / np.linalg.norm(q[i])
        first = [float(qn @ unit[j]) for j in cand]
        order = sorted(range(len(cand)), key=lambda r: (-first[r], r))
        last = first[order[min(n, len(order)) - 1]]
        sure = [r for r in order[:n] if first[r] > last + 1e-6]
        tied = [r for r in order if abs(first[r] - last) <= 1e-6]
        answers = []
        for extra in itertools.combinations(tied, min(n, len(order)) - len(sure)):
            qe = qn + sum(max(first[r], 0.0) * unit[cand[r]] for r in (*sure, *extra))
            s = [float(qe @ unit[j] / np.linalg.norm(qe)) for j in cand]
            ranked = sorted(range(len(cand)), key=lambda r: (-s[r], r))[:k]
            answers.append(([int(db_ids[cand[r]]) for r in ranked], [s[r] for r in ranked]))
        out.append(answers)
    return out


def index_of(db, ids):
    index = HammingIndex(db.shape[1], "flat")
    index.add(np.where(db >= 0, 1, -1), ids)
    return index


def test_asymmetric_scores_are_the_inner_product_with_the_stored_signs(outputs):
    q, db = outputs
    b = pack(np.where(db >= 0, 1, -1))
    cand = np.broadcast_to(b.array, (len(q), *b.array.shape))
    got = asymmetric_scores(q, cand)
    assert np.array_equal(got, (q @ unpack(b).T.astype(np.float64)).astype(np.float32))


@pytest.mark.parametrize(("k", "oversample"), [(1, 1), (5, 4), (7, 10), (60, 2)])
def test_asymmetric_reranking_equals_brute_force_ties_included(outputs, k, oversample):
    q, db = outputs
    ids = np.arange(100, 100 + len(db)) * 3  # ids that are not positions
    got_ids, got_scores, got_dist = search_reranked(index_of(db, ids), q, k, "asymmetric", oversample)
    signs = np.where(db >= 0, 1.0, -1.0)
    want = brute(q, db, ids, k, k * oversample, lambda i, j: float(q[i] @ signs[j]))
    n_ties = 0
    for i, (w_ids, w_scores) in enumerate(want):
        n = len(w_ids)
        assert got_ids[i, :n].tolist() == w_ids, i
        assert np.array_equal(got_scores[i, :n], np.float32(w_scores))
        assert (got_ids[i, n:] == -1).all() and np.isneginf(got_scores[i, n:]).all()
        n_ties += len(w_scores) - len(set(w_scores))
        d = hamming(pack(np.where(q[i : i + 1] >= 0, 1, -1)), pack(signs[(np.array(w_ids) // 3) - 100]))[0]
        assert got_dist[i, :n].tolist() == d.tolist()  # each hit's own Hamming distance
    if k * oversample >= 20:
        assert n_ties > 0  # the case was worth testing: ties of the score were broken by Hamming distance, then insertion order


@pytest.mark.parametrize("own", [True, False])
def test_stored_vector_reranking_equals_brute_force(outputs, tmp_path, own):
    """Stored vectors: the model's own outputs (``own``), or other features with the query's own (the
    backbone's, say); cosine by the formula, ties (two items with one vector) in the candidates' order."""
    q, db = outputs
    ids = np.arange(len(db)) * 2 + 1
    rng = np.random.default_rng(0)
    feats = db.copy() if own else rng.normal(size=(len(db), 24))
    feats = feats.astype(np.float16).astype(np.float64)  # as stored
    feats[7] = feats[3]
    qf = q if own else rng.normal(size=(len(q), 24))
    vf = VectorFile(write_vectors(tmp_path / "v.hdv", ids, feats))
    k, over = 6, 5
    got_ids, got_scores, _ = search_reranked(index_of(db, ids), q, k, "stored", over, vf.lookup, None if own else qf, 0)
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    cos = lambda i, j: float(np.round(qf[i] @ unit[j] / np.linalg.norm(qf[i]), 5))  # (near-ties: 1e-5)
    tied = 0
    for i, (w_ids, w_scores) in enumerate(brute(q, db, ids, k, k * over, cos)):
        assert np.allclose(got_scores[i], w_scores, atol=2e-5)
        same = got_ids[i].tolist() == w_ids
        assert same or np.allclose(np.sort(got_scores[i]), np.sort(w_scores), atol=2e-5)  # a near-tie swapped
        tied += same and 7 in w_ids and 15 in w_ids
    assert tied > 0  # the shared vector was in some query's results, its tie broken by the candidates' order


@pytest.mark.parametrize(("n", "k", "over"), [(1, 6, 5), (2, 5, 4), (10, 3, 2)])
def test_query_expansion_equals_brute_force(outputs, tmp_path, n, k, over):
    """``expand = n``: the unit query plus its n best candidates' unit vectors, each weighted by its cosine, rescores
    the candidates; against the formula computed here, and different from the plain cosine's order."""
    q, db = outputs
    ids = np.arange(len(db)) * 2 + 1
    stored = db.astype(np.float16).astype(np.float64)
    vf = VectorFile(write_vectors(tmp_path / "v.hdv", ids, stored))
    index = index_of(db, ids)
    got_ids, got_scores, _ = search_reranked(index, q, k, "stored", over, vf.lookup, None, n)
    plain = 0
    for i, answers in enumerate(brute_expanded(q, db, ids, k, k * over, stored, n)):
        plain += len(answers) == 1
        fits = [np.allclose(got_scores[i], w_scores, atol=2e-5) for _, w_scores in answers]
        assert any(fits), i
        w_ids, w_scores = answers[fits.index(True)]
        same = got_ids[i].tolist() == w_ids
        assert same or np.allclose(np.sort(got_scores[i]), np.sort(w_scores), atol=2e-5)  # a near-tie swapped
    assert plain >= len(q) // 2  # most queries had one admissible answer: the formula was tested as such
    plain_ids, _, _ = search_reranked(index, q, k, "stored", over, vf.lookup, None, 0)
    changed = (plain_ids != got_ids).any(axis=1).sum()
    assert changed > 0  # the expansion reordered some query's results
    if n == 2:  # the default
        assert np.array_equal(search_reranked(index, q, k, "stored", over, vf.lookup)[0], got_ids)


def test_code_bytes_look_up_ids_added_in_order_or_not(outputs):
    _, db = outputs
    signs = np.where(db >= 0, 1, -1)
    for ids in (np.arange(len(db)) + 5, np.random.default_rng(0).permutation(len(db)) * 7):
        index = index_of(db, ids)
        want = pack(signs).array
        got = index.code_bytes(ids[::-1].reshape(2, -1))
        assert np.array_equal(got.reshape(-1, 2), want[::-1])
        assert not index.code_bytes(np.array([-1, 10**9])).any()  # padding and unknown ids: zero bytes
        index.remove(ids[:10])
        assert np.array_equal(index.code_bytes(ids[10:]), want[10:]) and not index.code_bytes(ids[:10]).any()


def test_reranking_refuses_bad_input_in_one_line(outputs):
    q, db = outputs
    index = index_of(db, None)
    for call, match in [
        (lambda: search_reranked(index, q, 5, "fancy"), "rerank must be one of none, asymmetric, stored"),
        (lambda: search_reranked(index, q, 5, "asymmetric", 0), "oversample must be a positive integer"),
        (lambda: search_reranked(index, q, 5, "stored", 2, None, None, -1), r"expand must be an integer in 0\.\.10"),
        (lambda: search_reranked(index, q, 5, "stored", 2, None, None, 11), r"expand must be an integer in 0\.\.10"),
        (lambda: search_reranked(index, q, 5, "stored"), "rerank 'stored' needs the stored vectors"),
        (lambda: search_reranked(index, q[:, :8], 5), r"expected \(n, 16\) continuous values"),
        (lambda: search_reranked(index, np.full((1, 16), np.nan), 5), "NaN or infinite"),
    ]:
        with pytest.raises(CodesError, match=match):
            call()
    ids, scores, dist = search_reranked(index, q, 5, "none")
    plain_d, plain_ids = index.search(pack(np.where(q >= 0, 1, -1)), 5)
    assert np.array_equal(ids, plain_ids) and np.array_equal(dist, plain_d) and np.array_equal(scores, -plain_d)


def test_vector_file_round_trip_damage_and_bad_input(tmp_path):
    rng = np.random.default_rng(0)
    ids, v = np.array([2, 5, 9, 40]), rng.normal(size=(4, 10))
    path = write_vectors(tmp_path / "v.hdv", ids, v)
    vf = VectorFile(path)
    assert len(vf) == 4 and vf.dim == 10
    got = vf.lookup(np.array([[9, -1], [2, 41]]))
    assert np.allclose(got[0, 0], v[2], atol=2e-3) and np.allclose(got[1, 0], v[0], atol=2e-3)
    assert not got[0, 1].any() and not got[1, 1].any()
    data = path.read_bytes()
    for name, content, match in [
        ("cut.hdv", data[:-5], "truncated"),
        ("long.hdv", data + b"x", "trailing data"),
        ("flip.hdv", data[:100] + bytes([data[100] ^ 1]) + data[101:], "checksum mismatch"),
        ("foreign.hdv", b"PK\x03\x04" + data[4:], "not a hashdistill vector file"),
        ("version.hdv", data[:8] + (7).to_bytes(4, "little") + data[12:], "version 7"),
    ]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(VectorFileError, match=match) as e:
            VectorFile(tmp_path / name)
        assert name in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(VectorFileError, match="no such vector file"):
        VectorFile(tmp_path / "missing.hdv")
    for ids_, v_, match in [
        ([3, 2], np.ones((2, 4)), "strictly increasing"),
        ([1, 2], np.ones((3, 4)), r"expected \(2, dim\)"),
        ([1], np.array([[np.nan, 1]]), "NaN, infinite"),
        ([1], np.array([[1e6, 1]]), "float16's range"),
    ]:
        with pytest.raises(CodesError, match=match):
            write_vectors(tmp_path / "bad.hdv", ids_, v_)
    assert not (tmp_path / "bad.hdv").exists()  # nothing half written


def test_a_collection_reranks_continuous_queries_as_brute_force_does(shapes_run, outputs, tmp_path):
    """``Collection.search_codes`` with continuous outputs (what ``search_image`` passes): ranked by the asymmetric
    score (ties by Hamming distance, then id), filtered or not, within a radius or not; binary queries and
    ``rerank="none"`` keep the Hamming order; bad settings are one line."""
    from hashdistill.collection import Collection, CollectionError

    q, db = outputs
    signs = np.where(db >= 0, 1, -1).astype(np.int8)
    labels = ["even" if i % 2 == 0 else "odd" for i in range(len(db))]
    with Collection.create(tmp_path / "c.hdc", shapes_run, engine="torch") as col:
        ids = col.add_codes(signs, [f"x:{i}" for i in range(len(db))], labels)
        for where, allowed in [(None, np.ones(len(db), bool)), ({"label": "odd"}, np.arange(len(db)) % 2 == 1)]:
            got = col.search_codes(q.astype(np.float32), 4, where=where, oversample=3, rerank="asymmetric")
            sub = np.flatnonzero(allowed)
            kept = signs[sub]
            want = brute(q, db[sub], ids[sub], 4, 12, lambda i, j, kept=kept: float(q[i] @ kept[j]))
            assert [[h.id for h in hits] for hits in got] == [w for w, _ in want]
            assert [[h.score for h in hits] for hits in got] == [[pytest.approx(x) for x in s] for _, s in want]
            d = hamming(pack(np.where(q >= 0, 1, -1)), pack(kept))
            for radius, strategy in itertools.product((None, 6), ("mask", "scan")):
                got = col.search_codes(q.astype(np.float32), 40, radius, where=where, strategy=strategy, rerank="asymmetric")
                reordered = 0
                for i, hits in enumerate(got):
                    within = [j for j in candidates(q, db[sub], i) if radius is None or d[i, j] <= radius][:40]
                    assert [h.id for h in hits] == [int(ids[sub][j]) for j in within], (radius, strategy, i)
                    reordered += [d[i, j] for j in within] != sorted(d[i, j] for j in within)
                assert reordered > 0  # some query's asymmetric order is not its Hamming order
        plain = col.search_codes(np.where(q >= 0, 1, -1), 4)
        assert all(h.score is None for hits in plain for h in hits)
        assert [[h.id for h in hits] for hits in col.search_codes(q.astype(np.float32), 4, rerank="none")] == [
            [h.id for h in hits] for hits in plain
        ]
        for kw, match in [({"rerank": "cosine"}, "rerank must be one of stored, asymmetric, features, none"),
                          ({"oversample": 0}, r"oversample must be an integer in 1\.\.100"),
                          ({"expand": True}, r"expand must be an integer in 0\.\.10, got True"),
                          ({"expand": 11}, r"expand must be an integer in 0\.\.10, got 11")]:  # fmt: skip
            with pytest.raises(CollectionError, match=match):
                col.search_codes(q.astype(np.float32), 4, **kw)


def test_stored_reranking_in_a_collection_equals_brute_force_and_survives_reopen_and_removal(shapes_run, outputs, tmp_path):
    """The default ``stored`` re-ranking: the cosine of the query's output and each candidate's stored output
    (unit length, float16), or its bits over sqrt(bits) where it was added by its bits (a run's saved codes);
    ties in the candidates' order. The vectors are rows of the item table: kept through a reopen, gone with their
    item, carried by a snapshot."""
    from hashdistill.collection import Collection, CollectionError

    q, db = outputs
    n = len(db)
    signs = np.where(db >= 0, 1, -1).astype(np.int8)
    stored = (db / np.linalg.norm(db, axis=1, keepdims=True)).astype(np.float16).astype(np.float64)
    bare = np.arange(n) % 3 != 0  # two items of three added by their bits
    kept = np.where(bare[:, None], signs / np.sqrt(db.shape[1]), stored)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)

    def cosine(i, j, vectors):  # to six places: float32's precision (a real tie stays a tie in both sums)
        v = vectors[j]
        return round(float(qn[i] @ (v / np.linalg.norm(v))), 6)

    with Collection.create(tmp_path / "c.hdc", shapes_run, engine="torch") as col:
        ids = np.empty(n, np.int64)
        for j in range(0, n, 50):  # in batches, in order: ids ascend with j
            part = np.arange(j, min(j + 50, n))
            for sub in (part[bare[part]], part[~bare[part]]):
                if len(sub):
                    codes = signs[sub] if bare[sub[0]] else db[sub].astype(np.float32)
                    ids[sub] = col.add_codes(codes, [f"x:{i}" for i in sub])
        order = np.argsort(ids)  # the Hamming ties go by id
        want = brute(q, db[order], ids[order], 5, 20, lambda i, j: cosine(i, j, kept[order]))
        got = col.search_codes(q.astype(np.float32), 5, oversample=4, expand=0)  # rerank="stored": the default
        assert [[h.id for h in hits] for hits in got] == [w for w, _ in want]
        assert [[h.score for h in hits] for hits in got] == [[pytest.approx(x, abs=2e-3) for x in s] for _, s in want]
        # the default expansion (2): the query plus its two best candidates' stored outputs
        want_qe = brute_expanded(q, db[order], ids[order], 5, 20, kept[order], 2)
        got_qe = col.search_codes(q.astype(np.float32), 5, oversample=4)
        picked = []  # per query, the admissible answer its scores match (the candidates' order's where several do)
        for hits, answers in zip(got_qe, want_qe):
            fits = [a for a in answers if [h.score for h in hits] == [pytest.approx(x, abs=2e-3) for x in a[1]]]
            assert fits
            picked.append(fits[0][0])
        assert sum(a == b for a, b in zip([[h.id for h in hits] for hits in got_qe], picked)) >= 0.95 * len(q)
        assert [[h.id for h in hits] for hits in got_qe] != [w for w, _ in want]  # not the plain cosine's order
        found = np.isin(ids, [h.id for hits in got for h in hits])
        assert found[bare].any() and found[~bare].any()  # both kinds of item are among the results
        # more like these items: by each one's code, rescored with its stored output (its bits where none)
        some = np.array([0, 1, 2, 7, 8])
        assert bare[some].any() and (~bare[some]).any()
        qv = kept[some]
        qvn = qv / np.linalg.norm(qv, axis=1, keepdims=True)
        want_items = brute(qv, db[order], ids[order], 5, 20,
                           lambda i, j: round(float(qvn[i] @ (kept[order][j] / np.linalg.norm(kept[order][j]))), 6))  # fmt: skip
        got_items = col.search_items(ids[some], 5, oversample=4, expand=0)
        assert [[h.id for h in hits] for hits in got_items] == [w for w, _ in want_items]
        assert all(hits[0].distance == 0 for hits in got_items)
        with pytest.raises(CollectionError, match="no item 99999"):
            col.search_items([int(ids[0]), 99999])
        col.flush()  # the file as the table is now; kept to stand for a stale one below
        stale = (tmp_path / "c.hdc" / "vectors.hdv").read_bytes()
        drop = ids[order][::4]
        col.remove(drop)
        col.snapshot(tmp_path / "snap")
    vector_file = tmp_path / "c.hdc" / "vectors.hdv"
    vector_file.write_bytes(stale)  # from before the removal: its header's table state is not the table's
    written = vector_file.stat().st_mtime_ns
    alive = ~np.isin(ids[order], drop)
    want = brute(q, db[order][alive], ids[order][alive], 5, 20, lambda i, j: cosine(i, j, kept[order][alive]))
    for step in ("reopened after the removal", "reopened unchanged", "reopened with its file damaged", "restored"):
        path = tmp_path / ("restored.hdc" if step == "restored" else "c.hdc")
        col = Collection.restore(tmp_path / "snap", path) if step == "restored" else Collection.open(path)
        with col:
            got = col.search_codes(q.astype(np.float32), 5, oversample=4, expand=0)
            assert [[h.id for h in hits] for hits in got] == [w for w, _ in want], step
        if step == "reopened after the removal":  # the table changed since the file was written: written again
            assert vector_file.stat().st_mtime_ns != written
            written = vector_file.stat().st_mtime_ns
        elif step == "reopened unchanged":  # kept as it was; then damaged
            assert vector_file.stat().st_mtime_ns == written
            data = bytearray(vector_file.read_bytes())
            data[200] ^= 1
            vector_file.write_bytes(bytes(data))
        elif step == "reopened with its file damaged":  # written again from the table
            assert len(VectorFile(vector_file)) == int((alive & ~bare[order]).sum())  # the items with a vector
    assert (tmp_path / "restored.hdc" / "vectors.hdv").is_file()  # a snapshot does not carry it: derived
    assert not (tmp_path / "snap" / "vectors.hdv").exists()


def test_an_item_table_made_before_vectors_gains_the_column_and_reranks_by_bits(shapes_run, outputs, tmp_path):
    """A collection whose item table predates stored vectors opens (the column is added), its items re-rank by
    their bits (the same order as ``asymmetric``), and items added after it carry vectors; a damaged vector is
    one line naming the table."""
    import sqlite3

    from hashdistill.collection import Collection, CollectionError

    q, db = outputs
    signs = np.where(db >= 0, 1, -1).astype(np.int8)
    with Collection.create(tmp_path / "c.hdc", shapes_run, engine="torch") as col:
        col.add_codes(signs, [f"x:{i}" for i in range(len(db))])
    con = sqlite3.connect(tmp_path / "c.hdc" / "items.sqlite")  # as a table made before this column
    con.execute("ALTER TABLE items DROP COLUMN vec")
    con.commit()
    con.close()
    with Collection.open(tmp_path / "c.hdc") as col:
        by_stored = col.search_codes(q.astype(np.float32), 5, oversample=4, expand=0)
        by_bits = col.search_codes(q.astype(np.float32), 5, oversample=4, rerank="asymmetric")
        assert [[h.id for h in hits] for hits in by_stored] == [[h.id for h in hits] for hits in by_bits]
        norm = np.linalg.norm(q, axis=1) * np.sqrt(db.shape[1])
        for hits_s, hits_b, n in zip(by_stored, by_bits, norm):
            assert [h.score for h in hits_s] == [pytest.approx(h.score / n, abs=1e-5) for h in hits_b]
        (new,) = col.add_codes(db[:1].astype(np.float32) * 3, ["x:new"])
        vec, has = col.vectors.lookup(np.array([int(new), 1]))
        assert has.tolist() == [True, False]
        assert np.linalg.norm(vec[0]) == pytest.approx(1, abs=1e-3)
        with pytest.raises(CollectionError, match="NaN or infinite"):
            col.add_codes(np.full((1, db.shape[1]), np.nan, np.float32), ["x:nan"])
    con = sqlite3.connect(tmp_path / "c.hdc" / "items.sqlite")
    con.execute("UPDATE items SET vec = x'0000' WHERE id = ?", (int(new),))
    con.commit()
    con.close()
    (tmp_path / "c.hdc" / "vectors.hdv").unlink()
    with pytest.raises(CollectionError, match=r"items\.sqlite: a stored vector \(vec\) is not 16 float16 values"):
        Collection.open(tmp_path / "c.hdc")  # the vector file is derived from the table at open


def test_a_collection_that_cannot_write_its_vector_file_keeps_the_vectors_in_memory(shapes_run, outputs, tmp_path, monkeypatch):
    """A folder that cannot be written (a read-only volume: root ignores file modes, so the write is made to
    fail) re-ranks by the same stored vectors, held in memory."""
    import hashdistill.collection.vectors as stored_vectors
    from hashdistill.collection import Collection

    q, db = outputs
    with Collection.create(tmp_path / "c.hdc", shapes_run, engine="torch") as col:
        col.add_codes(db.astype(np.float32), [f"x:{i}" for i in range(len(db))])
        want = col.search_codes(q.astype(np.float32), 5)
    (tmp_path / "c.hdc" / "vectors.hdv").unlink()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(stored_vectors, "write_vectors", refuse)
    with Collection.open(tmp_path / "c.hdc") as col:
        got = col.search_codes(q.astype(np.float32), 5)
    assert not (tmp_path / "c.hdc" / "vectors.hdv").exists()
    assert [[(h.id, h.score) for h in hits] for hits in got] == [[(h.id, h.score) for h in hits] for hits in want]
    assert all(h.score is not None for hits in got for h in hits)


def test_added_vectors_are_flushed_into_the_file_at_a_bound_and_at_close(shapes_run, outputs, tmp_path):
    """The vectors of items added since open are held in memory until ``flush_rows`` of them are pending (then
    the file is written again from the table: memory stays bounded) and when the collection closes (the next
    open maps the file as it is); the search before and after a flush, and after a reopen, is the same."""
    from hashdistill.collection import Collection
    from hashdistill.collection.vectors import StoredVectors
    from hashdistill.index.vectors import VectorFile

    q, db = outputs
    vector_file = tmp_path / "c.hdc" / "vectors.hdv"
    with Collection.create(tmp_path / "c.hdc", shapes_run, engine="torch") as col:
        col.vectors = StoredVectors(col.path, col.store, col.bits, flush_rows=40)
        assert len(VectorFile(vector_file)) == 0
        first = col.add_codes(db[:30].astype(np.float32), [f"x:{i}" for i in range(30)])
        assert col.vectors.pending == 30 and len(VectorFile(vector_file)) == 0
        before = col.search_codes(q.astype(np.float32), 5)
        col.add_codes(db[30:45].astype(np.float32), [f"x:{i}" for i in range(30, 45)])  # 45 >= 40: flushed
        assert col.vectors.pending == 0 and len(VectorFile(vector_file)) == 45
        assert col.remove(first[:2]) == 2
        col.add_codes(db[45:].astype(np.float32), [f"x:{i}" for i in range(45, len(db))])
        assert col.vectors.pending == len(db) - 45 < 40
        after = col.search_codes(q.astype(np.float32), 5)
    assert len(VectorFile(vector_file)) == len(db) - 2  # written at close, without the removed items
    written = vector_file.stat().st_mtime_ns
    with Collection.open(tmp_path / "c.hdc") as col:
        assert col.vectors.pending == 0
        reopened = col.search_codes(q.astype(np.float32), 5)
    assert vector_file.stat().st_mtime_ns == written  # mapped as it was, not written again
    assert [[(h.id, h.score) for h in hits] for hits in reopened] == [[(h.id, h.score) for h in hits] for hits in after]
    assert before != after  # (the later items change the results: the comparison above is not vacuous)


def test_features_reranking_in_a_collection_equals_brute_force_and_survives_reopen(shapes_run, shapes, tmp_path):
    """A collection made with ``features=True`` stores each image's backbone features (the run's backbone on
    the clean view; unit length, float16) beside its output: ``rerank="features"`` rescores the top
    ``oversample x k`` by Hamming distance by their cosine with the query's features, ties in the Hamming
    order; items added by their codes alone come after, unscored. Kept through a reopen and a snapshot."""
    import torch

    from hashdistill.collection import Collection, CollectionError
    from hashdistill.data.lists import read_images

    run = Run.load(shapes_run)
    lists = [read_images(shapes / s).at_size(run.load_size) for s in ("database", "query")]  # as a collection reads
    db_img, q_img = (lst[np.arange(len(lst))] for lst in lists)
    with torch.inference_mode():  # the features, from the definition: the backbone over the clean view
        f_db, f_q = (run.model.features(run.clean(torch.from_numpy(x).permute(0, 3, 1, 2))).numpy() for x in (db_img, q_img))
    h_db, h_q = run.encode(db_img), run.encode(q_img)
    stored = (f_db / np.linalg.norm(f_db, axis=1, keepdims=True)).astype(np.float16).astype(np.float64)

    def cosine(fq, i, j):
        return float(fq[i] @ stored[j]) / float(np.linalg.norm(fq[i]) * np.linalg.norm(stored[j]))

    with Collection.create(tmp_path / "f.hdc", shapes_run, engine="torch", features=True) as col:
        assert col.feature_dim == f_db.shape[1] == run.model.feature_dim and col.stats()["features"] == col.feature_dim
        ids = col.add(shapes / "database")
        assert np.array_equal(ids, np.sort(ids))
        want = brute(h_q, h_db, ids, 5, 20, lambda i, j: cosine(f_q, i, j))
        got = col.search(q_img, 5, rerank="features", oversample=4)
        assert [[h.id for h in hits] for hits in got] == [w for w, _ in want]
        assert [[h.score for h in hits] for hits in got] == [[pytest.approx(x, abs=2e-3) for x in s] for _, s in want]
        assert [[h.id for h in hits] for hits in got] != [[h.id for h in hits] for hits in col.search(q_img, 5, oversample=4)]
        # more like these items: by each one's code, rescored with its stored features
        want_items = brute(h_db[:4], h_db, ids, 5, 20, lambda i, j: cosine(stored, i, j))
        got_items = col.search_items(ids[:4], 5, rerank="features", oversample=4)
        assert [[h.id for h in hits] for hits in got_items] == [w for w, _ in want_items]
        # an item added by its output alone has no features: after those with, unscored; refused as a query
        (extra,) = col.add_codes(h_db[:1], ["x:0"])  # the same code as the first database image
        hits = col.search_codes(h_db[:1], len(ids) + 1, rerank="features", oversample=1, features=f_db[:1])[0]
        assert hits[-1].id == extra and hits[-1].score is None and all(h.score is not None for h in hits[:-1])
        with pytest.raises(CollectionError, match=f"item {extra} has no stored features"):
            col.search_items([extra], 5, rerank="features")
        for call, match in [
            (lambda: col.search_codes(h_q, 5, rerank="features"), "needs the queries' backbone features"),
            (lambda: col.search_codes(h_q, 5, rerank="features", features=f_q[:, :3]), r"features must be 18 rows of \d+"),
            (lambda: col.add_codes(h_db[:2], ["a", "b"], features=np.full((2, col.feature_dim), np.nan)), "finite"),
        ]:  # fmt: skip
            with pytest.raises(CollectionError, match=match):
                call()
        col.remove([extra])
        col.snapshot(tmp_path / "snap")
    feature_file = tmp_path / "f.hdc" / "features.hdv"
    assert len(VectorFile(feature_file)) == len(ids)  # written at close: the removed item gone
    written = feature_file.stat().st_mtime_ns
    for path, restore in ((tmp_path / "f.hdc", False), (tmp_path / "restored.hdc", True)):
        col = Collection.restore(tmp_path / "snap", path) if restore else Collection.open(path)
        with col:
            got = col.search(q_img, 5, rerank="features", oversample=4)
            assert [[h.id for h in hits] for hits in got] == [w for w, _ in want]
    assert feature_file.stat().st_mtime_ns == written  # mapped as it was
    assert (tmp_path / "restored.hdc" / "features.hdv").is_file() and not (tmp_path / "snap" / "features.hdv").exists()
    with Collection.create(tmp_path / "plain.hdc", shapes_run, engine="torch") as plain:
        plain.add(shapes / "query")
        with pytest.raises(CollectionError, match="stores no features"):
            plain.search(q_img[:1], 5, rerank="features")
        with pytest.raises(CollectionError, match="stores none"):
            plain.add_codes(h_db[:1], ["x"], features=f_db[:1])


def test_an_onnx_collection_gives_the_backbone_features_torch_gives(shapes_run, shapes, tmp_path):
    """The ONNX export of a collection made with ``features=True`` has a second output, the features, checked
    against torch when it is written; one without it (an older export) cannot open a collection storing them."""
    from hashdistill.collection import Collection, CollectionError
    from hashdistill.data.lists import read_images

    run = Run.load(shapes_run)
    lst = read_images(shapes / "query").at_size(run.load_size)
    q_img = lst[np.arange(len(lst))]
    want = run.encode(q_img, features=True)
    with Collection.create(tmp_path / "o.hdc", shapes_run, engine="onnx", features=True) as col:
        assert col.meta["engine"] == "onnx" and col.encoder.features == run.model.feature_dim
        got = col.encode_arrays(q_img)
        assert got.shape == (len(q_img), run.bits + run.model.feature_dim)
        np.testing.assert_allclose(got, want, atol=1e-3 * np.abs(want).max())
        col.add(shapes / "query")
        hits = col.search(q_img[:2], 3, rerank="features")
        assert [h[0].score for h in hits] == [pytest.approx(1, abs=2e-3)] * 2  # each query finds itself first
    from hashdistill.export import export_onnx

    export_onnx(run.model, run.clean, tmp_path / "o.hdc" / "model" / "model.onnx")  # without the features output
    with pytest.raises(CollectionError, match=r"stores \d+ backbone features per item, but its model gives 0"):
        Collection.open(tmp_path / "o.hdc")
