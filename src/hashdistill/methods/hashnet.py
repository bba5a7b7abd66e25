"""HashNet (Cao et al., ICCV 2017): weighted pairwise likelihood on tanh(beta z), beta raised by continuation."""

from __future__ import annotations

import torch
from torch import nn

from .dhn import pair_nll
from .labels import balance_weights, similarity


class HashNet(nn.Module):
    """L = sum_ij w_ij [log(1 + exp(a <h_i, h_j>)) - s_ij a <h_i, h_j>] / sum_ij w_ij, h = tanh(beta z)

    (HashNet's weighted maximum likelihood). Weights re-balance the batch's pairs: w_ij = |S| / |S_1| for similar pairs and
    |S| / |S_0| for dissimilar ones. The adaptive sigmoid a = 10 / K (the released code). Continuation:
    beta = (1 + gamma t)^power at step t, raised every ``step_size`` steps (released code:
    gamma = 0.005, power = 0.5, step_size = 200). The method reads the pre-activation z (``wants_logits``).
    """

    wants_logits = True

    def __init__(
        self, bits: int = 64, n_classes: int = 0, seed: int = 0, alpha: float | None = None,
        gamma: float = 0.005, power: float = 0.5, step_size: int = 200,
    ) -> None:  # fmt: skip
        super().__init__()
        self.alpha = 10.0 / bits if alpha is None else alpha
        self.gamma, self.power, self.step_size = gamma, power, step_size
        self.beta = 1.0

    def set_step(self, step: int) -> None:
        """The trainer's global step: sets the continuation scale beta."""
        self.beta = (1 + self.gamma * (step // self.step_size * self.step_size)) ** self.power

    def forward(self, z: torch.Tensor, z_s: torch.Tensor | None, y: torch.Tensor, proxies=None) -> dict[str, torch.Tensor]:
        h = torch.tanh(self.beta * z)
        s = similarity(y, y)
        w = balance_weights(s)
        pair = (w * pair_nll(self.alpha * h @ h.T, s)).sum() / w.sum()
        return {"loss": pair, "pair": pair, "beta": torch.tensor(self.beta)}
