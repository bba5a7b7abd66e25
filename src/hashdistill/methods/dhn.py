"""DHN, Deep Hashing Network (Zhu et al., AAAI 2016): pairwise likelihood + smooth quantization."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .labels import similarity


def pair_nll(theta: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """-log p(s | theta) for p(s = 1) = sigmoid(theta): log(1 + exp(theta)) - s theta, elementwise and stable."""
    return F.softplus(theta) - s * theta


class DHN(nn.Module):
    """L = mean_ij [log(1 + exp(a <h_i, h_j>)) - s_ij a <h_i, h_j>] + lambda_q mean log cosh(|h| - 1)

    (DHN's pairwise cross-entropy, with a = 1/2 as in the DeepHash reference code, and its smooth surrogate
    log cosh of the L1 quantization error |(|h| - 1)|). Pairs are all ordered pairs of the mini-batch, the diagonal included (as the paper
    sums over all labelled pairs). Defaults: a = 0.5, lambda_q = 0.1.
    """

    def __init__(self, bits: int = 64, n_classes: int = 0, seed: int = 0, alpha: float = 0.5, lambda_q: float = 0.1) -> None:
        super().__init__()
        self.alpha, self.lambda_q = alpha, lambda_q

    def forward(self, h: torch.Tensor, h_s: torch.Tensor | None, y: torch.Tensor, proxies=None) -> dict[str, torch.Tensor]:
        pair = pair_nll(self.alpha * h @ h.T, similarity(y, y)).mean()
        quant = torch.log(torch.cosh(h.abs() - 1)).mean()
        return {"loss": pair + self.lambda_q * quant, "pair": pair, "quant": quant}
