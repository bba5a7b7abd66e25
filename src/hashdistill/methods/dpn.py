"""DPN, Deep Polarized Network (Fan et al., IJCAI 2020): bit-wise hinge towards random class targets."""

from __future__ import annotations

import torch
from pydantic import Field

from .base import HashingMethod, MethodParams
from .targets import label_codes, random_signs


class DPNParams(MethodParams):
    """margin m = 1."""

    margin: float = Field(1.0, ge=0)


class DPN(HashingMethod):
    """L = mean_{i,k} max(m - h_ik t_ik, 0) (DPN's bit-wise polarization loss)

    with target t_i the code of its class, drawn once at random with exactly half the bits at -1
    (p = 0.5, the paper's random assignment); a multi-hot row takes sign(sum of its classes' targets), zero
    sums from one fixed random vector (the released code).
    """

    Params = DPNParams
    params: DPNParams

    def __init__(self, params: DPNParams | None = None, **kw) -> None:
        super().__init__(params, **kw)
        self.register_buffer("class_targets", random_signs(self.n_classes, self.bits, self.seed, balanced=True))
        self.register_buffer("ties", random_signs(1, self.bits, self.seed + 1))

    def forward(self, h: torch.Tensor, h_s: torch.Tensor | None, y: torch.Tensor, proxies=None) -> dict[str, torch.Tensor]:
        t = label_codes(y, self.class_targets.to(h.device), self.ties.to(h.device))
        loss = (self.params.margin - h * t).clamp_min(0).mean()
        return {"loss": loss}
