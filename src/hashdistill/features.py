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

from ._io import atomic_write
from .augment import view_groups
from .backbones import IMAGENET_MEAN, IMAGENET_STD, create_backbone
from .data.sources import data_home
from .data.splits import digest, take
from .progress import progress_bar

FEATURES_VERSION = 2  # bump when the views or their features change meaning (invalidates cached features)


def images_key(data: Any, ids: np.ndarray, files: str | None = None) -> dict[str, Any]:
    """The part of a ``frozen_features`` key that names the images: data set, their ids and, for your own
    images, the files' fingerprint (so a replaced image is not served stale features)."""
    return {"version": FEATURES_VERSION, "data": data, "n": len(ids), "ids": digest(ids), **({"files": files} if files else {})}


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
    for a in progress_bar(range(0, n, batch), enabled=progress, desc=desc):
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
    student: nn.Module | None,
    views: int,
    seed: int,
    batch: int,
    device: str,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Teacher and student features (N, V, D) of the training images; view v is drawn with seed (seed, v).
    ``student=None`` computes the teacher views only (for a loss that never sees a student view)."""
    parts_t, parts_s = [], []
    groups = (("teacher", teacher, parts_t),) + ((("student", student, parts_s),) if student is not None else ())
    for v in range(views):
        for name, tf, parts in groups:

            def compute(tf=tf, v=v, name=name) -> np.ndarray:
                torch.manual_seed(seed * 1009 + 2 * v + (name == "student"))
                return compute_features(backbone, images, tf, batch, device, f"{name} view {v + 1}/{views}", progress)

            parts.append(cache.get(f"train-{name}-{v}", compute))
    return np.stack(parts_t, axis=1), (np.stack(parts_s, axis=1) if parts_s else None)


def frozen_features(
    spec: dict[str, Any],
    images: Any,
    key: dict[str, Any],
    batch: int = 256,
    device: str = "cpu",
    progress: bool = True,
    desc: str = "features",
) -> tuple[np.ndarray, float]:
    """Clean-view features of ``images`` from a frozen ImageNet backbone ``spec`` (backbone, pretrained,
    input_size, layer, optional crop_ratio = 1), cached under ``key`` (which names the images) + the spec;
    returns (features, seconds spent computing). Training (cached mode, DistillHash's pairs) and the
    shallow baselines share these files."""
    spec = {"crop_ratio": 1.0, "layer": None, **spec}
    parts = ("backbone", "pretrained", "input_size", "layer", "crop_ratio")
    cache = FeatureCache({**key, **{k: str(spec[k]) if k == "pretrained" else spec[k] for k in parts}})

    def compute() -> np.ndarray:
        net, _ = create_backbone(spec["backbone"], spec["pretrained"], layer=spec["layer"], input_size=int(spec["input_size"]))
        clean = view_groups(
            int(spec["input_size"]), 0.0, crop_ratio=float(spec["crop_ratio"]), mean=IMAGENET_MEAN, std=IMAGENET_STD
        )[2]
        return compute_features(net.to(device).eval(), images, clean.to(device), batch, device, desc, progress)

    f = cache.get("clean", compute)
    return f, cache.seconds


def parse_feature_spec(text: str) -> dict[str, Any]:
    """``mobilenet_v2@64`` or ``mobilenet_v2@64/14`` (backbone @ input size / block) -> a frozen-features spec."""
    try:
        name, rest = text.split("@", 1)
        size, _, layer = rest.partition("/")
        return {"backbone": name, "pretrained": True, "input_size": int(size), "layer": int(layer) if layer else None}
    except ValueError:
        raise ValueError(f"features {text!r}: expected pixels or BACKBONE@SIZE[/BLOCK], e.g. mobilenet_v2@64/14") from None


def feature_name(spec: dict[str, Any]) -> str:
    """The inverse of ``parse_feature_spec``: the name result rows carry."""
    layer, size = spec.get("layer"), spec["input_size"]
    sizes = "+".join(str(s) for s in size) if isinstance(size, list | tuple) else str(size)
    return f"{spec['backbone']}@{sizes}" + (f"/{layer}" if layer is not None else "")
