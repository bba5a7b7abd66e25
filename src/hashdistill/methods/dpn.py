"""DPN, Deep Polarized Network (Fan et al., IJCAI 2020): bit-wise hinge towards random class targets."""

from __future__ import annotations

import torch
from torch import nn

from .labels import label_codes, random_signs


class DPN(nn.Module):
    """L = mean_{i,k} max(m - h_ik t_ik, 0) (DPN's bit-wise polarization loss)

    with target t_i the code of its class, drawn once at random with exactly half the bits at -1
    (p = 0.5, the paper's random assignment); a multi-hot row takes sign(sum of its classes' targets), zero
    sums from one fixed random vector (the released code). Default margin m = 1.
    """

    def __init__(self, bits: int = 64, n_classes: int = 10, seed: int = 0, margin: float = 1.0) -> None:
        super().__init__()
        self.margin = margin
        self.register_buffer("targets", random_signs(n_classes, bits, seed, balanced=True))
        self.register_buffer("ties", random_signs(1, bits, seed + 1))

    def forward(self, h: torch.Tensor, h_s: torch.Tensor | None, y: torch.Tensor, proxies=None) -> dict[str, torch.Tensor]:
        t = label_codes(y, self.targets.to(h.device), self.ties.to(h.device))
        loss = (self.margin - h * t).clamp_min(0).mean()
        return {"loss": loss}
