"""Transformation groups for self-distilled hashing (DHD, Sec. 3.1), with kornia on batches.

The student group T_S is the official code's family: RandomResizedCrop (p 1), HorizontalFlip (p 0.5),
ColorJitter (brightness 0.4, contrast 0.8, saturation 0.8, hue 0.2; p 0.8), Grayscale (p 0.2),
GaussianBlur (kernel ~10% of the side, odd; sigma 0.1-2; p 0.5). The teacher group T_T is the same
family with every probability scaled by s_T in (0, 1]. Views are then centre-cropped (the official
256 -> 224, i.e. ratio 0.875, by default) and normalised. Grey images are repeated to 3 channels
first, so every transform (hue, saturation) is defined.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import kornia.augmentation as K
import torch
from torch import nn

from .backbones import normalisation
from .errors import ConfigError

if TYPE_CHECKING:
    from .config import Config


def to_float_rgb(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W) / (B, C, H, W) or float in [0, 1] -> float (B, 3, H, W) in [0, 1]."""
    x = images
    if x.ndim == 3:
        x = x[:, None]
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous()


class PerSample(nn.Module):
    """Apply ``aug`` to each sample independently with probability ``p``.

    kornia's RandomResizedCrop turns its ``p`` into a per-*batch* probability; the paper samples
    every transform per image, so the crop is drawn at p = 1 on a random subset instead.
    """

    def __init__(self, aug: nn.Module, p: float) -> None:
        super().__init__()
        self.aug, self.p = aug, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p >= 1:
            return self.aug(x)
        chosen = torch.rand(len(x), device=x.device) < self.p
        if chosen.any():
            x = x.clone()
            x[chosen] = self.aug(x[chosen])
        return x


class ViewTransform(nn.Module):
    """One transformation group: ``ViewTransform(size, s)`` maps a batch to augmented, normalised views.

    ``s`` scales every transform's probability (1.0: the student group T_S; s_T: the teacher group).
    ``s = 0`` gives the clean view (resize, centre crop, normalise) used for queries and database.
    """

    def __init__(
        self,
        size: int,
        s: float = 1.0,
        crop_ratio: float = 0.875,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        mean: tuple[float, ...] = (0.5, 0.5, 0.5),
        std: tuple[float, ...] = (0.5, 0.5, 0.5),
    ) -> None:
        super().__init__()
        if not 0.0 <= s <= 1.0:
            raise ConfigError(f"the probability scale s must be in [0, 1], got {s}")
        self.size, self.s = size, s
        self.pre = max(size, round(size / crop_ratio))  # the side views are drawn at, before the centre crop
        blur = int(self.pre * 0.1) // 2 * 2 + 1
        steps = []
        if s > 0:
            steps = [
                PerSample(K.RandomResizedCrop((self.pre, self.pre), scale=crop_scale), 1.0 * s),
                K.RandomHorizontalFlip(p=0.5 * s),
                K.ColorJitter(brightness=0.4, contrast=0.8, saturation=0.8, hue=0.2, p=0.8 * s),
                K.RandomGrayscale(p=0.2 * s),
            ]
            if blur >= 3:
                steps.append(K.RandomGaussianBlur((blur, blur), (0.1, 2.0), p=0.5 * s))
        self.augment = nn.Sequential(*steps)
        self.crop = K.CenterCrop(size) if self.pre != size else nn.Identity()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = to_float_rgb(images)
        if x.shape[-1] != self.pre or x.shape[-2] != self.pre:
            x = nn.functional.interpolate(x, size=(self.pre, self.pre), mode="bilinear", align_corners=False)
        with torch.no_grad():
            x = self.augment(x)
            x = self.crop(x)
        return (x - self.mean) / self.std


def view_groups(size: int, s_teacher: float, **kw) -> tuple[ViewTransform, ViewTransform, ViewTransform]:
    """(teacher T_T, student T_S, clean) transforms sharing size, crop and normalisation."""
    return ViewTransform(size, s_teacher, **kw), ViewTransform(size, 1.0, **kw), ViewTransform(size, 0.0, **kw)


def view_transforms(cfg: Config, s_teacher: float | None = None) -> tuple[ViewTransform, ViewTransform, ViewTransform]:
    """A run's (teacher, student, clean) transforms: its input size, crop, teacher strength (or
    ``s_teacher``) and its backbone's normalisation."""
    a = cfg.augment
    norm = normalisation(cfg.model.backbone)
    s = a.s_teacher if s_teacher is None else s_teacher
    return view_groups(cfg.model.input_size, s, crop_ratio=a.crop_ratio, crop_scale=tuple(a.crop_scale), **norm)
