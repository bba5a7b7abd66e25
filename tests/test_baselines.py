"""The supervised baselines' losses against hand computations, CNNH's stage 1, SdH as a switch, and every
baseline training from a config on real (small) data."""

import json
import math

import numpy as np
import pytest
import torch

from hashdistill.config import ConfigError, load_config
from hashdistill.methods import SelfDistilled, create_method
from hashdistill.methods.adsh import ADSH, pair_targets, v_step
from hashdistill.methods.cnnh import CNNH, approximate_codes
from hashdistill.methods.csq import CSQ, hash_centres, min_distance
from hashdistill.methods.dch import DCH
from hashdistill.methods.dhn import DHN
from hashdistill.methods.dnnh import DNNH
from hashdistill.methods.dpn import DPN
from hashdistill.methods.dpsh import DPSH
from hashdistill.methods.dsdh import DSDH, DSDHParams, b_w_step
from hashdistill.methods.dsh import DSH
from hashdistill.methods.dtsh import DTSH
from hashdistill.methods.greedyhash import GreedyHash
from hashdistill.methods.hashnet import HashNet
from hashdistill.methods.hyp2 import HyP2, plotkin_distance, proxy_threshold
from hashdistill.methods.orthohash import OrthoHash
from hashdistill.methods.targets import label_codes, label_indicator, random_signs
from hashdistill.train import train

BASELINES = (
    "cnnh",
    "dnnh",
    "dhn",
    "hashnet",
    "dch",
    "dpn",
    "csq",
    "dpsh",
    "dsh",
    "dtsh",
    "orthohash",
    "greedyhash",
    "adsh",
    "dsdh",
    "hyp2",
)

H = torch.tensor([[0.9, -0.4, 0.2], [0.7, -0.6, -0.1], [-0.8, 0.5, 0.3], [0.1, 0.9, -0.95]])
Y = torch.tensor([0, 0, 1, 2])
Y_MULTI = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]])


def _same(y, i, j):
    return float(y[i] == y[j]) if y.ndim == 1 else float((y[i] * y[j]).sum() > 0)


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def _cos(a, b):
    return _dot(a, b) / math.sqrt(_dot(a, a) * _dot(b, b))


def _softplus(x):
    return math.log1p(math.exp(x))


@pytest.mark.parametrize("y", [Y, Y_MULTI])
def test_dhn_by_hand(y):
    h, n = H.tolist(), len(H)
    pair = (
        sum(_softplus(0.5 * _dot(h[i], h[j])) - _same(y, i, j) * 0.5 * _dot(h[i], h[j]) for i in range(n) for j in range(n))
        / n**2
    )
    quant = sum(math.log(math.cosh(abs(v) - 1)) for row in h for v in row) / H.numel()
    got = DHN(bits=3)(H, None, y)
    assert got["loss"].item() == pytest.approx(pair + 0.1 * quant, rel=1e-5)


def _sign(v):
    return 1.0 if v > 0 else -1.0 if v < 0 else 0.0


@pytest.mark.parametrize("y", [Y, Y_MULTI])
def test_dpsh_by_hand(y):
    u, n = H.tolist(), len(H)
    pair = sum(_softplus(0.5 * _dot(u[i], u[j])) - _same(y, i, j) * 0.5 * _dot(u[i], u[j]) for i in range(n) for j in range(n))
    quant = sum((v - _sign(v)) ** 2 for row in u for v in row) / H.numel()
    assert DPSH.uses_logits
    got = DPSH(bits=3)(H, None, y)
    assert got["loss"].item() == pytest.approx(pair / n**2 + 0.1 * quant, rel=1e-5)


@pytest.mark.parametrize("y", [Y, Y_MULTI])
def test_dsh_by_hand(y):
    u, n, m = H.tolist(), len(H), 2 * 3  # the margin 2K
    total = 0.0
    for i in range(n):
        for j in range(n):
            d = sum((a - b) ** 2 for a, b in zip(u[i], u[j]))
            total += 0.5 * d if _same(y, i, j) else 0.5 * max(m - d, 0.0)
    reg = sum(abs(abs(v) - 1) for row in u for v in row) / H.numel()
    got = DSH(bits=3)(H, None, y)
    assert got["loss"].item() == pytest.approx(total / n**2 + 0.01 * reg, rel=1e-5)
    assert DSH(bits=3, margin=0.5)(H, None, y)["pair"].item() < got["pair"].item()  # a smaller margin pushes less


