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

from ._io import atomic_write, write_text
from .augment import view_groups
from .backbones import IMAGENET_MEAN, IMAGENET_STD, create_backbone
from .data.sources import data_home
from .data.splits import digest, take
from .distributed import Distributed
from .errors import ConfigError
from .progress import progress_bar

FEATURES_VERSION = 2  # bump when the views or their features change meaning (invalidates cached features)


def images_key(data: Any, ids: np.ndarray, files: str | None = None) -> dict[str, Any]:
    """The part of a ``frozen_features`` key that names the images: data set, their ids and, for your own
    images, the files' fingerprint (so a replaced image is not served stale features)."""
    return {"version": FEATURES_VERSION, "data": data, "n": len(ids), "ids": digest(ids), **({"files": files} if files else {})}


def train_views_key(cfg: Any, part: str, split: Any) -> dict[str, Any]:
    """The key of a run's cached training views (``views.cached_views``): everything they depend on, from
    the config (backbone, weights by content, input size, layer, crop, s_T, V, seed, data) and the split."""
    m, a = cfg.model, cfg.augment
    return {
        "version": FEATURES_VERSION,
        "backbone": m.backbone, "pretrained": weights_key(m.pretrained), "input_size": m.input_size,
        **({"layer": m.layer} if m.layer is not None else {}),
        "crop_ratio": a.crop_ratio, "crop_scale": list(a.crop_scale), "s_teacher": a.s_teacher,
        "views": a.views, "seed": cfg.runtime.seed, "data": cfg.data.source, "part": part,
        "n": len(split), "ids": digest(split.ids), **({"files": split.files} if split.files else {}),
    }  # fmt: skip


def clean_spec(cfg: Any) -> dict[str, Any]:
    """The ``frozen_features`` spec of a cached-mode run's clean views (its backbone, weights, size, block, crop)."""
    m = cfg.model
    return {"backbone": m.backbone, "pretrained": m.pretrained, "input_size": m.input_size, "layer": m.layer,
            "crop_ratio": cfg.augment.crop_ratio}  # fmt: skip


def weights_key(pretrained: bool | str) -> str:
    """What names a backbone's weights in a feature key: a weights file by its content (a file replaced at the
    same path gets new features), the offline package or no weights by name."""
    path = Path(str(pretrained))
    if isinstance(pretrained, bool) or not path.is_file():
        return str(pretrained)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return f"sha256:{h.hexdigest()[:32]}"


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
    dist: Distributed | None = None,
) -> np.ndarray:
    """Features (N, D) float16 of transformed images, batch by batch. Under torchrun (``dist``): the rows of
    this rank's batches only (``Distributed.my_batches``); every batch is still transformed, so a random
    transform draws on every rank exactly what one process draws, and the merged features are the same."""
    out = []
    n = len(images)
    mine = set(dist.my_batches(n, batch)) if dist is not None else None
    bar = progress_bar(enabled=progress, total=n, desc=desc, unit="images")
    for i, a in enumerate(range(0, n, batch)):
        x = transform(take(images, np.arange(a, min(a + batch, n))).to(device))
        if mine is None or i in mine:
            out.append(backbone(x).float().cpu().numpy().astype(np.float16))
        bar.update(len(x))
    bar.close()
    return np.concatenate(out) if out else np.zeros((0, 0), np.float16)


def batch_rows(n: int, batch: int, dist: Distributed) -> np.ndarray:
    """The rows of ``n`` that this rank's batches cover, in its order."""
    return np.concatenate([np.arange(i * batch, min((i + 1) * batch, n)) for i in dist.my_batches(n, batch)] or [[]]).astype(
        np.int64
    )


class FeatureCache:
    """Cached parts of one feature key; ``get(part, compute)`` returns the array, computing it once."""

    def __init__(self, key_parts: dict[str, Any], root: Path | None = None) -> None:
        self.key = feature_key(key_parts)
        self.dir = (root or data_home() / "features") / self.key
        self.dir.mkdir(parents=True, exist_ok=True)
        write_text(self.dir / "key.json", json.dumps(key_parts, indent=2, default=str))
        self.seconds = 0.0  # time spent computing (0 when everything came from the cache)

    def get(
        self, part: str, compute: Callable[[Distributed | None], np.ndarray], dist: Distributed | None = None
    ) -> np.ndarray:
        """The part's array, computed once by ``compute(dist)``. Under torchrun every rank computes its batches
        (``compute`` returns them with their rows), writes them as a shard, and rank 0 merges the shards into
        the part's file, once."""
        path = self.dir / f"{part}.npy"
        d = dist or Distributed()
        if d.broadcast(path.is_file()):  # one decision for every rank
            arr = _load(path)
            if d.sum([arr is not None])[0] == d.world:
                return arr
            if d.main:
                path.unlink()  # a damaged part is recomputed
        t0 = time.perf_counter()
        if not d.active:
            arr = compute(None)
            atomic_write(path, lambda f: np.save(f, arr))
        else:
            rows, arr = compute(d)
            shard = self.dir / f"{part}.shard-{d.rank}-of-{d.world}.npz"
            atomic_write(shard, lambda f: np.savez(f, rows=rows, features=arr))
            d.barrier()
            if d.main:
                _merge_shards(path, [self.dir / f"{part}.shard-{r}-of-{d.world}.npz" for r in range(d.world)])
            d.barrier()
        self.seconds += time.perf_counter() - t0
        return np.load(path, mmap_mode="r")


