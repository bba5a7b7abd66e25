"""``HashModel``: backbone -> (feature normalisation) -> Linear (no bias) -> LayerNorm -> tanh, K bits; trainable
hash proxies; and encoding images through it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .backbones import create_backbone
from .data.splits import take
from .distributed import Distributed
from .errors import ModelError
from .progress import progress_bar

if TYPE_CHECKING:
    from .config import Config


class FeatureNorm(nn.BatchNorm1d):
    """Each feature centred and scaled (BatchNorm without its affine part): by the batch's statistics in
    training, by the average of every training batch's statistics when encoding (a cumulative average, not
    BatchNorm's exponential one: exact from the first epoch for a frozen backbone's features, which do not drift),
    so that an item's code never depends on its batch. A training batch of one image (the tail of an epoch) is
    normalised by the running statistics too."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim, affine=False, momentum=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] < 2:
            return F.batch_norm(x, self.running_mean, self.running_var, training=False, eps=self.eps)
        return super().forward(x)


class HashHead(nn.Module):
    """The hash function H: features -> h in [-1, 1]^K (docs/algorithms/dhd.md: Linear without bias, LayerNorm, tanh),
    optionally after a hidden Linear + ReLU layer of width ``hidden`` (for frozen features), and with
    ``feature_norm="batch"`` each input feature normalised first (``FeatureNorm``; docs/config.md)."""

    def __init__(self, in_dim: int, bits: int, hidden: int = 0, feature_norm: str = "none") -> None:
        super().__init__()
        if feature_norm not in ("none", "batch"):
            raise ModelError(f"feature_norm must be none or batch, got {feature_norm!r}")
        self.pre = FeatureNorm(in_dim) if feature_norm == "batch" else nn.Identity()
        self.hidden = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU()) if hidden else nn.Identity()
        self.fc = nn.Linear(hidden or in_dim, bits, bias=False)
        self.norm = nn.LayerNorm(bits)

    def forward(self, features: torch.Tensor, activate: bool = True) -> torch.Tensor:
        z = self.norm(self.fc(self.hidden(self.pre(features))))
        return torch.tanh(z) if activate else z


class HashModel(nn.Module):
    """Backbone + hash head (+ ``n_proxies`` trainable proxies, classes x K, Xavier-initialised with ``proxy_gain``).

    ``backbone=None`` builds a head-only model over precomputed features of width ``feature_dim``
    (the cached, frozen-backbone mode); ``layer`` cuts the backbone after a block and ``input_size`` is the side
    of the images it sees (``create_backbone``).
    """

    def __init__(
        self,
        bits: int,
        backbone: str | None = "small-cnn",
        pretrained: bool | str = False,
        n_proxies: int = 0,
        feature_dim: int | None = None,
        layer: int | None = None,
        hidden: int = 0,
        input_size: int | None = None,
        feature_norm: str = "none",
        proxy_gain: float = 1.0,
    ) -> None:
        super().__init__()
        if backbone is None:
            if not feature_dim:
                raise ModelError("a head-only HashModel needs feature_dim")
            self.backbone, dim = None, feature_dim
        else:
            self.backbone, dim = create_backbone(backbone, pretrained, layer=layer, input_size=input_size)
        self.bits, self.feature_dim = bits, dim
        self.head = HashHead(dim, bits, hidden, feature_norm)
        if not proxy_gain > 0:  # also NaN
            raise ModelError(f"proxy_gain must be > 0, got {proxy_gain}")
        self.proxies = nn.Parameter(torch.empty(n_proxies, bits)) if n_proxies else None
        if self.proxies is not None:
            nn.init.xavier_uniform_(self.proxies, gain=proxy_gain)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.backbone is None else self.backbone(x)

    def forward(self, x: torch.Tensor, activate: bool = True) -> torch.Tensor:
        """Continuous codes h in [-1, 1]^K from images (or features in head-only mode); ``activate=False``
        gives the pre-activation z (h = tanh(z), same signs) for methods that shape it themselves (HashNet)."""
        return self.head(self.features(x), activate)

    def with_features(self, x: torch.Tensor) -> torch.Tensor:
        """Rows [h | f]: the continuous codes h (K) followed by the backbone's features f (``feature_dim``), what a
        collection that stores features keeps of each image (docs/search.md "Stored features")."""
        f = self.features(x)
        return torch.cat([self.head(f), f], dim=1)


def build_model(cfg: Config, n_proxies: int = 0, feature_dim: int | None = None) -> HashModel:
    """A run's model: the whole backbone + head, or with ``feature_dim`` the head (+ proxies) alone over
    cached features of a frozen backbone (training in cached mode)."""
    m = cfg.model
    head = {"n_proxies": n_proxies, "hidden": m.head_hidden, "feature_norm": m.feature_norm, "proxy_gain": m.proxy_gain}
    if feature_dim is not None:
        return HashModel(m.bits, None, feature_dim=feature_dim, **head)
    return HashModel(m.bits, m.backbone, m.pretrained, layer=m.layer, input_size=m.input_size, **head)


@torch.inference_mode()
def encode_batch(
    model: nn.Module, transform: nn.Module, x: torch.Tensor, batch: int = 256, features: bool = False
) -> np.ndarray:
    """Continuous codes of an in-memory batch of images (uint8 or float in [0, 1]) through ``transform`` and
    ``model``; with ``features``, rows [h | f] (``HashModel.with_features``)."""
    model.eval()
    device = next(model.parameters()).device
    forward = model.with_features if features else model
    chunks = [forward(transform(x[a : a + batch].to(device))).float().cpu() for a in range(0, len(x), batch)]
    return torch.cat(chunks).numpy()


def encode_images(
    model: nn.Module, clean: nn.Module, images: Any, batch: int = 256, progress: bool = False, dist: Distributed | None = None,
    features: bool = False,
) -> np.ndarray:  # fmt: skip
    """Continuous codes of images (a uint8 array, or an ``ImageList`` read batch by batch) through a model (with
    ``features``, rows [h | f]: ``HashModel.with_features``).
    Under torchrun (``dist``) each rank encodes its batches and every rank gets all the codes, bit for bit those
    of one process (the same batches)."""
    n = len(images)
    mine = list(dist.my_batches(n, batch) if dist is not None else range(-(-n // batch)))
    ranges = [np.arange(i * batch, min((i + 1) * batch, n)) for i in mine]
    bar, parts = progress_bar(enabled=progress, total=sum(map(len, ranges)), desc="encoding", unit="images"), []
    for rows in ranges:
        parts.append(encode_batch(model, clean, take(images, rows), batch, features))
        bar.update(len(rows))
    bar.close()
    return np.concatenate(dist.gather_batches(parts) if dist is not None else parts)
