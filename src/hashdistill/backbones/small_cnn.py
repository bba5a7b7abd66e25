"""small-cnn: a compact CNN for small grey images, trained from scratch."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelError
from ..registry import BACKBONES
from . import weights


class SmallCNN(nn.Module):
    """A compact CNN for 28x28 grey images, trained from scratch (works at any input size)."""

    def __init__(self, in_channels: int = 1, width: int = 32, feature_dim: int = 256) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            )  # fmt: skip

        self.in_channels = in_channels
        self.body = nn.Sequential(
            block(in_channels, width), nn.MaxPool2d(2),
            block(width, 2 * width), nn.MaxPool2d(2),
            block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4 * width, feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU(inplace=True),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            x = x.mean(dim=1, keepdim=True) if self.in_channels == 1 else x.expand(-1, self.in_channels, -1, -1)
        return self.body(x)


@BACKBONES.register("small-cnn", mean=None, std=None, blocks=None)
def small_cnn(pretrained: bool | str, input_size: int | None = None, layer: int | None = None) -> tuple[nn.Module, int]:
    """A compact CNN trained from scratch on the run's images (any input size, no normalisation)."""
    net = SmallCNN()
    if pretrained is True:
        raise ModelError("small-cnn has no pretrained weights: it trains from scratch (pass a checkpoint path)")
    if pretrained:
        weights.load_into(net, pretrained, "small-cnn")
    return net, 256
