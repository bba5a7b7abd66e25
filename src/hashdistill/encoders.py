"""Encoding engines, one interface (``Encoder``): ``encode(images)`` for a uint8 array (N, H, W) grey or
(N, H, W, C), or an ``ImageList``, batch by batch, to the continuous codes h (N, bits), or with
``features=True`` to rows [h | f], f the backbone's features (``features`` wide; 0 where the engine has none);
``load_size`` the side image files are read at (``None``: their own size), as the run's data was read.

``OnnxEncoder`` runs a model exported by ``export.export_onnx`` (the clean view baked into the graph) in ONNX
Runtime and needs no torch: a collection that encodes with it opens and searches by image without importing
torch. ``TorchEncoder`` runs a ``Run``'s model in torch eager mode.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from .errors import ModelError


class Encoder(Protocol):
    load_size: int | None
    bits: int
    features: int

    def encode(self, images: Any, batch: int = 256, features: bool = False) -> np.ndarray: ...


def rgb_batches(images: Any, batch: int) -> Iterator[np.ndarray]:
    """uint8 (B, 3, H, W) numpy batches of ``images`` (grey repeated to three channels, as the clean view does)."""
    for a in range(0, len(images), batch):
        x = np.asarray(images[np.arange(a, min(a + batch, len(images)))])
        x = x.transpose(0, 3, 1, 2) if x.ndim == 4 else x[:, None]
        yield np.ascontiguousarray(np.repeat(x, 3, axis=1) if x.shape[1] == 1 else x)


class OnnxEncoder:
    """An exported model in ONNX Runtime (CPU), ``threads`` intra-op threads (default: ONNX Runtime's, one per
    physical core)."""

    def __init__(self, path: str | os.PathLike, load_size: int | None, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for a bad file
            raise ModelError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0][:200]})") from None
        self.load_size = load_size
        outputs = {o.name: o for o in self.session.get_outputs()}
        self.bits = int(self.session.get_outputs()[0].shape[1])
        self.features = int(outputs["features"].shape[1]) if "features" in outputs else 0  # (an export without it)

    def encode(self, images: Any, batch: int = 256, features: bool = False) -> np.ndarray:
        if features and not self.features:
            raise ModelError("this ONNX model has no features output (export it with features=True)")
        wanted = ["h", "features"] if features else ["h"]
        parts = [np.concatenate(self.session.run(wanted, {"images": x}), axis=1) for x in rgb_batches(images, batch)]
        return np.concatenate(parts) if parts else np.zeros((0, self.bits + (self.features if features else 0)), np.float32)


class TorchEncoder:
    """A ``Run``'s model in torch eager mode."""

    def __init__(self, run: Any) -> None:
        self.run, self.bits, self.load_size = run, run.bits, run.load_size
        self.features = int(run.model.feature_dim)

    def encode(self, images: Any, batch: int = 256, features: bool = False) -> np.ndarray:
        return self.run.encode(images, batch, features=features)