@pytest.mark.parametrize("y", [Y, Y_MULTI])
def test_dtsh_by_hand(y):
    u, n = H.tolist(), len(H)
    per_anchor = []
    for i in range(n):
        terms = [
            -math.log(1 / (1 + math.exp(-(_dot(u[i], u[j]) - _dot(u[i], u[k]) - 5.0))))
            for j in range(n) for k in range(n)
            if j != i and _same(y, i, j) and not _same(y, i, k)
        ]  # fmt: skip
        if terms:
            per_anchor.append(sum(terms) / len(terms))
    quant = sum((v - _sign(v)) ** 2 for row in u for v in row) / H.numel()
    assert per_anchor  # Y: anchors 0 and 1 have a positive; Y_MULTI: 0, 1, 2
    got = DTSH(bits=3)(H, None, y)
    assert got["loss"].item() == pytest.approx(sum(per_anchor) / len(per_anchor) + quant, rel=1e-5)


def test_orthohash_by_hand():
    m = OrthoHash(bits=3, n_classes=3, seed=0)
    c = m.codebook.tolist()
    u = H.tolist()
    total = 0.0
    for i in range(len(u)):
        logits = [8.0 * (_cos(u[i], c[k]) - 0.2 * (k == int(Y[i]))) for k in range(3)]
        total += -logits[int(Y[i])] + math.log(sum(math.exp(v) for v in logits))
    got = m(H, None, Y)
    assert got["loss"].item() == pytest.approx(total / len(u), rel=1e-5)
    assert set(map(abs, sum(c, []))) == {1.0}  # fixed {-1, +1} class codes, not trained
    # multi-hot: softmax cross-entropy to the normalised label vector (the released label smoothing)
    total = 0.0
    for i in range(len(u)):
        labels = Y_MULTI[i].tolist()
        logits = [8.0 * (_cos(u[i], c[k]) - 0.2 * labels[k]) for k in range(3)]
        log_z = math.log(sum(math.exp(v) for v in logits))
        total += -sum(labels[k] / sum(labels) * (logits[k] - log_z) for k in range(3))
    assert m(H, None, Y_MULTI)["loss"].item() == pytest.approx(total / len(u), rel=1e-5)


def test_greedyhash_by_hand_and_its_straight_through_gradient():
    w = torch.tensor([[0.5, -1.0, 0.2], [-0.3, 0.4, 0.9], [1.0, 0.1, -0.6]])
    u = H.tolist()
    total = 0.0
    for i in range(len(u)):
        b = [_sign(v) for v in u[i]]
        logits = [_dot(b, w[k].tolist()) for k in range(3)]
        total += -logits[int(Y[i])] + math.log(sum(math.exp(v) for v in logits))
    penalty = sum(abs(abs(v) - 1) ** 3 for row in u for v in row) / H.numel()
    h = H.clone().requires_grad_(True)
    got = GreedyHash(bits=3)(h, None, Y, w)
    assert got["loss"].item() == pytest.approx(total / len(u) + 0.1 * penalty, rel=1e-5)
    got["ce"].backward()
    # straight through: d CE / d h = d CE / d b = (softmax(b W^T) - onehot(y)) W / n
    b = torch.where(H >= 0, 1.0, -1.0)
    expected = (torch.softmax(b @ w.T, 1) - torch.nn.functional.one_hot(Y, 3)) @ w / len(u)
    assert torch.allclose(h.grad, expected, atol=1e-6)


def test_hyp2_thresholds_from_the_plotkin_bound():
    assert plotkin_distance(16, 2) == 16  # two codes: the repetition code's distance K
    assert plotkin_distance(16, 16) == 8  # 16 codes of 16 bits: a Hadamard code, distance K/2
    assert plotkin_distance(32, 4) == 21  # odd d: A(32, 21) = A(33, 22) <= 2 floor(22 / 11) = 4
    assert plotkin_distance(16, 64) is None  # more codes than 2K: the bound says nothing
    assert proxy_threshold(64, 10) == 1 - 2 * 34 / 64  # 10 classes -> 16 codes: A(64, 34) <= 2 floor(34 / 4) = 16
    assert proxy_threshold(16, 40) == 0.0


