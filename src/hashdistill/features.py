"""The CPU-fast mode: features of a frozen backbone, computed once and cached on disk.

For every training image, ``V`` teacher views and ``V`` student views; for queries and database, one
clean view. Stored as float16 under ``<data_home>/features/<key>/<part>.npy``, one file per part
(written atomically, so an interrupted computation resumes at the next missing part). The key hashes
everything the features depend on: backbone and weights, input size, crop, s_T, V, seed and the data.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ._io import atomic_write
from .data.sources import data_home
from .datasets import take


def feature_key(parts: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@torch.inference_mode()
def compute_features(
    backbone: nn.Module,
    images: Any,
    transform: Callable[[torch.Tensor], torch.Tensor],
    batch: int = 256,
    device: str = "cpu",
    desc: str = "features",
    progress: bool = True,
) -> np.ndarray:
    """Features (N, D) float16 of transformed images, batch by batch."""
    out = []
    n = len(images)
    for a in tqdm(range(0, n, batch), desc=desc, disable=not progress, leave=False):
        x = transform(take(images, np.arange(a, min(a + batch, n))).to(device))
        out.append(backbone(x).float().cpu().numpy().astype(np.float16))
    return np.concatenate(out)


class FeatureCache:
    """Cached parts of one feature key; ``get(part, compute)`` returns the array, computing it once."""

    def __init__(self, key_parts: dict[str, Any], root: Path | None = None) -> None:
        self.key = feature_key(key_parts)
        self.dir = (root or data_home() / "features") / self.key
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "key.json").write_text(json.dumps(key_parts, indent=2, default=str))
        self.seconds = 0.0  # time spent computing (0 when everything came from the cache)

    def get(self, part: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        path = self.dir / f"{part}.npy"
        if path.is_file():
            try:
                return np.load(path, mmap_mode="r")
            except ValueError:
                path.unlink()  # a damaged part is recomputed
        t0 = time.perf_counter()
        arr = compute()
        self.seconds += time.perf_counter() - t0
        atomic_write(path, lambda f: np.save(f, arr))
        return np.load(path, mmap_mode="r")


def view_features(
    cache: FeatureCache,
    backbone: nn.Module,
    images: Any,
    teacher: nn.Module,
    student: nn.Module,
    views: int,
    seed: int,
    batch: int,
    device: str,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Teacher and student features (N, V, D) of the training images; view v is drawn with seed (seed, v)."""
    parts_t, parts_s = [], []
    for v in range(views):
        for name, tf, parts in (("teacher", teacher, parts_t), ("student", student, parts_s)):

            def compute(tf=tf, v=v, name=name) -> np.ndarray:
                torch.manual_seed(seed * 1009 + 2 * v + (name == "student"))
                return compute_features(backbone, images, tf, batch, device, f"{name} view {v + 1}/{views}", progress)

            parts.append(cache.get(f"train-{name}-{v}", compute))
    return np.stack(parts_t, axis=1), np.stack(parts_s, axis=1)
