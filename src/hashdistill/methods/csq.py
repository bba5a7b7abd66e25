"""CSQ, Central Similarity Quantization (Yuan et al., CVPR 2020): hash centres + BCE + quantization."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from scipy.linalg import hadamard

from .base import HashingMethod, MethodParams
from .targets import label_codes, random_signs


def hash_centres(n_classes: int, bits: int, seed: int = 0) -> torch.Tensor:
    """CSQ's hash centres: rows of [H; -H] for a K x K Hadamard matrix H when K is a power of two and
    n_classes <= 2K (pairwise Hamming distance >= K/2), else seeded Bernoulli(0.5) codes."""
    if bits & (bits - 1) == 0 and n_classes <= 2 * bits:
        h = hadamard(bits)
        return torch.from_numpy(np.concatenate([h, -h])[:n_classes].astype(np.float32))
    return random_signs(n_classes, bits, seed)


class CSQParams(MethodParams):
    """lambda_q = 1e-4 (the released code)."""

    lambda_q: float = Field(1e-4, ge=0)


class CSQ(HashingMethod):
    """L = BCE((h + 1)/2, (c + 1)/2) + lambda_q mean (|h| - 1)^2 (CSQ's central similarity + quantization)

    with c the item's hash centre (multi-hot rows: the centroid of their classes' centres, binarised, ties
    from a fixed random vector, as CSQ does for multi-label data).
    """

    Params = CSQParams
    params: CSQParams

    def __init__(self, params: CSQParams | None = None, **kw) -> None:
        super().__init__(params, **kw)
        self.register_buffer("centres", hash_centres(self.n_classes, self.bits, self.seed))
        self.register_buffer("ties", random_signs(1, self.bits, self.seed + 1))

    def forward(self, h: torch.Tensor, h_s: torch.Tensor | None, y: torch.Tensor, proxies=None) -> dict[str, torch.Tensor]:
        c = label_codes(y, self.centres.to(h.device), self.ties.to(h.device))
        centre = F.binary_cross_entropy((h + 1) / 2, (c + 1) / 2)
        quant = (h.abs() - 1).pow(2).mean()
        return {"loss": centre + self.params.lambda_q * quant, "centre": centre, "quant": quant}