def test_hyp2_by_hand():
    p = [[0.5, -1.0, 0.2], [-0.3, 0.4, 0.9], [1.0, 0.1, -0.6], [0.2, 0.2, -0.7]]
    y = [[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 0, 0, 1]]  # items 0 and 1: multi-label, nothing shared
    u, zeta = H.tolist(), 0.1
    cos = [[_cos(u[i], p[c]) for c in range(4)] for i in range(4)]
    pos = [1 - cos[i][c] for i in range(4) for c in range(4) if y[i][c]]
    neg = [max(0.0, cos[i][c] - zeta) for i in range(4) for c in range(4) if not y[i][c]]
    pair = max(0.0, _cos(u[0], u[1]) - zeta)  # (0, 1) and (1, 0); item 2 shares a class with both
    m = HyP2(bits=3, n_classes=4, threshold=zeta)
    got = m(H, None, torch.tensor(y), torch.tensor(p))
    assert got["loss"].item() == pytest.approx(sum(pos) / len(pos) + sum(neg) / len(neg) + 0.5 * pair, rel=1e-5)
    # single labels: no multi-label pair, the proxy terms alone
    single = m(H, None, Y, torch.tensor(p[:3]))
    pos = [1 - _cos(u[i], p[int(Y[i])]) for i in range(4)]
    neg = [max(0.0, _cos(u[i], p[c]) - zeta) for i in range(4) for c in range(3) if c != int(Y[i])]
    assert single["pair"].item() == 0
    assert single["loss"].item() == pytest.approx(sum(pos) / 4 + sum(neg) / 8, rel=1e-5)


def test_adsh_by_hand():
    m = ADSH(bits=3, seed=0)
    m.labels, m.ratio = Y.numpy(), 2 / 14  # Y: 2 similar ordered pairs off the diagonal + 4 on it, 10 dissimilar
    m.v = torch.tensor([[1.0, -1, 1], [1, 1, -1], [-1, 1, 1], [-1, -1, -1]])
    idx = torch.tensor([1, 3])
    u, v = H[idx].tolist(), m.v.tolist()
    total = 0.0
    for a, i in enumerate(idx.tolist()):
        for j in range(4):
            same = _same(Y, i, j)
            target = same * (1 + 2 / 14) - 2 / 14
            total += (_dot(u[a], v[j]) - 3 * target) ** 2
        total += 200 * sum((x - w) ** 2 for x, w in zip(v[i], u[a]))
    got = m(H[idx], None, idx)
    assert got["loss"].item() == pytest.approx(total / (4 * 2), rel=1e-5)


def test_adsh_v_step_minimises_each_column_exactly():
    rng = np.random.default_rng(0)
    u = torch.as_tensor(rng.uniform(-1, 1, (4, 3)), dtype=torch.float32)
    s = pair_targets(Y.numpy(), Y.numpy(), soft=False, ratio=0.0)
    v0 = torch.tensor([[1.0, 1, 1], [-1, 1, -1], [1, -1, 1], [-1, -1, 1]])

    def objective(v):
        return float((u @ v.T - 3 * s.T).pow(2).sum() + 5.0 * (v - u).pow(2).sum())

    v1 = v_step(v0, u, s.T @ u, bits=3, gamma=5.0)
    assert objective(v1) <= objective(v0)
    # the last column is the exact minimiser over {-1, +1}^4 with the first two fixed at their new values
    best = min(
        (torch.tensor(c, dtype=torch.float32) for c in np.array(np.meshgrid(*[[-1, 1]] * 4)).T.reshape(-1, 4)),
        key=lambda c: objective(torch.cat([v1[:, :2], c[:, None]], 1)),
    )
    assert torch.equal(v1[:, 2], best)


