"""Each DHD loss against a hand computation."""

import math

import pytest
import torch

from hashdistill.methods import MethodError, create_method
from hashdistill.methods.dhd import (
    DHD,
    BCEQuantizationLoss,
    DHDProxyOnly,
    DHDProxyQuantized,
    HashProxyLoss,
    SelfDistillationLoss,
)

H = torch.tensor([[0.6, -0.8], [0.0, 1.0]])
P = torch.tensor([[1.0, 0.0], [0.0, -2.0], [3.0, 4.0]])


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def _hp_by_hand(h, proxies, target, tau):
    total = 0.0
    for hi, ti in zip(h.tolist(), target):
        z = [_cos(hi, p) / tau for p in proxies.tolist()]
        log_norm = math.log(sum(math.exp(v) for v in z))
        total += -sum(t * (v - log_norm) for t, v in zip(ti, z))
    return total / len(h)


def test_hash_proxy_loss_single_label():
    want = _hp_by_hand(H, P, [[0, 0, 1], [0, 1, 0]], 0.2)
    assert HashProxyLoss(0.2)(H, P, torch.tensor([2, 1])).item() == pytest.approx(want, rel=1e-6)


def test_hash_proxy_loss_multi_label_normalises_without_mutating():
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    before = y.clone()
    want = _hp_by_hand(H, P, [[0.5, 0, 0.5], [0, 1, 0]], 0.5)
    assert HashProxyLoss(0.5)(H, P, y).item() == pytest.approx(want, rel=1e-6)
    assert torch.equal(y, before)


def test_self_distillation_loss_stops_the_teacher_gradient():
    t = torch.tensor([[1.0, 0.0], [1.0, 1.0]], requires_grad=True)
    s = torch.tensor([[0.0, 1.0], [1.0, 1.0]], requires_grad=True)
    loss = SelfDistillationLoss()(t, s)
    assert loss.item() == pytest.approx(((1 - 0) + (1 - 1)) / 2)
    loss.backward()
    assert t.grad is None and s.grad is not None and s.grad.abs().sum() > 0


def test_bce_quantization_loss_by_hand():
    h = torch.tensor([[0.5, -0.2, 1.0, 0.0]])
    sigma = 0.5
    total = 0.0
    for v in h[0].tolist():
        gp = math.exp(-((v - 1) ** 2) / (2 * sigma**2))
        gn = math.exp(-((v + 1) ** 2) / (2 * sigma**2))
        bp = 1.0 if v >= 0 else 0.0  # sign(0) = +1
        bce = lambda u, g: -(u * math.log(max(g, math.exp(-100))) + (1 - u) * math.log(max(1 - g, math.exp(-100))))
        total += bce(bp, gp) + bce(1 - bp, gn)
    assert BCEQuantizationLoss(sigma)(h).item() == pytest.approx(total / 4, rel=1e-5)
    # codes at +-1 cost almost nothing; codes at 0 cost the most
    assert BCEQuantizationLoss(0.5)(torch.tensor([[1.0, -1.0]])).item() < 1e-3
    assert BCEQuantizationLoss(0.5)(torch.tensor([[0.0, 0.0]])).item() > 1.0
    # at h = 0 both conventions give the same loss (g+ = g-); the gradient tells them apart: with sign(0) = +1
    # it pushes h towards +1, d/dh = (h - 1) / sigma^2 - (h + 1) / sigma^2 * g / (1 - g) = -1 / (sigma^2 (1 - g))
    zero = torch.zeros(1, 1, requires_grad=True)
    BCEQuantizationLoss(sigma)(zero).backward()
    g = math.exp(-1 / (2 * sigma**2))
    assert zero.grad.item() == pytest.approx(-1 / (sigma**2 * (1 - g)), rel=1e-5) and zero.grad.item() < 0


def test_dhd_total_and_ablations():
    torch.manual_seed(0)
    ht, hs = torch.tanh(torch.randn(4, 8)), torch.tanh(torch.randn(4, 8))
    proxies, y = torch.randn(3, 8), torch.tensor([0, 1, 2, 1])
    full = DHD(temperature=0.2, lambda1=0.1, lambda2=0.1, sigma=0.5)(ht, hs, y, proxies)
    hp = HashProxyLoss(0.2)(ht, proxies, y)
    sdh = SelfDistillationLoss()(ht, hs)
    q = BCEQuantizationLoss(0.5)(ht)
    assert full["loss"].item() == pytest.approx((hp + 0.1 * sdh + 0.1 * q).item(), rel=1e-6)
    only_hp = create_method("dhd-hp")(ht, None, y, proxies)
    assert isinstance(create_method("dhd-hp"), DHDProxyOnly) and DHDProxyOnly.views == DHDProxyQuantized.views == 1
    assert set(only_hp) == {"hp", "loss"} and only_hp["loss"].item() == pytest.approx(hp.item(), rel=1e-6)
    hp_q = create_method("dhd-hp-bceq")(ht, None, y, proxies)
    assert hp_q["loss"].item() == pytest.approx((hp + 0.1 * q).item(), rel=1e-6)
    with_proxies = DHD(quantize_proxies=True)(ht, hs, y, proxies)
    assert with_proxies["bceq"].item() == pytest.approx((q + BCEQuantizationLoss(0.5)(proxies)).item(), rel=1e-6)
    with pytest.raises(MethodError, match="unknown method 'dhs'"):
        create_method("dhs")
