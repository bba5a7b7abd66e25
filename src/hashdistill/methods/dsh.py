"""DSH, Deep Supervised Hashing (Liu et al., CVPR 2016): a contrastive loss on the outputs with margin 2K and an
L1 pull of |u| towards 1; docs/algorithms/baselines.md."""

from __future__ import annotations

import torch
from pydantic import Field, PositiveFloat

from ..registry import METHODS
from .base import HashingMethod, MethodParams
from .targets import similarity


class DSHParams(MethodParams):
    """margin m = 2K and alpha = 0.01 are the paper's (Sec. 3.2, 4.2). DeepHash-pytorch's DSH.py uses alpha = 0.1
    on mean |1 - sign(u)| instead of the paper's regulariser."""

    margin: PositiveFloat | None = None
    """the margin m on the squared distance of dissimilar pairs (null: 2K, the paper's)"""
    alpha: float = Field(0.01, ge=0)
    """the weight of the regulariser || |u| - 1 ||_1"""


@METHODS.register("dsh")
class DSH(HashingMethod):
    """L = mean_ij [s_ij D_ij / 2 + (1 - s_ij) max(m - D_ij, 0) / 2] + alpha mean_i || |u_i| - 1 ||_1 / K

    with D_ij = ||u_i - u_j||^2 (the paper's Eq. 5: the contrastive loss with the binary constraint relaxed
    to the regulariser). u is the pre-activation (``uses_logits``): the paper's outputs are real-valued. Pairs
    are all ordered pairs of the batch; under torchrun, the local batch.
    """

    Params = DSHParams
    uses_logits = True
    params: DSHParams

    def forward(self, u: torch.Tensor, u_s: torch.Tensor | None, y: torch.Tensor, proxies=None) -> dict[str, torch.Tensor]:
        m = self.params.margin or 2.0 * u.shape[1]
        d = torch.cdist(u, u).pow(2)
        s = similarity(y, y)
        pair = (0.5 * s * d + 0.5 * (1 - s) * torch.relu(m - d)).mean()
        reg = (u.abs() - 1).abs().mean()
        return {"loss": pair + self.params.alpha * reg, "pair": pair, "reg": reg}
