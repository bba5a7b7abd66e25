import numpy as np
import pytest
import torch

from hashdistill.codes import pack
from hashdistill.metrics import (
    evaluate_retrieval,
    mean_average_precision,
    precision_at_k,
    precision_at_radius,
    precision_recall_curve,
    score,
)

import reference as ref


def _case(seed, nq=12, ndb=60, bits=8, n_codes=6, multilabel=False, n_classes=4):
    """Few distinct codes over many items: heavy ties in Hamming distance."""
    rng = np.random.default_rng(seed)
    pool = rng.choice([-1, 1], (n_codes, bits)).astype(np.int8)
    qc, dc = pool[rng.integers(0, n_codes, nq)], pool[rng.integers(0, n_codes, ndb)]
    if multilabel:
        ql = (rng.random((nq, n_classes)) < 0.3).astype(np.uint8)
        dl = (rng.random((ndb, n_classes)) < 0.3).astype(np.uint8)
    else:
        ql, dl = rng.integers(0, n_classes, nq), rng.integers(0, n_classes, ndb)
    return qc, dc, ql, dl


def _as_lists(qc, dc, ql, dl):
    conv = (lambda y: [list(map(int, r)) for r in y]) if ql.ndim == 2 else (lambda y: [int(v) for v in y])
    return qc.tolist(), dc.tolist(), conv(ql), conv(dl)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("multilabel", [False, True])
def test_map_matches_reference_with_ties(seed, multilabel):
    qc, dc, ql, dl = _case(seed, multilabel=multilabel)
    L = _as_lists(qc, dc, ql, dl)
    for topk in (1, 5, 17, None, 1000):
        want = ref.mean_ap(*L, topk=None if topk is None else min(topk, len(dc)))
        got = mean_average_precision(qc, dc, ql, dl, topk=topk)
        assert got == pytest.approx(want, abs=1e-12), topk


@pytest.mark.parametrize("seed", range(4))
def test_packed_and_torch_inputs_agree(seed):
    qc, dc, ql, dl = _case(seed, bits=16, multilabel=seed % 2 == 1)
    base = mean_average_precision(qc, dc, ql, dl, topk=10)
    assert mean_average_precision(pack(qc), pack(dc), ql, dl, topk=10) == base
    assert mean_average_precision(torch.from_numpy(qc).float(), torch.from_numpy(dc), torch.from_numpy(ql), dl, 10) == base
    # real-valued codes are binarized by sign (0 -> +1)
    real = qc.astype(np.float32) * np.random.default_rng(seed).uniform(0.1, 2, qc.shape)
    assert mean_average_precision(real, dc, ql, dl, topk=10) == base


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("multilabel", [False, True])
def test_radius_precision_recall_and_topk_match_reference(seed, multilabel):
    qc, dc, ql, dl = _case(seed, bits=8, multilabel=multilabel)
    L = _as_lists(qc, dc, ql, dl)
    prec, rec = precision_recall_curve(qc, dc, ql, dl)
    assert len(prec) == len(rec) == 9
    for r in range(9):
        want_p = np.mean([ref.precision_radius(q, l, L[1], L[3], r) for q, l in zip(L[0], L[2])])
        want_r = np.mean([ref.recall_radius(q, l, L[1], L[3], r) for q, l in zip(L[0], L[2])])
        assert prec[r] == pytest.approx(want_p, abs=1e-12)
        assert rec[r] == pytest.approx(want_r, abs=1e-12)
        assert precision_at_radius(qc, dc, ql, dl, radius=r) == pytest.approx(want_p, abs=1e-12)
    assert rec[-1] == pytest.approx(np.mean([any(ref._relevant(l, d) for d in L[3]) for l in L[2]]))
    ks = [1, 3, 10, 60, 100]
    got = precision_at_k(qc, dc, ql, dl, ks)
    for k, g in zip(ks, got):
        want = np.mean([ref.precision_top(q, l, L[1], L[3], k) for q, l in zip(L[0], L[2])])
        assert g == pytest.approx(want, abs=1e-12)


