"""DCH, Deep Cauchy Hashing (Cao et al., CVPR 2018): Cauchy pairwise cross-entropy + Cauchy quantization."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..registry import METHODS
from .base import HashingMethod, MethodParams
from .targets import balance_weights, similarity


def normalised_hamming(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """DCH Eq. 6: d(h_i, h_j) = K/2 (1 - cos(h_i, h_j)), pairwise."""
    return a.shape[1] / 2 * (1 - F.normalize(a, dim=1) @ F.normalize(b, dim=1).T)


def quarter_squared_euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||h_i - h_j||^2 / 4, pairwise: the Hamming distance itself on codes in {-1, +1}^K."""
    squared = a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :] - 2 * a @ b.T  # no sqrt: finite gradients at 0
    return squared.clamp_min(0) / 4


class DCHParams(MethodParams):
    """gamma = 20, lambda_q = 0.1, ``distance: cosine``, ``weighting: balanced`` follow the paper (Eqs. 2,
    6-9) as DeepHash-pytorch's DCH.py implements it (cos clamped at 0.99). The authors' TensorFlow code
    (thulab/DeepHash, model/dch) differs: squared Euclidean distance (``distance: euclidean``, here scaled
    by 1/4 so that gamma keeps its meaning), only similar pairs up-weighted by |S|/|S_1| with dissimilar pairs
    at weight 1 (``weighting: similar``), and by default no quantization term (``lambda_q: 0``)."""

    gamma: float = Field(20.0, gt=0)
    """the Cauchy distribution's scale (Eq. 6)"""
    lambda_q: float = Field(0.1, ge=0)
    """the Cauchy quantization term's weight"""
    distance: Literal["cosine", "euclidean"] = "cosine"
    """cosine (the paper) or euclidean (the authors' code)"""
    weighting: Literal["balanced", "similar"] = "balanced"
    """balanced (both kinds of pair) or similar (only similar pairs up-weighted)"""


@METHODS.register("dch")
class DCH(HashingMethod):
    """L = sum_ij w_ij [s_ij log(d_ij / gamma) + log(1 + gamma / d_ij)] / |pairs| + lambda_q mean log(1 + d(|h|, 1) / gamma)

    (DCH Eqs. 7-9): the cross-entropy of p(s_ij = 1) = gamma / (gamma + d_ij) with class-balance weights
    w_ij = |S| / |S_1| or |S| / |S_0| (Eq. 2), and the Cauchy quantization loss. d is Eq. 6's normalised
    Hamming distance (or ``distance: euclidean``), clamped to at least K/2 x 0.01 so identical codes stay finite.
    Pairs: the batch's; under torchrun, those of each rank's local batch.
    """

    Params = DCHParams
    params: DCHParams

    def forward(self, h: torch.Tensor, h_s: torch.Tensor | None, y: torch.Tensor, proxies=None) -> dict[str, torch.Tensor]:
        p, k = self.params, h.shape[1]
        distance = normalised_hamming if p.distance == "cosine" else quarter_squared_euclidean
        s = similarity(y, y)
        w = balance_weights(s)
        if p.weighting == "similar":
            w = torch.where(s > 0, w, torch.ones_like(w))
        d = distance(h, h).clamp_min(k / 2 * 0.01)
        pair = (w * (s * torch.log(d / p.gamma) + torch.log1p(p.gamma / d))).mean()
        d_q = distance(h.abs(), torch.ones(1, k, device=h.device)).squeeze(1)
        quant = torch.log1p(d_q / p.gamma).mean()
        return {"loss": pair + p.lambda_q * quant, "pair": pair, "quant": quant}
