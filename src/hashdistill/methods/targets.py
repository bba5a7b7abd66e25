"""Targets shared by the supervised baselines: pair similarity, class-balance weights, class-wise target codes."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..labels import shares_label


def similarity(y_a: torch.Tensor, y_b: torch.Tensor) -> torch.Tensor:
    """s_ij = 1 where items i and j share at least one label, else 0 (float, for the losses' arithmetic)."""
    return shares_label(y_a, y_b).float()


def label_indicator(y: Any, n_classes: int) -> torch.Tensor:
    """(items, classes) float: one-hot rows for class indices, the multi-hot rows as given."""
    y = torch.as_tensor(y)
    return F.one_hot(y.long(), n_classes).float() if y.ndim == 1 else y.float()


def soft_targets(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Class indices -> one-hot; multi-hot rows -> y / ||y||_1 (a new tensor: the caller's is untouched)."""
    t = label_indicator(y, n_classes)
    return t if y.ndim == 1 else t / t.sum(dim=1, keepdim=True).clamp_min(1e-12)


def balance_weights(s: torch.Tensor) -> torch.Tensor:
    """HashNet's and DCH's pair weights: |S| / |S_1| on similar pairs, |S| / |S_0| on dissimilar ones."""
    n_pos, n_all = s.sum(), s.numel()
    return torch.where(s > 0, n_all / n_pos.clamp_min(1), n_all / (n_all - n_pos).clamp_min(1))


def label_codes(y: torch.Tensor, codes: torch.Tensor, ties: torch.Tensor) -> torch.Tensor:
    """Each item's target code in {-1, +1}^K from per-class codes: its class's code, or for multi-hot rows
    sign(sum of its classes' codes) with zero sums taken from ``ties`` (CSQ's multi-label centroid)."""
    if y.ndim == 1:
        return codes[y.long()]
    total = y.float() @ codes
    return torch.where(total > 0, 1.0, torch.where(total < 0, -1.0, ties.expand_as(total)))


def random_signs(rows: int, bits: int, seed: int, balanced: bool = False) -> torch.Tensor:
    """Seeded random {-1, +1} codes; ``balanced`` puts exactly half the bits at -1 in each row (DPN's p = 0.5)."""
    rng = np.random.default_rng(seed)
    if balanced:
        out = np.ones((rows, bits), np.float32)
        for r in range(rows):
            out[r, rng.choice(bits, bits // 2, replace=False)] = -1
        return torch.from_numpy(out)
    return torch.from_numpy(np.where(rng.random((rows, bits)) < 0.5, -1.0, 1.0).astype(np.float32))