def test_dsdh_by_hand():
    m = DSDH(bits=3, n_classes=3, seed=0)
    m.labels = Y.numpy()
    m.b = torch.tensor([[1.0, -1, 1], [1, 1, -1], [-1, 1, 1], [-1, -1, -1]])
    idx = torch.tensor([0, 1, 3])
    u, b, n = H[idx].tolist(), m.b[idx].tolist(), 3
    pair = sum(
        _softplus(0.5 * _dot(u[a], u[c])) - _same(Y[idx], a, c) * 0.5 * _dot(u[a], u[c]) for a in range(n) for c in range(n)
    )  # fmt: skip
    tie = sum((x - w) ** 2 for ru, rb in zip(u, b) for x, w in zip(ru, rb))
    got = m(H[idx], None, idx)
    assert got["loss"].item() == pytest.approx(pair / n**2 + 55 * tie / (n * 4), rel=1e-5)  # 4 training images


def test_dsdh_b_w_step_lowers_its_objective():
    p = DSDHParams(eta=5.0, dcc_iter=1)
    rng = np.random.default_rng(0)
    u = torch.as_tensor(rng.uniform(-1, 1, (6, 12)), dtype=torch.float32)  # K x n
    y = label_indicator(np.arange(12) % 3, 3).T
    b0 = torch.where(torch.as_tensor(rng.normal(size=(6, 12))) >= 0, 1.0, -1.0).float()

    def objective(b, w):
        return float(p.mu * (y - w.T @ b).pow(2).sum() + p.nu * w.pow(2).sum() + p.eta * (b - u).pow(2).sum())

    w0 = torch.linalg.solve(b0 @ b0.T + p.nu / p.mu * torch.eye(6), b0 @ y.T)  # the best W for b0
    b1, w1 = b_w_step(b0, u, y, p)
    assert set(b1.unique().tolist()) <= {-1.0, 1.0}
    assert objective(b1, w1) < objective(b0, w0)


def test_hashnet_by_hand_with_continuation():
    m = HashNet(bits=3)
    m.on_step(450)  # beta rises every 200 steps: at step 450 it is (1 + 0.005 * 400) ** 0.5
    beta, alpha = math.sqrt(3.0), 10 / 3
    assert m.beta == pytest.approx(beta)
    z = H
    h = [[math.tanh(beta * v) for v in row] for row in z.tolist()]
    n = len(h)
    s = [[_same(Y, i, j) for j in range(n)] for i in range(n)]
    n_pos = sum(map(sum, s))
    w = [[n * n / n_pos if s[i][j] else n * n / (n * n - n_pos) for j in range(n)] for i in range(n)]
    num = sum(
        w[i][j] * (_softplus(alpha * _dot(h[i], h[j])) - s[i][j] * alpha * _dot(h[i], h[j])) for i in range(n) for j in range(n)
    )
    want = num / sum(map(sum, w))
    assert m(z, None, Y)["loss"].item() == pytest.approx(want, rel=1e-5)
    assert HashNet.uses_logits  # the trainer hands it the pre-activation z


def _dch_by_hand(distance, similar_only: bool = False) -> float:
    """DCH's loss on H, Y by hand, for a pairwise distance function and either weighting."""
    h, n, k, gamma = H.tolist(), len(H), 3, 20.0
    s = [[_same(Y, i, j) for j in range(n)] for i in range(n)]
    n_pos = sum(map(sum, s))
    total = 0.0
    for i in range(n):
        for j in range(n):
            d = max(distance(h[i], h[j]), k / 2 * 0.01)
            w = n * n / n_pos if s[i][j] else (1.0 if similar_only else n * n / (n * n - n_pos))
            total += w * (s[i][j] * math.log(d / gamma) + math.log(1 + gamma / d))
    quant = sum(math.log(1 + distance([abs(v) for v in row], [1.0] * k) / gamma) for row in h) / n
    return total / n**2 + 0.1 * quant


def test_dch_by_hand():
    cosine = lambda a, b: 3 / 2 * (1 - _cos(a, b))
    assert DCH(bits=3)(H, None, Y)["loss"].item() == pytest.approx(_dch_by_hand(cosine), rel=1e-5)


