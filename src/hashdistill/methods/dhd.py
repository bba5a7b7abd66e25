"""Deep Hash Distillation (Jang et al., ECCV 2022): the three losses and their sum (Eq. 8).

Only the teacher view's codes h_T feed the proxy and quantization losses; the student's codes h_S
are pulled to the detached h_T by self-distillation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def soft_targets(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Class indices -> one-hot; multi-hot rows -> y / ||y||_1 (a new tensor: the caller's is untouched)."""
    if y.ndim == 1:
        return F.one_hot(y.long(), n_classes).float()
    y = y.float()
    return y / y.sum(dim=1, keepdim=True).clamp_min(1e-12)


class HashProxyLoss(nn.Module):
    """L_HP (Eq. 3-4): cross-entropy between the targets and softmax(cos(h_T, proxies) / tau)."""

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


class DHD(nn.Module):
    """L = L_HP + lambda1 L_SdH + lambda2 L_bce-Q (Eq. 8), with switches for the paper's ablations.

    ``sdh=False`` drops the student view (Table 3's L_HP rows); ``quantize=False`` drops L_bce-Q;
    ``quantize_proxies`` also applies L_bce-Q to the proxies, as the paper's text says (the official
    code does not).
    """

    needs_proxies = True

    def __init__(
        self,
        temperature: float = 0.2,
        lambda1: float = 0.1,
        lambda2: float = 0.1,
        sigma: float = 0.5,
        sdh: bool = True,
        quantize: bool = True,
        quantize_proxies: bool = False,
    ) -> None:
        super().__init__()
        self.hp = HashProxyLoss(temperature)
        self.sdh_loss = SelfDistillationLoss()
        self.bceq = BCEQuantizationLoss(sigma)
        self.lambda1, self.lambda2 = lambda1, lambda2
        self.sdh, self.quantize, self.quantize_proxies = sdh, quantize, quantize_proxies

    @property
    def needs_student(self) -> bool:
        return self.sdh

    def forward(
        self, h_teacher: torch.Tensor, h_student: torch.Tensor | None, y: torch.Tensor, proxies: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        parts = {"hp": self.hp(h_teacher, proxies, y)}
        loss = parts["hp"]
        if self.sdh:
            parts["sdh"] = self.sdh_loss(h_teacher, h_student)
            loss = loss + self.lambda1 * parts["sdh"]
        if self.quantize:
            parts["bceq"] = self.bceq(h_teacher)
            if self.quantize_proxies:
                parts["bceq"] = parts["bceq"] + self.bceq(proxies)
            loss = loss + self.lambda2 * parts["bceq"]
        parts["loss"] = loss
        return parts


def create_dhd(name: str, **kw) -> DHD:
    """``dhd`` (full), ``dhd-hp`` (L_HP only), ``dhd-hp-bceq`` (L_HP + L_bce-Q): Table 3's ablation rows."""
    variants = {"dhd": {}, "dhd-hp": {"sdh": False, "quantize": False}, "dhd-hp-bceq": {"sdh": False}}
    if name not in variants:
        raise ValueError(f"unknown DHD variant {name!r}; known: {', '.join(variants)}")
    return DHD(**{**kw, **variants[name]})
