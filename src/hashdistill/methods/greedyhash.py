"""GreedyHash (Su et al., NeurIPS 2018): sign in the forward pass with the gradient passed straight through,
a classification layer on the binary codes, and the cubic penalty; docs/algorithms/baselines.md."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from ..registry import METHODS
from .base import HashingMethod, MethodParams


class _SignStraightThrough(torch.autograd.Function):
    """b = sign(h) forward; dL/dh = dL/db backward (the paper's Eq. 6-7: the greedy step's gradient)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor) -> torch.Tensor:
        return torch.where(h >= 0, 1.0, -1.0).to(h.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


def sign_straight_through(h: torch.Tensor) -> torch.Tensor:
    return _SignStraightThrough.apply(h)


def cubic_penalty(h: torch.Tensor) -> torch.Tensor:
    """mean | |h| - 1 |^3: the paper's ||H - B||_3^3 as DeepHash-pytorch writes it, averaged."""
    return (h.abs() - 1).pow(3).abs().mean()


class GreedyHashParams(MethodParams):
    """alpha = 0.1 follows DeepHash-pytorch's GreedyHash.py (1 for ImageNet there); the classification layer is
    the model's trainable proxies (classes x K, no bias), as its Linear(K, classes, bias=False)."""

    alpha: float = Field(0.1, ge=0)
    """the weight of the cubic penalty mean | |h| - 1 |^3"""


@METHODS.register("greedyhash")
class GreedyHash(HashingMethod):
    """L = CE(b W^T, y) + alpha mean | |h| - 1 |^3, b = sign(h) with a straight-through gradient

    (the paper's supervised objective, Eq. 8: a classifier on the binary codes, with the penalty ||H - B||_3^3
    written as DeepHash-pytorch does). h is the hash layer's output before tanh (``uses_logits``); W is the
    model's proxies (``uses_proxies``). Multi-hot labels take per-class BCE. Pointwise: no pairs in the batch.
    """

    Params = GreedyHashParams
    uses_logits = True
    uses_proxies = True
    params: GreedyHashParams

    def forward(self, h: torch.Tensor, h_s: torch.Tensor | None, y: torch.Tensor, proxies=None) -> dict[str, torch.Tensor]:
        logits = sign_straight_through(h) @ proxies.T
        ce = F.cross_entropy(logits, y.long()) if y.ndim == 1 else F.binary_cross_entropy_with_logits(logits, y.float())
        penalty = cubic_penalty(h)
        return {"loss": ce + self.params.alpha * penalty, "ce": ce, "penalty": penalty}
