"""Deep Hash Distillation (Jang et al., ECCV 2022): the three losses and their sum (Eq. 8); docs/algorithms/dhd.md.

Only the teacher view's codes h_T feed the proxy and quantization losses; the student's codes h_S
are pulled to the detached h_T by self-distillation.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..registry import METHODS
from .base import HashingMethod, MethodParams
from .targets import soft_targets


class HashProxyLoss(nn.Module):
    """L_HP (Eq. 3-4): cross-entropy between the targets and softmax(cos(h_T, proxies) / tau) (tau: Eq. 4)."""

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, h: torch.Tensor, proxies: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = F.normalize(h, dim=1) @ F.normalize(proxies, dim=1).T / self.temperature  # Eq. 3
        target = soft_targets(y, proxies.shape[0])
        return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()  # Eq. 4


class SelfDistillationLoss(nn.Module):
    """L_SdH (Eq. 2): 1 - cos(h_T, h_S), with the gradient stopped at the teacher."""

    def forward(self, h_teacher: torch.Tensor, h_student: torch.Tensor) -> torch.Tensor:
        return (1 - F.cosine_similarity(h_teacher.detach(), h_student, dim=1)).mean()


class BCEQuantizationLoss(nn.Module):
    """L_bce-Q (Eq. 5-7): per bit, binary cross-entropy of the Gaussian likelihoods
    g+ = exp(-(h-1)^2 / 2 sigma^2) and g- = exp(-(h+1)^2 / 2 sigma^2) against the targets
    b+ = (sign(h) + 1) / 2 (sign(0) = +1) and b- = 1 - b+; averaged over the K bits and the batch."""

    def __init__(self, sigma: float = 0.5) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        g_pos = torch.exp(-((h - 1) ** 2) / (2 * self.sigma**2))  # Eq. 5, m = +1
        g_neg = torch.exp(-((h + 1) ** 2) / (2 * self.sigma**2))  # Eq. 5, m = -1
        b_pos = (h.detach() >= 0).to(h.dtype)  # Eq. 7
        # binary_cross_entropy clamps log(.) at -100, as the official code's nn.BCELoss does
        return F.binary_cross_entropy(g_pos, b_pos) + F.binary_cross_entropy(g_neg, 1 - b_pos)  # Eq. 6


class DHDParams(MethodParams):
    """DHD's hyper-parameters (the paper's Sec. 4.1 and the official code): tau = 0.2 (ImageNet; 0.6 NUS-WIDE,
    0.4 MS-COCO), lambda1 = lambda2 = 0.1, sigma = 0.5; ``quantize_proxies`` also applies L_bce-Q to the
    proxies, as the paper's text says (the official code does not)."""

    temperature: float = Field(0.2, gt=0)
    """tau of the proxy softmax (Eq. 4)"""
    lambda1: float = Field(0.1, ge=0)
    """the self-distillation term's weight (Eq. 8)"""
    lambda2: float = Field(0.1, ge=0)
    """the BCE quantization term's weight (Eq. 8)"""
    sigma: float = Field(0.5, gt=0)
    """sigma of the Gaussian likelihoods of the BCE quantization (Eq. 5)"""
    quantize_proxies: bool = False
    """also quantize the proxies with L_bce-Q (the paper's text; not the official code)"""
    proxy_lr_mult: float = Field(10.0, gt=0, le=1000)
    """the proxies' learning rate as a multiple of the head's (the official code: 1; docs/algorithms/dhd.md
    "The proxies' learning rate": 10, chosen by measurement)"""


@METHODS.register("dhd")
class DHD(HashingMethod):
    """L = L_HP + lambda1 L_SdH + lambda2 L_bce-Q (Eq. 8). ``DHDProxyOnly`` and ``DHDProxyQuantized`` are
    Table 3's ablations (one view: no L_SdH; the first without L_bce-Q either). Every term is a mean over
    images (no pairs): under torchrun the averaged gradients are those of the whole global batch."""

    Params = DHDParams
    views = 2
    uses_proxies = True
    quantize: ClassVar[bool] = True
    params: DHDParams

    def __init__(self, params: DHDParams | None = None, **kw: Any) -> None:
        super().__init__(params, **kw)
        p = self.params
        self.hp = HashProxyLoss(p.temperature)
        self.sdh_loss = SelfDistillationLoss()
        self.bceq = BCEQuantizationLoss(p.sigma)

    def proxy_lr_mult(self) -> float:
        return self.params.proxy_lr_mult

    def forward(
        self, h_teacher: torch.Tensor, h_student: torch.Tensor | None, y: torch.Tensor, proxies: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        p = self.params
        parts = {"hp": self.hp(h_teacher, proxies, y)}
        loss = parts["hp"]
        if self.views == 2:
            parts["sdh"] = self.sdh_loss(h_teacher, h_student)
            loss = loss + p.lambda1 * parts["sdh"]
        if self.quantize:
            parts["bceq"] = self.bceq(h_teacher)
            if p.quantize_proxies:
                parts["bceq"] = parts["bceq"] + self.bceq(proxies)
            loss = loss + p.lambda2 * parts["bceq"]
        parts["loss"] = loss
        return parts


@METHODS.register("dhd-hp-bceq")
class DHDProxyQuantized(DHD):
    """``dhd-hp-bceq``: L_HP + lambda2 L_bce-Q on one view (Table 3; + ``self_distill`` gives ``dhd``)."""

    views = 1


@METHODS.register("dhd-hp")
class DHDProxyOnly(DHD):
    """``dhd-hp``: L_HP alone on one view (Table 3's first row)."""

    views = 1
    quantize = False
