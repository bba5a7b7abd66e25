"""DPSH, Deep Pairwise-Supervised Hashing (Li, Wang & Kang, IJCAI 2016): the pairwise likelihood on the
network's real-valued outputs + quantization; docs/algorithms/baselines.md."""

from __future__ import annotations

import torch
from pydantic import Field

from ..registry import METHODS
from .base import HashingMethod, MethodParams
from .dhn import pair_nll
from .targets import similarity


class DPSHParams(MethodParams):
    """eta = 0.1 on the mean squared quantization error follows DeepHash-pytorch's DPSH.py (its ``alpha``); the
    paper sums both terms over pairs and images and picks eta per dataset."""

    eta: float = Field(0.1, ge=0)
    """the quantization term's weight"""


@METHODS.register("dpsh")
class DPSH(HashingMethod):
    """L = mean_ij [log(1 + exp(Theta_ij)) - s_ij Theta_ij] + eta mean ||u_i - sign(u_i)||^2 / K

    with Theta_ij = u_i . u_j / 2 (the paper's Eq. 2-4: the negative log-likelihood of the pair labels, the
    discrete codes b relaxed to the hash layer's output u; DistillHash's Bayesian pair loss is the same
    likelihood). u is the pre-activation (``uses_logits``), as the paper's linear hash layer. Pairs are all
    ordered pairs of the batch, the diagonal included (as DeepHash-pytorch); under torchrun, the local batch.
    """

    Params = DPSHParams
    uses_logits = True
    params: DPSHParams

    def forward(self, u: torch.Tensor, u_s: torch.Tensor | None, y: torch.Tensor, proxies=None) -> dict[str, torch.Tensor]:
        pair = pair_nll(0.5 * u @ u.T, similarity(y, y)).mean()
        quant = (u - u.detach().sign()).pow(2).mean()
        return {"loss": pair + self.params.eta * quant, "pair": pair, "quant": quant}
