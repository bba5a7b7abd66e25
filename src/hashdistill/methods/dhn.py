"""DHN, Deep Hashing Network (Zhu et al., AAAI 2016): pairwise likelihood + smooth quantization."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from ..registry import METHODS
from .base import HashingMethod, MethodParams
from .targets import similarity


def pair_nll(theta: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """-log p(s | theta) for p(s = 1) = sigmoid(theta): log(1 + exp(theta)) - s theta, elementwise and stable."""
    return F.softplus(theta) - s * theta


class DHNParams(MethodParams):
    """a = 0.5 and lambda_q = 0.1 with the log cosh surrogate follow DeepHash-pytorch's DHN.py (which pairs each
    batch with a bank of the whole training set's codes; here the batch's own pairs). The authors' TensorFlow
    code (thulab/DeepHash, model/dhn) uses the squared quantization error and class-balance weights."""

    alpha: float = Field(0.5, gt=0)
    """the sigmoid's scale of the pairwise likelihood"""
    lambda_q: float = Field(0.1, ge=0)
    """the log cosh quantization term's weight"""


@METHODS.register("dhn")
class DHN(HashingMethod):
    """L = mean_ij [log(1 + exp(a <h_i, h_j>)) - s_ij a <h_i, h_j>] + lambda_q mean log cosh(|h| - 1)

    (DHN's pairwise cross-entropy and its smooth surrogate log cosh of the L1 quantization error
    |(|h| - 1)|). Pairs are all ordered pairs of the mini-batch, the diagonal included (as the paper sums
    over all labelled pairs); under torchrun, those of each rank's local batch.
    """

    Params = DHNParams
    params: DHNParams

    def forward(self, h: torch.Tensor, h_s: torch.Tensor | None, y: torch.Tensor, proxies=None) -> dict[str, torch.Tensor]:
        p = self.params
        pair = pair_nll(p.alpha * h @ h.T, similarity(y, y)).mean()
        quant = torch.log(torch.cosh(h.abs() - 1)).mean()
        return {"loss": pair + p.lambda_q * quant, "pair": pair, "quant": quant}
