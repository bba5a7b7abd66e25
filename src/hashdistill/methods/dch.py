"""DCH, Deep Cauchy Hashing (Cao et al., CVPR 2018): Cauchy pairwise cross-entropy + Cauchy quantization."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from .base import HashingMethod, MethodParams
from .targets import balance_weights, similarity


def normalised_hamming(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """DCH Eq. 6: d(h_i, h_j) = K/2 (1 - cos(h_i, h_j)), pairwise."""
    return a.shape[1] / 2 * (1 - F.normalize(a, dim=1) @ F.normalize(b, dim=1).T)


class DCHParams(MethodParams):
    """gamma = 20, lambda_q = 0.1 (the paper's setting)."""

    gamma: float = Field(20.0, gt=0)
    lambda_q: float = Field(0.1, ge=0)


class DCH(HashingMethod):
    """L = sum_ij w_ij [s_ij log(d_ij / gamma) + log(1 + gamma / d_ij)] / |pairs| + lambda_q mean log(1 + d(|h|, 1) / gamma)

    (DCH Eq. 7-9, d from Eq. 6): cross-entropy of p(s_ij = 1) = gamma / (gamma + d_ij), with the class-balance
    weights w_ij = |S| / |S_1| or |S| / |S_0| (Eq. 2), and the Cauchy quantization loss. d is clamped to
    at least K/2 x 0.01 (the released code clamps cos at 0.99), so identical codes stay finite.
    """

    Params = DCHParams
    params: DCHParams

    def forward(self, h: torch.Tensor, h_s: torch.Tensor | None, y: torch.Tensor, proxies=None) -> dict[str, torch.Tensor]:
        gamma, k = self.params.gamma, h.shape[1]
        s = similarity(y, y)
        w = balance_weights(s)
        d = normalised_hamming(h, h).clamp_min(k / 2 * 0.01)
        pair = (w * (s * torch.log(d / gamma) + torch.log1p(gamma / d))).mean()
        d_q = normalised_hamming(h.abs(), torch.ones(1, k, device=h.device)).squeeze(1)
        quant = torch.log1p(d_q / gamma).mean()
        return {"loss": pair + self.params.lambda_q * quant, "pair": pair, "quant": quant}
