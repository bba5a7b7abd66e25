"""ADSH, Asymmetric Deep Supervised Hashing (Jiang & Li, AAAI 2018): the network learns query codes u_i while the
training images' codes V are learned directly, by a discrete step each epoch; docs/algorithms/baselines.md."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field

from ..labels import shares_label
from ..registry import METHODS
from .base import HashingMethod, MethodParams, TrainingContext
from .targets import random_signs


class ADSHParams(MethodParams):
    """gamma = 200 is the paper's; the soft similarity S = (1 + r) [shares a label] - r, r = |S_1| / |S_0|
    (``soft``), is the authors' code as DeepHash-pytorch's ADSH.py keeps it (the paper: S in {-1, +1})."""

    gamma: float = Field(200.0, ge=0)
    """the weight of ||V_i - u_i||^2, tying a training image's learned code to the network's output"""
    soft: bool = True
    """rescale S so that similar and dissimilar pairs weigh the same in total"""
    block: int = Field(1024, gt=0)
    """rows of S per block in the whole-set V-step"""


def pair_targets(y_rows: np.ndarray, y_all: np.ndarray, soft: bool, ratio: float) -> torch.Tensor:
    """S for rows x all training images: +1 / -1 (shares a label or not), or (1 + r) S01 - r with ``soft``."""
    s = torch.as_tensor(shares_label(y_rows, y_all)).float()
    return s * (1 + ratio) - ratio if soft else 2 * s - 1


def v_step(v: torch.Tensor, u: torch.Tensor, st_u: torch.Tensor, bits: int, gamma: float) -> torch.Tensor:
    """The paper's Eq. 10, one bit (column) at a time: V_k = -sign(2 V_~k U_~k^T U_k + Q_k) with
    Q = -2 K S^T U - 2 gamma U (every training image sampled, so U-bar = U); ``st_u`` = S^T U. Each column
    minimises ||U V^T - K S||^2 + gamma ||V - U||^2 over {-1, +1} with the others fixed."""
    v = v.clone()
    q = -2 * bits * st_u - 2 * gamma * u
    for k in range(bits):
        rest = torch.arange(bits) != k
        arg = 2 * v[:, rest] @ (u[:, rest].T @ u[:, k]) + q[:, k]
        v[:, k] = torch.where(arg > 0, -1.0, 1.0)
    return v


@METHODS.register("adsh")
class ADSH(HashingMethod):
    """L = sum_{i in batch} [ sum_j (u_i . V_j - K S_ij)^2 + gamma ||V_i - u_i||^2 ] / (n |batch|)

    (the paper's Eq. 4, with the sampled set = the whole training set: every epoch is one outer iteration).
    u = tanh output of the network, V (n x K, {-1, +1}) the training images' codes: the database side the
    paper learns directly. The contract carries V as whole-set state: ``prepare`` draws it (seeded random signs)
    and keeps the training labels, ``on_epoch`` runs the discrete V-step from the network's current codes of
    every training image (``ctx.encode``), and ``shared`` sends V to every rank under torchrun. Batches carry
    positions. Evaluation encodes queries and database through the network, so unlike the paper the database
    does not keep V (our protocols' database is larger than the training set).
    """

    Params = ADSHParams
    targets = "positions"
    shared = ("v", "labels", "ratio")
    params: ADSHParams

    def __init__(self, params: ADSHParams | None = None, **kw: Any) -> None:
        super().__init__(params, **kw)
        self.v: torch.Tensor | None = None
        self.labels: np.ndarray | None = None
        self.ratio = 0.0

    def prepare(self, ctx: TrainingContext) -> dict[str, Any]:
        self.labels = np.asarray(ctx.labels)
        same = 0
        for a in range(0, ctx.n, self.params.block):
            same += int(shares_label(self.labels[a : a + self.params.block], self.labels).sum())
        self.ratio = same / max(1, ctx.n * ctx.n - same)
        if self.v is None:
            self.v = random_signs(ctx.n, self.bits, self.seed)
        return {}

    def on_epoch(self, epoch: int, ctx: TrainingContext) -> dict[str, Any]:
        """From the second epoch on: the V-step with the network's codes of every training image."""
        if epoch == 0:
            return {}
        u = torch.as_tensor(ctx.encode(), dtype=torch.float32)
        st_u = torch.zeros_like(u)
        for a in range(0, ctx.n, self.params.block):
            s = pair_targets(self.labels[a : a + self.params.block], self.labels, self.params.soft, self.ratio)
            st_u += s.T @ u[a : a + self.params.block]
        before = self.v
        self.v = v_step(self.v, u, st_u, self.bits, self.params.gamma)
        return {"v_changed": float((self.v != before).float().mean())}

    def forward(self, u: torch.Tensor, u_s: torch.Tensor | None, idx: torch.Tensor, proxies=None) -> dict[str, torch.Tensor]:
        if self.v is None:
            raise RuntimeError("ADSH.prepare must run before training")
        i = idx.cpu().long()
        s = pair_targets(self.labels[i.numpy()], self.labels, self.params.soft, self.ratio).to(u.device)
        v = self.v.to(u.device)
        square = (u @ v.T - self.bits * s).pow(2).sum()
        quant = (v[i.to(u.device)] - u).pow(2).sum()
        scale = len(v) * len(u)
        return {"loss": (square + self.params.gamma * quant) / scale, "square": square / scale, "quant": quant / scale}
