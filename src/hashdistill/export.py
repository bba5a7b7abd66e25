"""Export to ONNX: a run's model with its clean view baked in (run by ``encoders.OnnxEncoder``).

``export_onnx(model, clean, path)`` writes one graph from uint8 images (B, 3, H, W), any batch and size, to the
continuous codes h: the same resize, centre crop and normalisation as the run's clean view
(``augment.ViewTransform`` with s = 0), then the backbone and hash head; with ``features=True`` a second output
``features``, the backbone's features (what a collection that stores features keeps). ``verify_onnx`` encodes the run's
query images with both engines and counts the bits whose signs differ.

The engines that encode with either (``OnnxEncoder``, ``TorchEncoder``) are in ``encoders.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import _io
from .augment import ViewTransform
from .encoders import OnnxEncoder


class CleanViewModel(nn.Module):
    """uint8 images (B, 3, H, W) -> h (and, with ``features``, the backbone's features f): the clean view
    (resize to the side views are drawn at, centre crop, normalise) followed by the hash model, as one
    traceable module."""

    def __init__(self, model: nn.Module, clean: ViewTransform, features: bool = False) -> None:
        super().__init__()
        self.model, self.pre, self.size, self.with_features = model, clean.pre, clean.size, features
        self.register_buffer("mean", clean.mean.detach().clone())
        self.register_buffer("std", clean.std.detach().clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = F.interpolate(images.float() / 255.0, size=(self.pre, self.pre), mode="bilinear", align_corners=False)
        if self.pre != self.size:
            a = (self.pre - self.size) // 2
            x = x[:, :, a : a + self.size, a : a + self.size]
        x = (x - self.mean) / self.std
        if not self.with_features:
            return self.model(x)
        f = self.model.features(x)
        return self.model.head(f), f


def export_onnx(model: nn.Module, clean: ViewTransform, path: str | os.PathLike, features: bool = False) -> Path:
    """Write a hash model with its clean view as ONNX (dynamic batch, height and width), atomically
    (``export_onnx(run.model, run.clean, path)`` for a trained run); ``features``: a second output, the
    backbone's features."""
    module = CleanViewModel(model, clean, features).eval().cpu()
    example = torch.zeros(2, 3, clean.pre, clean.pre, dtype=torch.uint8)
    outputs = ["h", "features"] if features else ["h"]
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, **{name: {0: "batch"} for name in outputs}}
    with _io.atomic_path(path) as tmp:
        import warnings

        with warnings.catch_warnings():  # the tracer's notes on shape checks inside the backbones
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, (example,), str(tmp), input_names=["images"], output_names=outputs, dynamic_axes=axes,
                opset_version=17, dynamo=False,
            )  # fmt: skip
    return Path(path)


def verify_onnx(run: Any, path: str | os.PathLike, images: Any | None = None) -> dict[str, Any]:
    """Encode ``images`` (default: the run's queries) with torch and with the ONNX file: the number of bits
    whose signs differ, of how many, and the largest difference in h (and, where the file has the features
    output, in the features relative to their largest value)."""
    images = run.data.split("query").images if images is None else images
    encoder = OnnxEncoder(path, run.load_size)
    both = encoder.features > 0
    rows_torch, rows_onnx = run.encode(images, features=both), encoder.encode(images, features=both)
    h_torch, h_onnx = rows_torch[:, : run.bits], rows_onnx[:, : run.bits]
    out = {
        "images": len(h_torch), "bits": int(h_torch.size), "sign_mismatches": int(((h_torch >= 0) != (h_onnx >= 0)).sum()),
        "max_abs_difference": float(np.abs(h_torch - h_onnx).max()) if h_torch.size else 0.0,
    }  # fmt: skip
    if both and h_torch.size:
        f_torch, f_onnx = rows_torch[:, run.bits :], rows_onnx[:, run.bits :]
        out["features_relative_difference"] = float(np.abs(f_torch - f_onnx).max() / max(np.abs(f_torch).max(), 1e-12))
    return out
