"""HyP², the hybrid proxy-pair loss for multi-label retrieval (Xu et al., ACM MM 2022); docs/algorithms/baselines.md."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from ..registry import METHODS
from .base import HashingMethod, MethodParams
from .targets import label_indicator


def plotkin_distance(bits: int, codewords: int) -> int | None:
    """The largest minimum Hamming distance d that Plotkin's bound allows ``codewords`` codes of ``bits`` bits
    (A(n, d) <= 2 floor(d / (2d - n)) for even d with 2d > n, A(2d, d) <= 4d, A(n, d) = A(n + 1, d + 1) for odd
    d); ``None`` where no d > n/2 - 1 admits them (the bound says nothing there)."""
    for d in range(bits, 0, -1):
        n, e = (bits + 1, d + 1) if d % 2 else (bits, d)
        if 2 * e < n:
            return None
        most = 2 * n if 2 * e == n else 2 * (e // (2 * e - n))
        if most >= codewords:
            return d
    return None


def proxy_threshold(bits: int, n_classes: int) -> float:
    """zeta = 1 - 2d/K: the cosine between two of 2^ceil(log2 C) K-bit codes at the largest minimum distance d
    the Plotkin bound allows, and 0 where the bound does not apply (more than 2K codes). The released code reads
    the same quantity from its table of best known codes (codetable.xlsx). At 16, 32 and 64 bits the two agree for
    2 to 2K codes except 16 codes at 64 bits (table -1/32, bound -1/16); beyond 2K codes the table's bound is
    positive (16 bits, 64 codes: 0.25) where this gives 0: set ``threshold`` to match it."""
    d = plotkin_distance(bits, 2 ** max(1, math.ceil(math.log2(max(n_classes, 2)))))
    return 0.0 if d is None else 1 - 2 * d / bits


class HyP2Params(MethodParams):
    """beta = 0.5 is the released code's default; zeta from ``proxy_threshold`` unless ``threshold`` is set."""

    beta: float = Field(0.5, ge=0)
    """the weight of the pair term between multi-label items that share no label"""
    threshold: float | None = Field(None, ge=-1, le=1)
    """zeta, the cosine a code may keep to an irrelevant proxy or item (null: ``proxy_threshold``)"""


@METHODS.register("hyp2")
class HyP2(HashingMethod):
    """L = mean_{y_ic = 1} (1 - cos(u_i, p_c)) + mean_{y_ic = 0} [cos(u_i, p_c) - zeta]_+
           + beta mean_{i, j multi-label, y_i . y_j = 0} [cos(u_i, u_j) - zeta]_+

    (the paper's Eqs. 5-9, as its released code): u is the hash layer's output before tanh (``uses_logits``), p the
    model's trainable proxies (``uses_proxies``), each proxy term averaged over all the positive (negative)
    item-class entries of the batch; the pair term pushes apart the batch's items with more than one label that
    share none. Single-label data have no such pairs: there the loss is the proxy terms alone. Under torchrun, the
    pairs are the local batch's.
    """

    Params = HyP2Params
    uses_logits = True
    uses_proxies = True
    params: HyP2Params

    def __init__(self, params: HyP2Params | None = None, **kw) -> None:
        super().__init__(params, **kw)
        p = self.params
        self.zeta = p.threshold if p.threshold is not None else proxy_threshold(self.bits, max(self.n_classes, 2))

    def forward(self, u: torch.Tensor, u_s: torch.Tensor | None, y: torch.Tensor, proxies=None) -> dict[str, torch.Tensor]:
        t = label_indicator(y, len(proxies)).to(u.device)
        nu = F.normalize(u, dim=1)
        cos = nu @ F.normalize(proxies, dim=1).T
        pos = (1 - cos)[t == 1].mean()
        neg = F.relu(cos - self.zeta)[t == 0].mean() if (t == 0).any() else cos.new_zeros(())
        multi = t.sum(1) > 1
        apart = (t[multi] @ t[multi].T) == 0
        pair = F.relu(nu[multi] @ nu[multi].T - self.zeta)[apart].mean() if apart.any() else cos.new_zeros(())
        return {"loss": pos + neg + self.params.beta * pair, "proxy_pos": pos, "proxy_neg": neg, "pair": pair}
