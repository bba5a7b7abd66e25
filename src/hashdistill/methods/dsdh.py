"""DSDH, Deep Supervised Discrete Hashing (Li et al., NeurIPS 2017): the pairwise likelihood on the network's
outputs, tied to discrete codes B that also regress the labels linearly; B and the classifier W are solved
each epoch (discrete cyclic coordinate descent); docs/algorithms/baselines.md."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field, PositiveInt

from ..registry import METHODS
from .base import HashingMethod, MethodParams, TrainingContext
from .dhn import pair_nll
from .targets import label_indicator, random_signs, similarity


class DSDHParams(MethodParams):
    """mu = 1, nu = 1, eta = 55 and 10 DCC iterations follow DeepHash-pytorch's DSDH.py (whose network loss leaves
    out the eta term; here it is the paper's)."""

    mu: float = Field(1.0, gt=0)
    """the weight of the label regression ||Y - W^T B||^2 in the B / W step"""
    nu: float = Field(1.0, ge=0)
    """the weight of ||W||^2"""
    eta: float = Field(55.0, ge=0)
    """the weight of ||B - U||^2, tying the discrete codes to the network's outputs"""
    dcc_iter: PositiveInt = 10
    """alternations of the W-step and the bit-wise B-step each epoch"""


def b_w_step(b: torch.Tensor, u: torch.Tensor, y: torch.Tensor, p: DSDHParams) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's Eq. 9-13 (B: K x n, U: K x n, Y: classes x n): alternate W = (B B^T + nu/mu I)^-1 B Y^T and,
    one bit (row) at a time, B_k = sign(P_k - W_k^T W_~k^T B_~k) with P = W Y + eta/mu U; returns (B, W)."""
    b = b.clone()
    bits = len(b)
    eye = torch.eye(bits, dtype=b.dtype)
    for _ in range(p.dcc_iter):
        w = torch.linalg.solve(b @ b.T + p.nu / p.mu * eye, b @ y.T)
        q = w @ y + p.eta / p.mu * u
        for k in range(bits):
            rest = torch.arange(bits) != k
            b[k] = torch.where(q[k] - (w[rest] @ w[k]) @ b[rest] >= 0, 1.0, -1.0)
    return b, w


@METHODS.register("dsdh")
class DSDH(HashingMethod):
    """L = mean_ij [log(1 + exp(Theta_ij)) - s_ij Theta_ij] + eta sum_i ||B_i - u_i||^2 / (n_b n), Theta_ij = u_i . u_j / 2

    (the paper's Eq. 8 for the network, a batch's share of its sums over all n^2 pairs and n items, divided by
    n_b n: the batch's n_b^2 pairs stand for its n_b x n, so the tie keeps its weight against the pairs)
    over the batch's pairs (under torchrun, the local batch), u the network's tanh outputs, B_i the image's
    discrete code from the last B / W step (``on_epoch`` from the network's codes of every training image,
    ``ctx.encode``; seeded random signs before the first). The label regression ||Y - W^T B||^2 + ||W||^2 acts
    through B only, so it lives in that step (``b_w_step``). Batches carry positions; B is shared under torchrun.
    """

    Params = DSDHParams
    targets = "positions"
    shared = ("b", "labels")
    params: DSDHParams

    def __init__(self, params: DSDHParams | None = None, **kw: Any) -> None:
        super().__init__(params, **kw)
        self.b: torch.Tensor | None = None  # (n, K)
        self.labels: np.ndarray | None = None

    def prepare(self, ctx: TrainingContext) -> dict[str, Any]:
        self.labels = np.asarray(ctx.labels)
        if self.b is None:
            self.b = random_signs(ctx.n, self.bits, self.seed)
        return {}

    def on_epoch(self, epoch: int, ctx: TrainingContext) -> dict[str, Any]:
        if epoch == 0:
            return {}
        u = torch.as_tensor(ctx.encode(), dtype=torch.float32)
        b, _ = b_w_step(self.b.T.contiguous(), u.T, label_indicator(self.labels, self.n_classes).T, self.params)
        before, self.b = self.b, b.T.contiguous()
        return {"b_changed": float((self.b != before).float().mean())}

    def forward(self, u: torch.Tensor, u_s: torch.Tensor | None, idx: torch.Tensor, proxies=None) -> dict[str, torch.Tensor]:
        if self.b is None:
            raise RuntimeError("DSDH.prepare must run before training")
        i = idx.cpu().long()
        y = torch.as_tensor(self.labels[i.numpy()]).to(u.device)
        pair = pair_nll(0.5 * u @ u.T, similarity(y, y)).mean()
        tie = (self.b[i].to(u.device) - u).pow(2).sum() / (len(u) * len(self.b))
        return {"loss": pair + self.params.eta * tie, "pair": pair, "tie": tie}
