"""``HashModel``: backbone -> Linear (no bias) -> LayerNorm -> tanh, K bits; trainable hash proxies."""

from __future__ import annotations

import torch
from torch import nn

from .backbones import create_backbone


class HashHead(nn.Module):
    """The hash function H: features -> h in [-1, 1]^K (DESIGN.md: Linear without bias, LayerNorm, tanh)."""

    def __init__(self, in_dim: int, bits: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, bits, bias=False)
        self.norm = nn.LayerNorm(bits)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.norm(self.fc(features)))


class HashModel(nn.Module):
    """Backbone + hash head (+ ``n_proxies`` Xavier-initialised trainable proxies, classes x K).

    ``backbone=None`` builds a head-only model over precomputed features of width ``feature_dim``
    (the cached, frozen-backbone mode).
    """

    def __init__(
        self,
        bits: int,
        backbone: str | None = "small-cnn",
        pretrained: bool | str = False,
        n_proxies: int = 0,
        feature_dim: int | None = None,
    ) -> None:
        super().__init__()
        if backbone is None:
            if not feature_dim:
                raise ValueError("a head-only HashModel needs feature_dim")
            self.backbone, dim = None, feature_dim
        else:
            self.backbone, dim = create_backbone(backbone, pretrained)
        self.bits, self.feature_dim = bits, dim
        self.head = HashHead(dim, bits)
        self.proxies = nn.Parameter(torch.empty(n_proxies, bits)) if n_proxies else None
        if self.proxies is not None:
            nn.init.xavier_uniform_(self.proxies)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.backbone is None else self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous codes h in [-1, 1]^K from images (or features in head-only mode)."""
        return self.head(self.features(x))
