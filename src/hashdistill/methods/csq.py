"""CSQ, Central Similarity Quantization (Yuan et al., CVPR 2020): hash centres + BCE + quantization."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from scipy.linalg import hadamard

from ..registry import METHODS
from .base import HashingMethod, MethodParams, TrainingContext
from .dhn import pair_nll
from .targets import label_codes, random_signs, similarity


def min_distance(codes: np.ndarray | torch.Tensor) -> int:
    """The smallest Hamming distance between two different rows of a {-1, +1} code matrix."""
    c = np.asarray(codes, np.int64)
    d = (c.shape[1] - c @ c.T) // 2
    np.fill_diagonal(d, c.shape[1] + 1)
    return int(d.min())


def balanced_centres(n_classes: int, bits: int, seed: int = 0, restarts: int = 2, steps: int | None = None) -> np.ndarray:
    """``n_classes`` codes in {-1, +1}^bits, balanced per bit (each bit splits the classes in half), with the
    minimum pairwise Hamming distance maximised by a seeded local search.

    Each restart draws every bit as a random balanced split of the classes, then repeatedly takes a closest
    pair, picks a bit on which they agree and swaps that bit between one of them and a class on the other
    side (which keeps the bit balanced), keeping the swap unless it lowers (minimum distance, -pairs at it).
    The best restart wins. The CSQ authors balance each centre instead (K/2 bits at -1) and keep a Bernoulli
    draw once its minimum distance reaches a set value (20 at 64 bits); for 100 classes their released
    centres reach 2 at 16 bits and 8 at 32 bits, this search 4 and 12 (``tests/test_baselines.py``).
    """
    rng = np.random.default_rng(seed)
    steps = steps or max(200, min(3000, int(3e7 / (n_classes * n_classes))))
    best, best_key = None, None
    for _ in range(restarts):
        c = np.empty((n_classes, bits), np.int64)
        for j in range(bits):
            plus = n_classes // 2 + (n_classes % 2) * int(rng.random() < 0.5)
            c[:, j] = rng.permutation(np.r_[np.ones(plus, np.int64), -np.ones(n_classes - plus, np.int64)])
        d = (bits - c @ c.T) // 2
        np.fill_diagonal(d, bits + 1)
        key = (d.min(), -(d == d.min()).sum())
        for _ in range(steps):
            ia, ib = np.nonzero(np.triu(d == key[0]))
            p = rng.integers(len(ia))
            a, b = ia[p], ib[p]
            x = a if rng.random() < 0.5 else b
            agree = np.nonzero(c[a] == c[b])[0]
            j = agree[rng.integers(len(agree))]
            others = np.nonzero(c[:, j] != c[x, j])[0]
            y = others[rng.integers(len(others))]
            c[x, j], c[y, j] = c[y, j], c[x, j]
            rows = [x, y]
            old = d[rows].copy()
            new = (bits - c[rows] @ c.T) // 2
            new[0, x] = new[1, y] = bits + 1
            d[rows], d[:, rows] = new, new.T
            moved = (d.min(), -(d == d.min()).sum())
            if moved >= key:
                key = moved
            else:  # undo
                c[x, j], c[y, j] = c[y, j], c[x, j]
                d[rows], d[:, rows] = old, old.T
        if best_key is None or key > best_key:
            best, best_key = c.copy(), key
    return best.astype(np.float32)


def hash_centres(n_classes: int, bits: int, seed: int = 0) -> torch.Tensor:
    """CSQ's hash centres: rows of [H; -H] for a K x K Hadamard matrix H when K is a power of two and
    n_classes <= 2K (pairwise Hamming distance K/2, the paper's construction), else ``balanced_centres``."""
    if bits & (bits - 1) == 0 and n_classes <= 2 * bits:
        h = hadamard(bits)
        return torch.from_numpy(np.concatenate([h, -h])[:n_classes].astype(np.float32))
    return torch.from_numpy(balanced_centres(n_classes, bits, seed))


class CSQParams(MethodParams):
    """lambda_q = 1e-4 follows DeepHash-pytorch's CSQ.py (the reimplementation the comparison was run
    with). The authors' code (yuanli2333/Hadamard-Matrix-for-hashing, train.py) trains
    BCE + 0.2 x pairwise + 0.05 x quantization: ``pairwise_weight: 0.2, lambda_q: 0.05``."""

    lambda_q: float = Field(1e-4, ge=0)
    """the quantization term's weight"""
    pairwise_weight: float = Field(0.0, ge=0)
    """the authors' extra pairwise term's weight (0: off)"""


@METHODS.register("csq")
class CSQ(HashingMethod):
    """L = BCE((h + 1)/2, (c + 1)/2) + lambda_q mean (|h| - 1)^2 [+ pairwise_weight L_pair]

    (CSQ's central similarity and quantization terms) with c the item's hash centre (multi-hot rows:
    the centroid of their classes' centres, binarised, ties from a fixed random vector, as CSQ does for
    multi-label data). L_pair is the authors' code's extra term: the pairwise likelihood (DHN's, sigmoid
    scale 10/K) between the first and the second half of each batch (under torchrun: of each rank's local batch).
    """

    Params = CSQParams
    params: CSQParams

    def __init__(self, params: CSQParams | None = None, **kw: Any) -> None:
        super().__init__(params, **kw)
        self.register_buffer("centres", hash_centres(self.n_classes, self.bits, self.seed))
        self.register_buffer("ties", random_signs(1, self.bits, self.seed + 1))

    def prepare(self, ctx: TrainingContext) -> dict[str, Any]:
        return {"centre_min_distance": min_distance(self.centres)} if len(self.centres) > 1 else {}

    def forward(self, h: torch.Tensor, h_s: torch.Tensor | None, y: torch.Tensor, proxies=None) -> dict[str, torch.Tensor]:
        p = self.params
        c = label_codes(y, self.centres.to(h.device), self.ties.to(h.device))
        centre = F.binary_cross_entropy((h + 1) / 2, (c + 1) / 2)
        quant = (h.abs() - 1).pow(2).mean()
        parts = {"centre": centre, "quant": quant}
        loss = centre + p.lambda_q * quant
        if p.pairwise_weight:
            half = len(h) // 2
            a, b = h[:half], h[half : 2 * half]
            parts["pair"] = pair_nll(10.0 / h.shape[1] * a @ b.T, similarity(y[:half], y[half : 2 * half])).mean()
            loss = loss + p.pairwise_weight * parts["pair"]
        return {"loss": loss, **parts}
