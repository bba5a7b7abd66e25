"""Where a training batch's views come from (docs/architecture.md, "Training").

A view source answers ``views(idx, rng, need_student) -> (x_teacher, x_student or None)`` for the training
positions ``idx``: ``ImageViews`` (``model.mode: end-to-end``) draws kornia views of the images, which then go
through the backbone; ``CachedViews`` (``cached``) picks, per image, one of its V teacher and V student
feature views of a frozen backbone, computed once and cached on disk (``cached_views``, ``features.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .backbones import create_backbone
from .data.splits import Split, take
from .distributed import Distributed
from .features import FeatureCache, train_views_key, view_features

if TYPE_CHECKING:
    from .config import Config


class ImageViews:
    """End-to-end source: augmented teacher / student views of image batches."""

    def __init__(self, split: Split, teacher: torch.nn.Module, student: torch.nn.Module, device: str) -> None:
        self.split, self.teacher, self.student, self.device = split, teacher, student, device

    def views(self, idx: np.ndarray, rng: np.random.Generator, need_student: bool) -> tuple[Any, Any]:
        x = take(self.split.images, idx).to(self.device)
        return self.teacher(x), (self.student(x) if need_student else None)


class CachedViews:
    """Cached source: per image, one of its V teacher and V student feature views, drawn at random."""

    def __init__(self, teacher: np.ndarray, student: np.ndarray | None, device: str) -> None:
        self.teacher, self.student, self.device = teacher, student, device

    def views(self, idx: np.ndarray, rng: np.random.Generator, need_student: bool) -> tuple[Any, Any]:
        v = self.teacher.shape[1]
        vt, vs = rng.integers(0, v, len(idx)), rng.integers(0, v, len(idx))
        ft = torch.from_numpy(np.asarray(self.teacher[idx, vt], np.float32)).to(self.device)
        fs = torch.from_numpy(np.asarray(self.student[idx, vs], np.float32)).to(self.device) if need_student else None
        return ft, fs


def cached_views(
    cfg: Config, split: Split, teacher: torch.nn.Module, student: torch.nn.Module | None, device: str,
    progress: bool, dist: Distributed,
) -> tuple[CachedViews, int, float]:  # fmt: skip
    """The frozen backbone's features of ``augment.views`` teacher (and, unless ``student`` is None, student)
    views of ``split``'s images, computed once; returns the source, the features' width (the head's input) and
    the seconds spent computing (0 when every part was cached). Student views only for a loss that sees them:
    each view costs a backbone pass."""
    m, r = cfg.model, cfg.runtime
    backbone, dim = create_backbone(m.backbone, m.pretrained, layer=m.layer, input_size=m.input_size)
    cache = FeatureCache(train_views_key(cfg, "train-views", split))
    ft, fs = view_features(
        cache, backbone.to(device).eval(), split.images, teacher, student, cfg.augment.views, r.seed, r.feature_batch,
        device, progress, dist,
    )  # fmt: skip
    return CachedViews(ft, fs, device), dim, cache.seconds