def _load(path: Path) -> np.ndarray | None:
    try:
        return np.load(path, mmap_mode="r")
    except ValueError:
        return None


def _merge_shards(path: Path, shards: list[Path]) -> None:
    """The ranks' shards (rows, features) written as one array in row order, then removed."""
    parts = []
    for s in shards:
        with np.load(s, allow_pickle=False) as z:
            parts.append((z["rows"], z["features"]))
    n, dim = sum(len(r) for r, _ in parts), max(f.shape[1] for _, f in parts)
    out = np.empty((n, dim), np.float16)
    for rows, f in parts:
        if len(rows):
            out[rows] = f
    atomic_write(path, lambda fh: np.save(fh, out))
    for s in shards:
        s.unlink()


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
    dist: Distributed | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Teacher and student features (N, V, D) of the training images; view v is drawn with seed (seed, v).
    ``student=None`` computes the teacher views only (for a loss that never sees a student view). Under
    torchrun (``dist``) the ranks share the work (``FeatureCache.get``)."""
    parts_t, parts_s = [], []
    groups = (("teacher", teacher, parts_t),) + ((("student", student, parts_s),) if student is not None else ())
    for v in range(views):
        for name, tf, parts in groups:

            def compute(d: Distributed | None, tf=tf, v=v, name=name) -> Any:
                torch.manual_seed(seed * 1009 + 2 * v + (name == "student"))
                f = compute_features(backbone, images, tf, batch, device, f"{name} view {v + 1}/{views}", progress, d)
                return f if d is None else (batch_rows(len(images), batch, d), f)

            parts.append(cache.get(f"train-{name}-{v}", compute, dist))
    return np.stack(parts_t, axis=1), (np.stack(parts_s, axis=1) if parts_s else None)


def frozen_features(
    spec: dict[str, Any],
    images: Any,
    key: dict[str, Any],
    batch: int = 256,
    device: str = "cpu",
    progress: bool = True,
    desc: str = "features",
    dist: Distributed | None = None,
) -> tuple[np.ndarray, float]:
    """Clean-view features of ``images`` from a frozen ImageNet backbone ``spec`` (backbone, pretrained,
    input_size, layer, optional crop_ratio = 1), cached under ``key`` (which names the images) + the spec;
    returns (features, seconds spent computing). Training (cached mode, DistillHash's pairs) and the
    shallow baselines share these files."""
    spec = {"crop_ratio": 1.0, "layer": None, **spec}
    parts = ("backbone", "pretrained", "input_size", "layer", "crop_ratio")
    cache = FeatureCache({**key, **{k: weights_key(spec[k]) if k == "pretrained" else spec[k] for k in parts}})

    def compute(d: Distributed | None) -> Any:
        net, _ = create_backbone(spec["backbone"], spec["pretrained"], layer=spec["layer"], input_size=int(spec["input_size"]))
        clean = view_groups(
            int(spec["input_size"]), 0.0, crop_ratio=float(spec["crop_ratio"]), mean=IMAGENET_MEAN, std=IMAGENET_STD
        )[2]
        f = compute_features(net.to(device).eval(), images, clean.to(device), batch, device, desc, progress, d)
        return f if d is None else (batch_rows(len(images), batch, d), f)

    f = cache.get("clean", compute, dist)
    return f, cache.seconds


def feature_spec(backbone: str, pretrained: bool | str, input_size: int, layer: int | None) -> dict[str, Any]:
    """The frozen-features spec ``frozen_features`` takes: a pretrained ``backbone`` cut after block ``layer``
    (None: its final features) at ``input_size`` px, with ``pretrained`` weights (True: the offline package)."""
    return {"backbone": backbone, "pretrained": pretrained, "input_size": int(input_size), "layer": layer}


def parse_feature_spec(text: str) -> dict[str, Any]:
    """``mobilenet_v2@64`` or ``mobilenet_v2@64/14`` (backbone @ input size / block) -> a frozen-features spec."""
    try:
        name, rest = text.split("@", 1)
        size, _, layer = rest.partition("/")
        return feature_spec(name, True, int(size), int(layer) if layer else None)
    except ValueError:
        raise ConfigError(f"features {text!r}: expected pixels or BACKBONE@SIZE[/BLOCK], e.g. mobilenet_v2@64/14") from None


def feature_name(spec: dict[str, Any]) -> str:
    """The inverse of ``parse_feature_spec``: the name result rows carry."""
    layer, size = spec.get("layer"), spec["input_size"]
    sizes = "+".join(str(s) for s in size) if isinstance(size, list | tuple) else str(size)
    return f"{spec['backbone']}@{sizes}" + (f"/{layer}" if layer is not None else "")