def test_dnnh_by_hand():
    u = [[(v + 1) / 2 for v in row] for row in H.tolist()]
    n = len(u)
    d = [[sum((a - b) ** 2 for a, b in zip(u[i], u[j])) for j in range(n)] for i in range(n)]
    hinges = [max(0.0, 1 - (d[q][m] - d[q][p])) for q in range(n) for p in range(n) for m in range(n)
              if p != q and _same(Y, q, p) and not _same(Y, q, m)]  # fmt: skip
    got = DNNH(bits=3)(H, None, Y)
    assert len(hinges) == 4 and got["triplets"].item() == 4  # anchors 0 and 1, one positive, two negatives each
    assert got["loss"].item() == pytest.approx(sum(hinges) / len(hinges), rel=1e-5)


def test_dpn_targets_and_loss_by_hand():
    m = DPN(bits=4, n_classes=3, seed=0)
    t = m.class_targets
    assert t.shape == (3, 4) and torch.all((t == -1).sum(1) == 2)  # p = 0.5: half the bits of each target at -1
    h = torch.tensor([[0.5, -0.5, 1.0, 0.0], [0.9, 0.9, -0.9, 0.2]])
    want = sum(max(1 - v * tv, 0) for row, c in zip(h.tolist(), [2, 0]) for v, tv in zip(row, t[c].tolist())) / 8
    assert m(h, None, torch.tensor([2, 0]))["loss"].item() == pytest.approx(want, rel=1e-6)
    # multi-hot: sign of the summed targets, ties from the fixed random vector
    summed = t[0] + t[1]
    want_t = torch.where(summed > 0, 1.0, torch.where(summed < 0, -1.0, m.ties[0]))
    assert torch.equal(label_codes(torch.tensor([[1, 1, 0]]), t, m.ties)[0], want_t)


def test_csq_centres_and_loss_by_hand():
    c = hash_centres(10, 16)
    dist = (16 - c @ c.T) / 2
    assert dist[~torch.eye(10, dtype=bool)].min() >= 8  # Hadamard centres: at least K/2 apart
    assert hash_centres(40, 16, seed=3).shape == (40, 16)  # more classes than 2K: random centres
    m = CSQ(bits=4, n_classes=3)
    h = torch.tensor([[0.5, -0.5, 0.9, 0.1], [-0.2, 0.3, -0.9, 0.8]])
    y = torch.tensor([1, 2])
    total = 0.0
    for row, cls in zip(h.tolist(), y.tolist()):
        for v, cv in zip(row, m.centres[cls].tolist()):
            p, t = (v + 1) / 2, (cv + 1) / 2
            total += -(t * math.log(p) + (1 - t) * math.log(1 - p))
    quant = sum((abs(v) - 1) ** 2 for row in h.tolist() for v in row) / 8
    assert m(h, None, y)["loss"].item() == pytest.approx(total / 8 + 1e-4 * quant, rel=1e-5)


def test_cnnh_stage_one_recovers_a_realisable_similarity():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.where(y[:, None] == y[None, :], 1, -1).astype(np.float32)
    codes, history = approximate_codes(s, 4, sweeps=8, seed=0)
    assert np.array_equal(codes @ codes.T / 4, s)  # two classes: c and -c reproduce S exactly
    assert all(b <= a + 1e-6 for a, b in zip(history, history[1:]))  # every sweep lowers the objective


def test_cnnh_regresses_the_stage_one_codes_by_position():
    m = CNNH(bits=4, seed=0, sweeps=4)
    m.fit_codes(np.array([0, 0, 1, 2]))
    h = torch.tensor([[0.5, -0.5, 0.9, 0.1], [-0.2, 0.3, -0.9, 0.8]])
    idx = torch.tensor([3, 0])
    want = (h - m.codes[idx]).abs().mean()
    assert m(h, None, idx)["loss"].item() == pytest.approx(want.item())


