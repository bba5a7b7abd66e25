import numpy as np
import pytest

from hashdistill.metrics import mean_average_precision
from hashdistill.shallow import ITQ, KSH, LSH, PCAH, PCARR, SDH, SH, SHALLOW_METHODS, create_hasher

FAST = {"ksh": {"n_labeled": 600, "n_anchors": 100}, "sdh": {"n_anchors": 300}}


def _map(h, d, k=100):
    return mean_average_precision(h.encode(d["Xq"]), h.encode(d["Xdb"]), d["yq"], d["ydb"], topk=k)


@pytest.mark.parametrize("name", list(SHALLOW_METHODS))
def test_fit_encode_shape_determinism_and_quality(name, small_fmnist):
    d = small_fmnist
    h = create_hasher(name, n_bits=32, random_state=0, **FAST.get(name, {})).fit(d["Xtr"], d["ytr"])
    c = h.encode(d["Xq"])
    assert c.shape == (300, 32) and c.dtype == np.int8 and set(np.unique(c)) <= {-1, 1}
    again = create_hasher(name, n_bits=32, random_state=0, **FAST.get(name, {})).fit(d["Xtr"], d["ytr"])
    assert (again.encode(d["Xq"]) == c).all()
    # every method retrieves far above the 10% base rate on real Fashion-MNIST pixels
    assert _map(h, d) > 0.45
    assert h.get_params()["n_bits"] == 32 and repr(h).startswith(type(h).__name__)


def test_supervised_beat_unsupervised(small_fmnist):
    d = small_fmnist
    itq = _map(ITQ(32, random_state=0).fit(d["Xtr"]), d)
    sdh = _map(SDH(32, random_state=0, n_anchors=300).fit(d["Xtr"], d["ytr"]), d)
    lsh = _map(LSH(32, random_state=0).fit(d["Xtr"]), d)
    assert sdh > itq + 0.05 > lsh + 0.05


def test_itq_rotation_reduces_quantization_error(small_fmnist):
    X = small_fmnist["Xtr"]
    itq = ITQ(32, random_state=0).fit(X)
    V = (X - itq.mean_) @ itq.components_
    assert np.allclose(itq.rotation_.T @ itq.rotation_, np.eye(32), atol=1e-8)

    def err(R):
        VR = V @ R
        return np.linalg.norm(np.where(VR >= 0, 1, -1) - VR)

    assert err(itq.rotation_) < 0.9 * err(np.eye(32))  # PCAH's (unrotated) quantization error
    # PCA-RR: the same PCA and ITQ's starting rotation (orthogonal, random), not refined
    rr = PCARR(32, random_state=0).fit(X)
    assert np.allclose(rr.components_, itq.components_) and np.allclose(rr.rotation_.T @ rr.rotation_, np.eye(32), atol=1e-8)
    assert err(itq.rotation_) < err(rr.rotation_)


def test_sdh_multilabel(small_fmnist):
    d = small_fmnist
    y = np.eye(10)[d["ytr"]]
    y[:, 0] = np.maximum(y[:, 0], y[:, 6])  # shirts also tagged as tops: a multi-hot matrix
    h = SDH(16, random_state=0, n_anchors=200).fit(d["Xtr"], y)
    assert h.encode(d["Xq"]).shape == (300, 16)


def test_errors():
    X = np.random.default_rng(0).random((50, 10))
    for cls in (PCAH, PCARR, ITQ):
        with pytest.raises(ValueError, match="cannot make 16 bits"):
            cls(16).fit(X)
    with pytest.raises(RuntimeError, match="not fitted"):
        ITQ(8).encode(X)
    with pytest.raises(ValueError, match="needs labels"):
        SDH(8).fit(X)
    with pytest.raises(ValueError, match="n_anchors"):
        KSH(8, n_anchors=100, n_labeled=40).fit(X, np.arange(50) % 2)
    with pytest.raises(ValueError, match="features"):
        LSH(8).fit(X).encode(X[:, :5])
    with pytest.raises(ValueError, match="NaN"):
        LSH(8).fit(np.full((4, 3), np.nan))
    with pytest.raises(ValueError, match="unknown shallow method"):
        create_hasher("nope")
    with pytest.raises(ValueError, match="no parameter"):
        ITQ().set_params(bits=3)
    assert SH(24).fit(X).encode(X).shape == (50, 24)  # SH makes more bits than dimensions
