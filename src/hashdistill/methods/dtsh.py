"""DTSH, Deep Supervised Hashing with Triplet Labels (Wang, Shi & Kitani, ACCV 2016): the triplet likelihood +
quantization; docs/algorithms/baselines.md."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from ..registry import METHODS
from .base import HashingMethod, MethodParams
from .targets import similarity


class DTSHParams(MethodParams):
    """Theta_ij = u_i . u_j, alpha = 5 and lambda = 1 follow DeepHash-pytorch's DTSH.py; the paper writes
    Theta_ij = u_i . u_j / 2."""

    alpha: float = Field(5.0, ge=0)
    """the triplet margin: p(triplet) = sigmoid(Theta_ij - Theta_ik - alpha)"""
    lambda_q: float = Field(1.0, ge=0)
    """the quantization term's weight"""


@METHODS.register("dtsh")
class DTSH(HashingMethod):
    """L = mean_i mean_{j in P(i), k in N(i)} -log sigmoid(Theta_ij - Theta_ik - alpha) + lambda mean ||u - sign(u)||^2 / K

    (the paper's Eq. 3-5: the negative log-likelihood of the triplets, codes relaxed to the outputs u, the
    pre-activation here, ``uses_logits``). Every triplet of the batch: an anchor i, a positive j != i that
    shares a label with it, a negative k that shares none; anchors without both are skipped. Under torchrun,
    the triplets of the local batch.
    """

    Params = DTSHParams
    uses_logits = True
    params: DTSHParams

    def forward(self, u: torch.Tensor, u_s: torch.Tensor | None, y: torch.Tensor, proxies=None) -> dict[str, torch.Tensor]:
        theta = u @ u.T
        s = similarity(y, y) > 0
        pos = s & ~torch.eye(len(u), dtype=torch.bool, device=u.device)
        triple = (pos[:, :, None] & ~s[:, None, :]).float()  # (anchor i, positive j, negative k)
        nll = -F.logsigmoid(theta[:, :, None] - theta[:, None, :] - self.params.alpha)
        per_anchor = (nll * triple).sum((1, 2)) / triple.sum((1, 2)).clamp_min(1)
        anchors = triple.sum((1, 2)) > 0
        triplet = per_anchor[anchors].mean() if anchors.any() else u.sum() * 0
        quant = (u - u.detach().sign()).pow(2).mean()
        return {"loss": triplet + self.params.lambda_q * quant, "triplet": triplet, "quant": quant}
