"""Unseen deformations applied to queries at evaluation time only (DHD's Table 4), seeded.

Every deformation takes a whole batch of images (uint8 ``(N, H, W)`` / ``(N, C, H, W)`` or float in [0, 1])
and returns float ``(N, C, H, W)`` in [0, 1]; a run's clean transform then resizes and normalises it. The
random parameters are drawn per image from ``numpy.random.default_rng([seed, index of the deformation])``
for the whole set at once (call it on all the queries): the same seed gives the same images. Parameters:

| name | what | parameters |
|---|---|---|
| none | the clean query | - |
| cutout | one square set to 0 | side = half the image side, position uniform (inside the image) |
| dropout | pixel dropout | each pixel (all channels) set to 0 with p = 0.2 |
| zoom_in | centre zoom | x1.5 (the central 2/3 resized to the full side) |
| zoom_out | shrink and pad with 0 | x0.6 |
| rotation | about the centre, zero padding | angle uniform in +-[15, 45] degrees |
| shear | horizontal shear, zero padding | angle uniform in +-[10, 30] degrees |
| noise | additive Gaussian noise, clipped to [0, 1] | sigma = 0.1 |
| hue | hue rotation (about the grey axis, in YIQ space), clipped | angle uniform in +-[90, 180] degrees |
| saturation | over-saturation (blend away from the pixel's grey) | factor uniform in [2, 3] |
| grey | ITU-R 601 luma in every channel | - |
| colour_cast | blend with one colour per image | 30 % of a colour uniform in RGB |

The colour deformations (``COLOUR``) lie outside DHD's student jitter (hue +-0.2 of the circle, saturation
factor in [0.2, 1.8]) except ``grey``, which the student sees with p 0.2 but the teacher view never; on a
one-channel image they change nothing (grey is already its own grey).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError

GEOMETRIC = ("cutout", "dropout", "zoom_in", "zoom_out", "rotation", "shear", "noise")  # the paper's Table 4
COLOUR = ("hue", "saturation", "grey", "colour_cast")
DEFORMATIONS = ("none", *GEOMETRIC, *COLOUR)
# RGB -> YIQ (NTSC): a hue rotation turns the (I, Q) chroma plane about the luma axis Y
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _as_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def _affine(x: torch.Tensor, theta: np.ndarray) -> torch.Tensor:
    """Warp each image by its 2x3 ``theta`` (output -> input coordinates in [-1, 1]), zero padding."""
    grid = F.affine_grid(torch.as_tensor(theta, dtype=x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _signed(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    return rng.uniform(low, high, n) * rng.choice([-1.0, 1.0], n)


def deform(images: np.ndarray | torch.Tensor, name: str, seed: int = 0) -> torch.Tensor:
    """The batch with deformation ``name`` (one of ``DEFORMATIONS``) applied, float in [0, 1]."""
    if name not in DEFORMATIONS:
        raise ConfigError(f"unknown deformation {name!r}; known: {', '.join(DEFORMATIONS)}")
    x = _as_float(images)
    n, _, h, w = x.shape
    rng = np.random.default_rng([seed, DEFORMATIONS.index(name)])
    eye = np.tile(np.array([[1.0, 0, 0], [0, 1.0, 0]]), (n, 1, 1))
    if name == "none":
        return x
    if name == "cutout":
        side = min(h, w) // 2
        top, left = rng.integers(0, h - side + 1, n), rng.integers(0, w - side + 1, n)
        rows, cols = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
        t, lft = torch.as_tensor(top)[:, None, None], torch.as_tensor(left)[:, None, None]
        inside = (rows >= t) & (rows < t + side) & (cols >= lft) & (cols < lft + side)
        return x.masked_fill(inside[:, None], 0.0)
    if name == "dropout":
        keep = torch.as_tensor(rng.random((n, 1, h, w)) >= 0.2)
        return x * keep
    if name in ("zoom_in", "zoom_out"):
        scale = 1.5 if name == "zoom_in" else 0.6
        return _affine(x, eye / scale)
    if name == "rotation":
        a = np.radians(_signed(rng, n, 15, 45))
        theta = np.stack([np.stack([np.cos(a), -np.sin(a), 0 * a], 1), np.stack([np.sin(a), np.cos(a), 0 * a], 1)], 1)
        return _affine(x, theta)
    if name == "shear":
        theta = eye.copy()
        theta[:, 0, 1] = np.tan(np.radians(_signed(rng, n, 10, 30)))
        return _affine(x, theta)
    if name == "noise":
        noise = torch.as_tensor(rng.standard_normal(x.shape), dtype=x.dtype) * 0.1
        return (x + noise).clamp(0, 1)
    return _colour(x, name, rng)


def _colour(x: torch.Tensor, name: str, rng: np.random.Generator) -> torch.Tensor:
    """A colour deformation of float ``(N, C, H, W)``; a one-channel batch is returned as it is."""
    n = x.shape[0]
    if x.shape[1] != 3:
        return x
    luma = torch.einsum("c,nchw->nhw", _YIQ[0].to(x.dtype), x)[:, None]
    if name == "grey":
        return luma.expand_as(x).clone()
    if name == "saturation":
        f = torch.as_tensor(rng.uniform(2.0, 3.0, n), dtype=x.dtype)[:, None, None, None]
        return (luma + f * (x - luma)).clamp(0, 1)
    if name == "colour_cast":
        colour = torch.as_tensor(rng.uniform(0, 1, (n, 3)), dtype=x.dtype)[:, :, None, None]
        return 0.7 * x + 0.3 * colour
    a = np.radians(_signed(rng, n, 90, 180))  # "hue"
    cos, sin, one, zero = np.cos(a), np.sin(a), np.ones(n), np.zeros(n)
    rot = np.stack([np.stack([one, zero, zero], 1), np.stack([zero, cos, -sin], 1), np.stack([zero, sin, cos], 1)], 1)
    yiq = _YIQ.double()
    m = torch.as_tensor(np.linalg.inv(yiq.numpy()) @ rot @ yiq.numpy(), dtype=x.dtype)  # (N, 3, 3), RGB -> RGB
    return torch.einsum("nij,njhw->nihw", m, x).clamp(0, 1)


def acting(images: np.ndarray | torch.Tensor, names: tuple[str, ...] | list[str] = DEFORMATIONS) -> list[str]:
    """The deformations of ``names`` that can change ``images`` (a batch as ``deform`` takes it): all of them on
    three channels, all but the colour ones (``COLOUR``) on one."""
    colour = _as_float(images[:1]).shape[1] == 3
    return [n for n in names if colour or n not in COLOUR]


def parse_deformations(text: str) -> list[str]:
    """``all`` or a comma list -> deformation names (unknown names fail naming them)."""
    names = list(DEFORMATIONS) if text.strip() == "all" else [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in DEFORMATIONS]
    if unknown or not names:
        bad = ", ".join(unknown) if unknown else repr(text)
        raise ConfigError(f"unknown deformation(s) {bad}; known: all, {', '.join(DEFORMATIONS)}")
    return names


__all__ = ["COLOUR", "DEFORMATIONS", "GEOMETRIC", "acting", "deform", "parse_deformations"]
