"""CNNH (Xia et al., AAAI 2014): two stages, approximate target codes from the similarity matrix, then
a network learns to predict them."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from scipy.linalg.blas import sger

from ..labels import shares_label
from ..registry import METHODS
from .base import HashingMethod, MethodParams, TrainingContext


def _best_step(a1: float, a2: float, a3: float, a4: float) -> float:
    """argmin over t in [0, 1] of a1 t + a2 t^2 + a3 t^3 + a4 t^4."""
    candidates = [0.0, 1.0]
    for r in np.roots([4 * a4, 3 * a3, 2 * a2, a1]) if a4 or a3 or a2 else []:
        if abs(r.imag) < 1e-9 and 0 < r.real < 1:
            candidates.append(float(r.real))
    return min(candidates, key=lambda t: ((a4 * t + a3) * t + a2) * t * t + a1 * t)


def approximate_codes(s: np.ndarray, bits: int, sweeps: int = 10, seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """CNNH stage 1: H in {-1, +1}^(n x q) minimising ||S - (1/q) H H^T||_F^2, S in {-1, +1} (the paper's S).

    Relaxed to H in [-1, 1] and solved by coordinate descent as the paper's Eq. 6-8: the Newton direction of
    each entry, d = -g'/g'' with g' = 4 (L H)_ij and g'' = 4 (H_j^T H_j + H_ij^2 + L_ii), L = H H^T - q S,
    clipped to the box. Vectorised here: one bit (column) at a time, all rows together, with an exact line
    search along the column's direction (the objective is a quartic in the step), so every update lowers it.
    Returns sign(H) and the mean squared residual ||L||^2 / n^2 / q^2 after each sweep.
    """
    n = len(s)
    rng = np.random.default_rng(seed)
    h = rng.uniform(-1, 1, (n, bits)).astype(np.float32)
    resid = np.asfortranarray(h @ h.T - bits * s.astype(np.float32))  # L, symmetric
    history = []
    for _ in range(sweeps):
        for j in rng.permutation(bits):
            col = h[:, j].copy()
            lh = resid @ col
            g1 = 4 * lh
            g2 = 4 * (col @ col + col**2 + np.diag(resid))
            d = np.clip(-g1 / np.maximum(g2, 1e-6), -1 - col, 1 - col)
            ld = resid @ d
            dh, dd, hh = float(d @ col), float(d @ d), float(col @ col)
            t = _best_step(4 * float(d @ lh), 2 * dd * hh + 2 * dh * dh + 2 * float(d @ ld), 4 * dh * dd, dd * dd)
            if t == 0:
                continue
            u = (t * d).astype(np.float32)
            # L += u h^T + h u^T + u u^T = u (h + u)^T + h u^T, two in-place rank-1 updates
            resid = sger(1.0, u, col + u, a=resid, overwrite_a=True)
            resid = sger(1.0, col, u, a=resid, overwrite_a=True)
            h[:, j] = col + u
        history.append(float(np.square(resid).mean() / bits**2))
    return np.where(h >= 0, 1, -1).astype(np.float32), history


class CNNHParams(MethodParams):
    """sweeps = 10 coordinate-descent sweeps of stage 1 (DeepHash-pytorch's T = 10). Stage 2's ``loss: l1``
    follows DeepHash-pytorch's CNNH.py up to commit 39a56bf; its later versions (cf97ea4 on) regress the
    codes with the mean squared error, ``loss: mse``. The paper trains stage 2 as a CNN whose outputs fit the
    codes (CNNH+ adds class-label outputs, not reproduced)."""

    sweeps: int = Field(10, gt=0)
    """coordinate-descent sweeps of stage 1's code factorisation"""
    loss: Literal["l1", "mse"] = "l1"
    """stage 2's regression of the codes: l1 or mse"""


@METHODS.register("cnnh")
class CNNH(HashingMethod):
    """Stage 2 loss: mean |h_i - H_i| (or (h_i - H_i)^2 with ``loss: mse``) to the item's stage-1 code H_i.

    ``prepare`` runs stage 1 on the training labels (S_ij = +1 when items share a label, else -1); batches
    then carry the images' positions in the training set (``targets = "positions"``). Pointwise: no pairs in
    the batch. Under torchrun stage 1 runs on rank 0 and its codes are broadcast (``shared``).
    """

    Params = CNNHParams
    targets = "positions"
    shared = ("codes",)
    params: CNNHParams

    def __init__(self, params: CNNHParams | None = None, **kw: Any) -> None:
        super().__init__(params, **kw)
        self.codes: torch.Tensor | None = None

    def fit_codes(self, labels: np.ndarray) -> list[float]:
        """Stage 1 on the training labels; returns the residual after each sweep."""
        y = np.asarray(labels)
        same = shares_label(y, y)
        codes, history = approximate_codes(np.where(same, 1, -1).astype(np.float32), self.bits, self.params.sweeps, self.seed)
        self.codes = torch.from_numpy(codes)
        return history

    def prepare(self, ctx: TrainingContext) -> dict[str, Any]:
        return {"stage1_residual": self.fit_codes(ctx.labels)}

    def forward(self, h: torch.Tensor, h_s: torch.Tensor | None, idx: torch.Tensor, proxies=None) -> dict[str, torch.Tensor]:
        if self.codes is None:
            raise RuntimeError("CNNH's stage 1 (prepare / fit_codes) must run before training")
        target = self.codes[idx.cpu().long()].to(h.device)
        error = h - target
        loss = error.abs().mean() if self.params.loss == "l1" else error.pow(2).mean()
        return {"loss": loss}
