"""DCH, Deep Cauchy Hashing (Cao et al., CVPR 2018): Cauchy pairwise cross-entropy + Cauchy quantization."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .labels import balance_weights, similarity


def normalised_hamming(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """DCH Eq. 6: d(h_i, h_j) = K/2 (1 - cos(h_i, h_j)), pairwise."""
    return a.shape[1] / 2 * (1 - F.normalize(a, dim=1) @ F.normalize(b, dim=1).T)


class DCH(nn.Module):
    """L = sum_ij w_ij [s_ij log(d_ij / gamma) + log(1 + gamma / d_ij)] / |pairs| + lambda_q mean log(1 + d(|h|, 1) / gamma)

    (DCH Eq. 7-9, d from Eq. 6): cross-entropy of p(s_ij = 1) = gamma / (gamma + d_ij), with the class-balance
    weights w_ij = |S| / |S_1| or |S| / |S_0| (Eq. 2), and the Cauchy quantization loss. d is clamped to
    at least ``d_min`` = K/2 x 0.01 (the released code clamps cos at 0.99), so identical codes stay finite.
    Defaults: gamma = 20, lambda_q = 0.1 (the paper's setting).
    """

    def __init__(self, bits: int = 64, n_classes: int = 0, seed: int = 0, gamma: float = 20.0, lambda_q: float = 0.1) -> None:
        super().__init__()
        self.gamma, self.lambda_q = gamma, lambda_q

    def forward(self, h: torch.Tensor, h_s: torch.Tensor | None, y: torch.Tensor, proxies=None) -> dict[str, torch.Tensor]:
        k = h.shape[1]
        s = similarity(y, y)
        w = balance_weights(s)
        d = normalised_hamming(h, h).clamp_min(k / 2 * 0.01)
        pair = (w * (s * torch.log(d / self.gamma) + torch.log1p(self.gamma / d))).mean()
        d_q = normalised_hamming(h.abs(), torch.ones(1, k, device=h.device)).squeeze(1)
        quant = torch.log1p(d_q / self.gamma).mean()
        return {"loss": pair + self.lambda_q * quant, "pair": pair, "quant": quant}
