"""Weights for a backbone: offline packages found on disk, state_dict files read as tensors only
(``_io.load_tensors``), and a state_dict renamed by position onto another implementation's names."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import nn

from .._io import load_tensors
from ..errors import ModelError


def package_file(package: str, relative: str) -> Path | None:
    """``relative`` inside an installed package (an offline weights package), if both exist."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / relative
    return path if path.is_file() else None


def find_in_package(package: str, folder: str, suffix: str) -> Path | None:
    """The first file ending in ``suffix`` in ``folder`` of an installed package, if any."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted((Path(spec.submodule_search_locations[0]) / folder).glob(f"*{suffix}"))
    return found[0] if found else None


def load_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state_dict from a weights file (tensors only: ``_io.load_tensors``)."""
    state = load_tensors(path)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: not a state_dict (a mapping of parameter names to tensors)")
    return state


def load_into(net: nn.Module, path: str | os.PathLike, name: str) -> None:
    """Load a weights file into ``net``; weights of another network fail with one line naming the file."""
    try:
        net.load_state_dict(load_state(path))
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ModelError(
            f"{path}: the weights do not fit {name} ({(first[1] if len(first) > 1 else first[0]).strip()[:160]})"
        ) from None


def by_position(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``state``'s tensors to ``model``'s names, in order (shapes must agree)."""
    ours = [(k, v) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]
    theirs = [v for k, v in state.items() if not k.endswith("num_batches_tracked")]
    if len(ours) != len(theirs) or any(a.shape != b.shape for (_, a), b in zip(ours, theirs)):
        raise ModelError("the weight file does not match the model tensor for tensor")
    return {k: v for (k, _), v in zip(ours, theirs)}