def test_sdh_switch_adds_self_distillation_to_any_method():
    base = DHN(bits=3)
    wrapped = SelfDistilled(base, weight=0.3)
    hs = torch.tensor([[0.1, 0.2, 0.3], [-0.5, 0.1, 0.0], [0.3, 0.3, 0.3], [0.9, -0.1, 0.2]], requires_grad=True)
    ht = H.clone().requires_grad_(True)
    parts = wrapped(ht, hs, Y)
    sdh = sum(1 - _cos(a, b) for a, b in zip(H.tolist(), hs.tolist())) / 4
    assert parts["sdh"].item() == pytest.approx(sdh, rel=1e-5)
    assert parts["loss"].item() == pytest.approx(base(H, None, Y)["loss"].item() + 0.3 * sdh, rel=1e-5)
    parts["sdh"].backward()
    assert ht.grad is None and hs.grad.abs().sum() > 0  # the teacher is detached in L_SdH
    with pytest.raises(ValueError, match="already trains on two views"):
        SelfDistilled(create_method("dhd"))
    assert isinstance(create_method(load_config(None, ["method=dhn", "method.self_distill=true"]).method), SelfDistilled)
    # dhd-hp-bceq + SdH is DHD's full loss
    proxies = torch.randn(3, 3)
    full = create_method("dhd")(H, hs.detach(), Y, proxies)["loss"]
    assert SelfDistilled(create_method("dhd-hp-bceq"), 0.1)(H, hs.detach(), Y, proxies)["loss"].item() == pytest.approx(
        full.item()
    )


def test_method_config_errors():
    with pytest.raises(ConfigError, match=r"^method.name: unknown method 'dhs'; known: adsh, bihalf, .*dhd, "):
        load_config(None, ["method=dhs"])
    with pytest.raises(ConfigError, match=r"^unknown key method.gama; known: .*gamma, lambda_q, distance, weighting$"):
        load_config(None, ["method=dch", "method.gama=10"])
    assert load_config(None, ["method=dch", "method.gamma=10"]).method.gamma == 10
    with pytest.raises(ConfigError, match=r"^method.gamma: Input should be greater than 0, got -1$"):
        load_config(None, ["method=dch", "method.gamma=-1"])
    with pytest.raises(ConfigError, match="^method.self_distill: dhd already trains on two views"):
        load_config(None, ["method=dhd", "method.self_distill=true"])
    with pytest.raises(ConfigError, match="^method.train_view: picks the one view"):
        load_config(None, ["method=csq", "method.self_distill=true", "method.train_view=student"])
    with pytest.raises(ConfigError, match=r"^method.train_view: Input should be 'teacher' or 'student', got 'both'$"):
        load_config(None, ["method.train_view=both"])


def test_switching_method_keeps_settings_only_within_a_family():
    """``method=NAME`` keeps the settings NAME shares (DHD's ablations), else starts from NAME's defaults."""
    dhd = load_config("configs/compare-outfits.yaml")
    assert dhd.method.temperature == 0.4
    assert load_config("configs/compare-outfits.yaml", ["method=dhd-hp-bceq"]).method.temperature == 0.4
    hashnet = load_config("configs/compare-outfits.yaml", ["method=hashnet"]).method
    assert hashnet.name == "hashnet" and not hasattr(hashnet, "temperature") and hashnet.gamma == 0.005
    noisy = load_config("configs/distillhash-fmnist.yaml", ["method=distillhash-noisy"]).method
    assert noisy.pairs.input_size == [64, 128] and noisy.stage1_epochs == 50


CACHED = ["data.limit_train=600", "data.limit_query=100", "data.limit_database=1500", "optim.batch_size=100",
          "augment.crop_scale=[0.5,1.0]", "optim.lr=1e-3", "model.bits=16", "runtime.num_threads=2",
          "model.mode=cached", "model.backbone=mobilenet_v2", "model.pretrained=true", "model.input_size=32",
          "augment.views=2", "schedule.epochs=8", "optim.backbone_lr_mult=0"]  # fmt: skip


@pytest.mark.parametrize("name", BASELINES)
def test_every_baseline_trains_from_a_config(tmp_path, name):
    cfg = load_config(None, CACHED + [f"name={name}", f"method={name}", "method.self_distill=true"])
    m = train(cfg, tmp_path / name, progress=False)
    log = [json.loads(r) for r in (tmp_path / name / "log.jsonl").read_text().splitlines()]
    assert "sdh" in log[0] and log[-1]["loss"] < log[0]["loss"]
    assert m["map_at_1000"] > 0.3  # chance is about 0.1


