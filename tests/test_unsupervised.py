"""The unsupervised baselines beside DistillHash: SSDH's pair thresholds, CIBHash's loss, BiHalf's layer and the
feature-similarity loss by hand, and each method training from a config without reading a label."""

import math

import numpy as np
import pytest
import torch

from hashdistill.config import load_config
from hashdistill.methods.bihalf import BiHalf, bi_half
from hashdistill.methods.cibhash import CIBHash, bernoulli_kl, nt_xent
from hashdistill.methods.distillhash.pairs import InitialPairs, half_gaussian_thresholds
from hashdistill.methods.feature_similarity import cosine_similarity_loss
from hashdistill.methods.greedyhash_unsupervised import GreedyHashUnsupervised
from hashdistill.train import train

SMALL = ["data.limit_train=400", "data.limit_query=100", "data.limit_database=1000", "model.bits=16", "schedule.epochs=3",
         "optim.batch_size=100", "model.input_size=32", "augment.views=2", "runtime.num_threads=2"]  # fmt: skip
PAIRS = {
    "ssdh": ["method.pairs.input_size=32"], "cibhash": [], "bihalf": ["method.features.input_size=32"],
    "greedyhash-unsupervised": ["method.features.input_size=32"],
}  # fmt: skip


def test_ssdh_thresholds_by_hand():
    d = torch.tensor([1.0] * 5 + [0.5, 0.75, 1.5, 2.0])
    # bins of 0.25: the fullest starts at 1.0; left half {1 x5, 0.5, 0.75}, right half {1.5, 2.0}
    sigma_l = math.sqrt((0.5**2 + 0.25**2) / 7)
    sigma_r = math.sqrt((0.5**2 + 1.0**2) / 2)
    lo, hi = half_gaussian_thresholds(d, (2.0, 1.0), width=0.25)
    assert lo == pytest.approx(1.0 - 2 * sigma_l) and hi == pytest.approx(1.0 + sigma_r)


def test_ssdh_rule_leaves_a_band_unlabelled():
    f = np.random.default_rng(0).normal(size=(300, 16))
    p = InitialPairs(f, "ssdh")
    lo, hi = p.thresholds
    lab = p.labels(torch.arange(300), torch.arange(300))
    d = 1 - p.f @ p.f.T
    assert lo < hi
    off = ~torch.eye(300, dtype=torch.bool)
    assert torch.equal(lab[off] == 1, d[off] < lo) and torch.equal(lab[off] == -1, d[off] >= hi)
    assert (lab[off] == 0).any() and (lab[off] == 1).any() and (lab[off] == -1).any()


def test_cibhash_loss_by_hand():
    z_t = torch.tensor([[0.3, -1.2, 0.8], [-0.4, 0.9, 0.1]])
    z_s = torch.tensor([[0.5, -0.7, -0.2], [-0.6, 1.1, 0.4]])
    b = [[1, -1, 1], [-1, 1, 1], [1, -1, -1], [-1, 1, 1]]  # sign(sigmoid(z) - 1/2) of t0, t1, s0, s1

    def cos(u, v):
        return sum(x * y for x, y in zip(u, v)) / 3

    total = 0.0
    for i, pos in ((0, 2), (1, 3), (2, 0), (3, 1)):
        logits = {j: cos(b[i], b[j]) / 0.3 for j in range(4) if j != i}
        total += -logits[pos] + math.log(sum(math.exp(v) for v in logits.values()))
    assert nt_xent(torch.tensor(b[:2], dtype=torch.float32), torch.tensor(b[2:], dtype=torch.float32), 0.3).item() == (
        pytest.approx(total / 4, rel=1e-5)
    )
    p, q = torch.sigmoid(z_t), torch.sigmoid(z_s)
    kl = sum(
        a * math.log(a / c) + (1 - a) * math.log((1 - a) / (1 - c)) for ra, rc in zip(p.tolist(), q.tolist()) for a, c in zip(ra, rc)
    ) / 2  # fmt: skip
    assert bernoulli_kl(p, q).item() == pytest.approx(kl, rel=1e-4)
    got = CIBHash(bits=3)(z_t, z_s, torch.arange(2))
    sym = 0.5 * (bernoulli_kl(p, q) + bernoulli_kl(q, p))
    assert got["loss"].item() == pytest.approx(total / 4 + 0.001 * sym.item(), rel=1e-5)


def test_bi_half_layer_by_hand():
    u = torch.tensor([[0.3, -2.0], [0.1, 0.5], [-0.4, 0.7], [0.2, -0.1], [0.9, 0.0]], requires_grad=True)
    b = bi_half(u, gamma=6.0)
    # each column: its two largest of five become +1 (n // 2), the other three -1, whatever their signs
    assert b.tolist() == [[1, -1], [-1, 1], [-1, 1], [-1, -1], [1, -1]]
    g = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0], [9.0, 10.0]])
    b.backward(g)
    assert torch.allclose(u.grad, g + 6.0 * (u.detach() - b) / 10)


def test_feature_similarity_loss_by_hand():
    b = torch.tensor([[1.0, 1.0, -1.0], [1.0, -1.0, -1.0], [-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [1.0, -1.0, 1.0]])
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [3.0, 4.0], [-1.0, 1.0]])

    def cos(u, v):
        return float(u @ v / (u.norm() * v.norm()))

    halves = [(0, 2), (1, 3)]  # n = 5: (i, i + 2) for i < 2; item 4 sits out
    want = sum((cos(b[i], b[j]) - cos(x[i], x[j])) ** 2 for i, j in halves) / 2
    assert cosine_similarity_loss(b, x, "halves").item() == pytest.approx(want, rel=1e-6)
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    want = sum((cos(b[i], b[j]) - cos(x[i], x[j])) ** 2 for i, j in pairs) / len(pairs)
    assert cosine_similarity_loss(b, x, "all").item() == pytest.approx(want, rel=1e-6)


def test_feature_similarity_methods_look_up_their_images_features():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]])
    z = torch.tensor([[0.5, -1.5, 0.2], [-0.3, 0.8, 1.1], [2.0, 0.1, -0.6], [-0.2, -0.9, 0.4]])
    idx = torch.tensor([3, 0, 1, 2])  # the batch's images are training images 3, 0, 1, 2
    g = GreedyHashUnsupervised(bits=3)
    g.feature_bank = bank
    got = g(z, None, idx)
    want = cosine_similarity_loss(torch.sign(z), bank[idx]) + 0.1 * ((z.abs() - 1).abs() ** 3).mean()
    assert got["loss"].item() == pytest.approx(want.item(), rel=1e-6)
    h = BiHalf(bits=3)
    h.feature_bank = bank
    assert h(z, None, idx)["loss"].item() == pytest.approx(cosine_similarity_loss(bi_half(z), bank[idx]).item(), rel=1e-6)


@pytest.mark.parametrize("name", list(PAIRS))
def test_unsupervised_baseline_trains_without_reading_labels(tmp_path, scramble_training_labels, name):
    cfg = load_config("configs/distillhash-fmnist.yaml", [f"method={name}", *SMALL, *PAIRS[name]])
    m = train(cfg, tmp_path / "a", progress=False)
    assert m["map_at_1000"] > 0.2  # chance is about 0.1
    scramble_training_labels()
    train(cfg, tmp_path / "b", progress=False)
    a, b = (torch.load(tmp_path / r / "checkpoint.pt", weights_only=True)["model"] for r in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
