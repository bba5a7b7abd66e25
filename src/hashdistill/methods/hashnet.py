"""HashNet (Cao et al., ICCV 2017): weighted pairwise likelihood on tanh(beta z), beta raised by continuation."""

from __future__ import annotations

import torch
from pydantic import Field

from ..registry import METHODS
from .base import HashingMethod, MethodParams
from .dhn import pair_nll
from .targets import balance_weights, similarity


class HashNetParams(MethodParams):
    """alpha = 10 / K when unset (the released code's adaptive sigmoid); continuation gamma = 0.005,
    power = 0.5, step_size = 200 (the released code)."""

    alpha: float | None = Field(None, gt=0)
    """the adaptive sigmoid's scale (null: 10 / K)"""
    gamma: float = Field(0.005, ge=0)
    """continuation: beta grows as (1 + gamma * step) ** power"""
    power: float = Field(0.5, ge=0)
    """continuation's power"""
    step_size: int = Field(200, gt=0)
    """continuation steps between increases of beta"""


@METHODS.register("hashnet")
class HashNet(HashingMethod):
    """L = sum_ij w_ij [log(1 + exp(a <h_i, h_j>)) - s_ij a <h_i, h_j>] / sum_ij w_ij, h = tanh(beta z)

    (HashNet's weighted maximum likelihood). Weights re-balance the batch's pairs: w_ij = |S| / |S_1| for
    similar pairs and |S| / |S_0| for dissimilar ones. Continuation: beta = (1 + gamma t)^power at step t,
    raised every ``step_size`` steps. The method reads the pre-activation z (``uses_logits``). Pairs: the
    batch's; under torchrun, those of each rank's local batch.
    """

    Params = HashNetParams
    uses_logits = True
    params: HashNetParams

    def __init__(self, params: HashNetParams | None = None, **kw) -> None:
        super().__init__(params, **kw)
        self.alpha = 10.0 / self.bits if self.params.alpha is None else self.params.alpha
        self.beta = 1.0

    def on_step(self, step: int) -> None:
        """The trainer's global step: sets the continuation scale beta."""
        p = self.params
        self.beta = (1 + p.gamma * (step // p.step_size * p.step_size)) ** p.power

    def forward(self, z: torch.Tensor, z_s: torch.Tensor | None, y: torch.Tensor, proxies=None) -> dict[str, torch.Tensor]:
        h = torch.tanh(self.beta * z)
        s = similarity(y, y)
        w = balance_weights(s)
        pair = (w * pair_nll(self.alpha * h @ h.T, s)).sum() / w.sum()
        return {"loss": pair, "pair": pair, "beta": torch.tensor(self.beta)}