def test_dpn_margin_acts_on_the_pre_activation():
    """Bits already past the margin (v t >= m) get no gradient; the others are pushed towards their target."""
    assert DPN.uses_logits  # the trainer hands DPN the raw hash-layer output, not tanh of it
    m = DPN(bits=4, n_classes=2, seed=0)
    t = m.class_targets[1]
    v = (t * torch.tensor([2.0, 1.0, 0.5, -0.3])).requires_grad_(True)  # v t = 2, 1, 0.5, -0.3
    out = m(v[None], None, torch.tensor([1]))
    out["loss"].backward()
    assert torch.equal(v.grad[:2], torch.zeros(2))  # at or past the margin: inert
    assert torch.allclose(v.grad[2:], -t[2:] / 4)  # d/dv of mean(1 - v t) over 4 bits
    assert out["loss"].item() == pytest.approx((0.5 + 1.3) / 4) and out["active"].item() == 0.5


@pytest.mark.parametrize(("bits", "authors"), [(16, 2), (32, 8), (64, 32)])
def test_csq_centres_for_100_classes(bits, authors):
    """More classes than 2K: balanced per bit, and at least as far apart as the CSQ authors' released centres
    for 100 classes (2 at 16 bits, 8 at 32); at 64 bits 100 <= 2K and the Hadamard rows are K/2 apart."""
    c = hash_centres(100, bits, seed=0)
    assert c.shape == (100, bits) and set(c.unique().tolist()) == {-1.0, 1.0}
    d = min_distance(c)
    assert d >= authors and (bits < 64 or d == 32)
    if bits < 64:  # searched: balanced, better than the Bernoulli draws CSQ used to fall back on, seeded
        assert torch.equal(c.sum(0), torch.zeros(bits))  # every bit splits the 100 classes 50 / 50
        assert d > min_distance(random_signs(100, bits, 0))
        assert torch.equal(hash_centres(100, bits, seed=0), c) and not torch.equal(hash_centres(100, bits, seed=1), c)


def test_csq_reports_its_centres_and_takes_the_authors_pairwise_term():
    m = CSQ(bits=4, n_classes=3, pairwise_weight=0.2, lambda_q=0.05)
    assert m.prepare(None) == {"centre_min_distance": 2}  # Hadamard rows of a 4 x 4 matrix: K/2 apart
    h = torch.tensor([[0.5, -0.5, 0.9, 0.1], [-0.2, 0.3, -0.9, 0.8], [0.4, -0.6, 0.7, 0.2], [0.1, 0.1, -0.2, 0.3]])
    y = torch.tensor([1, 2, 1, 0])
    # the pairwise term pairs the first half (items 0, 1) with the second (items 2, 3), sigmoid scale 10/K
    pair = sum(_softplus(2.5 * _dot(h[i].tolist(), h[j].tolist())) - _same(y, i, j) * 2.5 * _dot(h[i].tolist(), h[j].tolist())
               for i in (0, 1) for j in (2, 3)) / 4  # fmt: skip
    plain = CSQ(bits=4, n_classes=3, lambda_q=0.05)(h, None, y)
    got = m(h, None, y)
    assert got["pair"].item() == pytest.approx(pair, rel=1e-5)
    assert got["loss"].item() == pytest.approx(plain["loss"].item() + 0.2 * pair, rel=1e-5)


def test_dch_authors_variant_by_hand():
    """``distance: euclidean`` (||h_i - h_j||^2 / 4) and ``weighting: similar`` (dissimilar pairs at weight 1)."""
    quarter_squared = lambda a, b: sum((x - y) ** 2 for x, y in zip(a, b)) / 4
    got = DCH(bits=3, distance="euclidean", weighting="similar")(H, None, Y)["loss"].item()
    assert got == pytest.approx(_dch_by_hand(quarter_squared, similar_only=True), rel=1e-5)


def test_cnnh_mse_variant():
    m = CNNH(bits=4, seed=0, sweeps=4, loss="mse")
    m.fit_codes(np.array([0, 0, 1, 2]))
    h = torch.tensor([[0.5, -0.5, 0.9, 0.1], [-0.2, 0.3, -0.9, 0.8]])
    idx = torch.tensor([3, 0])
    assert m(h, None, idx)["loss"].item() == pytest.approx((h - m.codes[idx]).pow(2).mean().item())
