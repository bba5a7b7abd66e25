"""Self-distilled hashing as a switch for any deep method (DHD's Table 3): the method's loss on the teacher
view plus lambda1 L_SdH pulling the student view's codes to the detached teacher's."""

from __future__ import annotations

import torch
from torch import nn

from .dhd import SelfDistillationLoss


class SelfDistilled(nn.Module):
    """L = L_method(h_T) + lambda1 (1 - cos(sg(h_T), h_S)) (DHD Eq. 2 added to any method's loss).

    The wrapped method sees only the teacher view, exactly as it would train alone; its hooks (``prepare``,
    ``setup``, ``set_step``...) stay on the method itself. For a method that reads pre-activations
    (``wants_logits``, HashNet), L_SdH compares those.
    """

    needs_student = True

    def __init__(self, method: nn.Module, lambda1: float = 0.1) -> None:
        super().__init__()
        if getattr(method, "needs_student", False):
            raise ValueError(f"{type(method).__name__} already trains on two views; SdH cannot be added twice")
        self.method, self.lambda1 = method, lambda1
        self.sdh = SelfDistillationLoss()

    def forward(
        self, h_teacher: torch.Tensor, h_student: torch.Tensor, y: torch.Tensor, proxies: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        parts = dict(self.method(h_teacher, None, y, proxies))
        parts["sdh"] = self.sdh(h_teacher, h_student)
        parts["loss"] = parts["loss"] + self.lambda1 * parts["sdh"]
        return parts
