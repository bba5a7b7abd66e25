"""DPN, Deep Polarized Network (Fan et al., IJCAI 2020): bit-wise hinge towards random class targets."""

from __future__ import annotations

import torch
from pydantic import Field

from ..registry import METHODS
from .base import HashingMethod, MethodParams
from .targets import label_codes, random_signs


class DPNParams(MethodParams):
    """margin m = 1 (the paper's and its authors' code)."""

    margin: float = Field(1.0, ge=0)
    """the margin m: bits with v*t >= m get no gradient"""


@METHODS.register("dpn")
class DPN(HashingMethod):
    """L = mean_{i,k} max(m - v_ik t_ik, 0) (DPN's bit-wise polarization loss)

    on the raw hash-layer output v (the pre-activation z here, ``uses_logits``): a bit stops being pushed
    once v t >= m, so the margin acts; on tanh outputs (|h| < 1) every term would stay active and the loss
    would reduce to 1 - mean(h t). The target t_i is the code of the item's class, drawn once at random
    with exactly half the bits at -1 (p = 0.5, the paper's random assignment); a multi-hot row takes
    sign(sum of its classes' targets), zero sums from one fixed random vector (as the authors do for
    multi-label data, after CSQ). Pointwise: no pairs in the batch.
    """

    Params = DPNParams
    uses_logits = True
    params: DPNParams

    def __init__(self, params: DPNParams | None = None, **kw) -> None:
        super().__init__(params, **kw)
        self.register_buffer("class_targets", random_signs(self.n_classes, self.bits, self.seed, balanced=True))
        self.register_buffer("ties", random_signs(1, self.bits, self.seed + 1))

    def forward(self, v: torch.Tensor, v_s: torch.Tensor | None, y: torch.Tensor, proxies=None) -> dict[str, torch.Tensor]:
        t = label_codes(y, self.class_targets.to(v.device), self.ties.to(v.device))
        hinge = torch.relu(self.params.margin - v * t)  # zero gradient from v t >= m on, the margin included
        return {"loss": hinge.mean(), "active": (hinge > 0).float().mean()}
