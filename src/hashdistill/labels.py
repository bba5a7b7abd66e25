"""The one relevance rule of the project: two items are similar when they share at least one label.

Labels are a class vector (N,) or a multi-hot matrix (N, C). Metrics, the supervised losses, the shallow
hashers, DistillHash's purity report and the HTML report all call ``shares_label`` (docs/protocols.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

Array = TypeVar("Array", np.ndarray, "torch.Tensor")


def shares_label(a: Array, b: Array) -> Array:
    """Boolean (len(a), len(b)): True where item i of ``a`` and item j of ``b`` share a label.

    Works on numpy arrays and torch tensors alike (the result has the input's kind).
    """
    if a.ndim == 1:
        return a[:, None] == b[None, :]
    if isinstance(a, np.ndarray):
        return (a.astype(np.float32, copy=False) @ b.astype(np.float32, copy=False).T) > 0
    return (a.float() @ b.float().T) > 0
