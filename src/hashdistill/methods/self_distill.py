"""Self-distillation as a switch for any deep method (DHD's Table 3; docs/algorithms/dhd.md): the method's
loss on the teacher view plus a weighted L_SdH pulling the student view's codes to the detached teacher's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ..errors import HashdistillError
from .base import HashingMethod, TrainingContext
from .dhd import SelfDistillationLoss


class SelfDistilled(HashingMethod):
    """L = L_method(h_T) + weight (1 - cos(sg(h_T), h_S)) (DHD Eq. 2 added to any method's loss).

    The wrapped method sees only the teacher view, exactly as it would train alone; every declaration but
    ``views`` and every hook are the wrapped method's. For a method that reads pre-activations
    (``uses_logits``, HashNet), L_SdH compares those.
    """

    views = 2

    def __init__(self, method: HashingMethod, weight: float = 0.1) -> None:
        if method.views != 1:
            raise HashdistillError(
                f"{type(method).__name__} already trains on two views; self-distillation cannot be added twice"
            )
        super().__init__(method.params, bits=method.bits, n_classes=method.n_classes, seed=method.seed)
        self.method, self.weight = method, weight
        self.sdh = SelfDistillationLoss()

    # the wrapped method's declarations (instance properties over the class attributes)
    targets = property(lambda self: self.method.targets)  # type: ignore[assignment]
    supervised = property(lambda self: self.method.supervised)  # type: ignore[assignment]
    uses_proxies = property(lambda self: self.method.uses_proxies)  # type: ignore[assignment]
    uses_logits = property(lambda self: self.method.uses_logits)  # type: ignore[assignment]

    def prepare(self, ctx: TrainingContext) -> dict[str, Any]:
        return self.method.prepare(ctx)

    def on_epoch(self, epoch: int, ctx: TrainingContext) -> dict[str, Any]:
        return self.method.on_epoch(epoch, ctx)

    def on_step(self, step: int) -> None:
        self.method.on_step(step)

    def proxy_lr_mult(self) -> float:
        return self.method.proxy_lr_mult()

    def shared_state(self) -> dict[str, Any]:
        return self.method.shared_state()

    def load_shared_state(self, state: dict[str, Any]) -> None:
        self.method.load_shared_state(state)

    def anchors_per_batch(self, batch_size: int) -> int:
        return self.method.anchors_per_batch(batch_size)

    def batches(self, order: np.ndarray, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
        return self.method.batches(order, batch_size, rng)

    def forward(
        self, h_teacher: torch.Tensor, h_student: torch.Tensor | None, y: torch.Tensor, proxies: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        parts = dict(self.method(h_teacher, None, y, proxies))
        parts["sdh"] = self.sdh(h_teacher, h_student)
        parts["loss"] = parts["loss"] + self.weight * parts["sdh"]
        return parts