def test_hand_computed_example():
    # database distances to the query: [0, 1, 1, 0, 2]; stable order: 0, 3, 1, 2, 4
    q = np.array([[1, 1, 1, 1, 1, 1, 1, 1]])
    db = np.array([
        [1, 1, 1, 1, 1, 1, 1, 1],
        [-1, 1, 1, 1, 1, 1, 1, 1],
        [1, -1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1, 1, 1],
        [-1, -1, 1, 1, 1, 1, 1, 1],
    ])  # fmt: skip
    ql, dl = np.array([0]), np.array([1, 0, 1, 0, 0])
    # ranked relevance 0, 1, 1, 0, 1 -> precisions at hits 1/2, 2/3, 3/5
    assert mean_average_precision(q, db, ql, dl) == pytest.approx((1 / 2 + 2 / 3 + 3 / 5) / 3)
    assert mean_average_precision(q, db, ql, dl, topk=2) == pytest.approx(1 / 2)
    assert mean_average_precision(q, db, ql, dl, topk=1) == 0.0  # no relevant item in the top 1
    assert precision_at_radius(q, db, ql, dl, radius=0) == pytest.approx(1 / 2)
    assert precision_at_radius(q, db, ql, dl, radius=1) == pytest.approx(2 / 4)
    none = mean_average_precision(q, db, np.array([7]), dl)
    assert none == 0.0


def test_blocking_and_threads_do_not_change_results():
    qc, dc, ql, dl = _case(3, nq=97, ndb=400, bits=24, n_codes=30)
    one = evaluate_retrieval(qc, dc, ql, dl, topks=(10, None), n_jobs=1)
    many = evaluate_retrieval(qc, dc, ql, dl, topks=(10, None), n_jobs=2, memory_mb=0.05)
    assert one == many
    assert one["map_at_10"] == mean_average_precision(qc, dc, ql, dl, topk=10)
    assert one["p_at_h2"] == precision_at_radius(qc, dc, ql, dl, 2)


def test_bad_inputs_fail_clearly():
    qc, dc, ql, dl = _case(0)
    with pytest.raises(ValueError, match="bits"):
        mean_average_precision(qc, dc[:, :4], ql, dl)
    with pytest.raises(ValueError, match="query labels"):
        mean_average_precision(qc, dc, ql[:-1], dl)
    with pytest.raises(ValueError, match="multiple of 8"):
        mean_average_precision(qc[:, :6], dc[:, :6], ql, dl)
    with pytest.raises(ValueError, match="topk"):
        mean_average_precision(qc, dc, ql, dl, topk=0)


def test_full_protocol_size_random_codes_score_the_base_rate(fmnist):
    """fmnist-1k at full size (1,000 x 69,000, blockwise and threaded): random codes score about the 10% base
    rate (the time it takes is measured by benchmarks/metrics_speed.py, not asserted here)."""
    rng = np.random.default_rng(0)
    q = rng.choice([-1, 1], (1000, 64)).astype(np.int8)
    db = rng.choice([-1, 1], (69000, 64)).astype(np.int8)
    out = evaluate_retrieval(q, db, fmnist.labels[fmnist.query], fmnist.labels[fmnist.database])
    assert 0.08 < out["map_all"] < 0.12 and 0.08 < out["map_at_1000"] < 0.12


def test_score_is_the_headline_metrics_of_every_figure():
    """``score``: mAP@K, mAP@all and (single-label only) P@H<=2, checked against the slow reference loops."""
    qc, dc, ql, dl = _case(3)
    got = score(qc, dc, ql, dl, topk=50)
    L = _as_lists(qc, dc, ql, dl)
    p_h2 = np.mean([ref.precision_radius(q, y, L[1], L[3], 2) for q, y in zip(L[0], L[2])])
    assert set(got) == {"map_at_50", "map_all", "p_at_h2"}
    assert got["map_at_50"] == pytest.approx(ref.mean_ap(*L, topk=50), abs=1e-12)
    assert got["map_all"] == pytest.approx(ref.mean_ap(*L), abs=1e-12) and got["p_at_h2"] == pytest.approx(p_h2, abs=1e-12)
    multi_q = np.eye(4, dtype=np.uint8)[ql % 4]
    multi_d = np.eye(4, dtype=np.uint8)[dl % 4]
    assert set(score(qc, dc, multi_q, multi_d, topk=50)) == {"map_at_50", "map_all"}
