"""DNNH (Lai et al., CVPR 2015): triplet ranking loss on codes in [0, 1]^K."""

from __future__ import annotations

import torch
from pydantic import Field

from ..registry import METHODS
from .base import HashingMethod, MethodParams
from .targets import similarity


class DNNHParams(MethodParams):
    """margin = 1 (the paper's)."""

    margin: float = Field(1.0, ge=0)
    """the triplet ranking loss's margin"""


@METHODS.register("dnnh")
class DNNH(HashingMethod):
    """L = mean over triplets (q, q+, q-) of max(0, margin - (||u_q - u_q-||^2 - ||u_q - u_q+||^2))

    (DNNH's triplet ranking loss), u = (h + 1) / 2 in [0, 1]^K standing for the paper's sigmoid outputs.
    Every triplet of the mini-batch (under torchrun: of each rank's local batch) whose anchor shares a label with
    q+ and none with q- is used. The
    paper's divide-and-encode module and piecewise threshold are architecture, not loss: every method here
    shares one hash head, so the comparison isolates the losses.
    """

    Params = DNNHParams
    params: DNNHParams

    def forward(self, h: torch.Tensor, h_s: torch.Tensor | None, y: torch.Tensor, proxies=None) -> dict[str, torch.Tensor]:
        u = (h + 1) / 2
        d = torch.cdist(u, u).pow(2)  # d[q, j] = ||u_q - u_j||^2
        s = similarity(y, y)
        positive = s - torch.eye(len(s), device=s.device)  # a positive is another image
        valid = positive[:, :, None] * (1 - s)[:, None, :]  # [q, q+, q-] as 0/1 weights (no gather: faster)
        hinge = (self.params.margin - (d[:, None, :] - d[:, :, None])).clamp_min(0)
        count = valid.sum()
        return {"loss": (hinge * valid).sum() / count.clamp_min(1), "triplets": count}
