"""Backbones whose ImageNet weights come from a hub (torchvision's, Hugging Face's for timm): alexnet,
resnet50, ViT, DeiT, Swin. Offline, a weights file works and a hub fails fast naming the offline options."""

from __future__ import annotations

import os
from collections.abc import Callable

from torch import nn

from .._torchvision import ensure_torchvision
from ..errors import ModelError
from ..hub import OFFLINE_HINT, hub_reachable_or_cached, timm_cached_file, torch_hub_file
from ..registry import BACKBONES
from . import IMAGENET, ToRGB


def _hub_model(name: str, source: str) -> Callable[[bool | str, int | None], tuple[nn.Module, int]]:
    """A torchvision (alexnet, resnet50) or timm model; hub weights come from the local cache, else the hub
    (one reachability try first: offline, one line names the offline options instead of minutes of retries);
    a weights file needs no network. timm models are built for ``input_size`` (their ``img_size``)."""

    def make(pretrained: bool | str, input_size: int | None = None, layer: int | None = None) -> tuple[nn.Module, int]:
        ensure_torchvision()
        hub = pretrained is True
        try:
            if source == "torchvision":
                import torchvision

                weights = torchvision.models.get_model_weights(name).DEFAULT if hub else None
                if weights is not None:
                    hub_reachable_or_cached(name, weights.url, torch_hub_file(weights.url))
                net = torchvision.models.get_model(name, weights=weights)
                if name == "alexnet":
                    net.classifier = nn.Sequential(*list(net.classifier.children())[:-1])  # fc7 features
                    dim = 4096
                else:
                    dim = net.fc.in_features
                    net.fc = nn.Identity()
            else:
                import timm

                size = {"img_size": input_size} if input_size else {}
                overlay = {"file": str(cached)} if hub and (cached := timm_cached_file(name)) else None
                if hub and overlay is None:
                    hub_reachable_or_cached(name, "https://huggingface.co/", None)
                net = timm.create_model(name, pretrained=hub, num_classes=0, pretrained_cfg_overlay=overlay, **size)
                dim = net.num_features
        except (OSError, RuntimeError) as e:
            if not hub:
                raise
            raise ModelError(f"{name}: hub weights could not be fetched ({type(e).__name__}); {OFFLINE_HINT}") from None
        if isinstance(pretrained, (str, os.PathLike)):
            state = weights.load_state(pretrained)
            try:
                missing, _ = net.load_state_dict(state, strict=False)
            except RuntimeError as e:
                raise ModelError(
                    f"{pretrained}: the weights do not fit {name} ({str(e).splitlines()[-1].strip()[:160]})"
                ) from None
            if len(missing) > len(state):
                raise ModelError(f"{pretrained}: the weights do not fit {name}")
        return ToRGB(net), dim

    return make


BACKBONES.register("alexnet", **IMAGENET, blocks=None)(_hub_model("alexnet", "torchvision"))
BACKBONES.register("resnet50", **IMAGENET, blocks=None)(_hub_model("resnet50", "torchvision"))
BACKBONES.register("vit_base_patch16_224", **IMAGENET, blocks=None)(_hub_model("vit_base_patch16_224", "timm"))
BACKBONES.register("deit_base_distilled_patch16_224", **IMAGENET, blocks=None)(
    _hub_model("deit_base_distilled_patch16_224", "timm")
)
BACKBONES.register("swin_base_patch4_window7_224", **IMAGENET, blocks=None)(_hub_model("swin_base_patch4_window7_224", "timm"))
