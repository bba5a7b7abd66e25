"""Deep hashing methods: each module holds its losses and nothing else."""

from __future__ import annotations

from typing import Any

from torch import nn

from .dhd import DHD, create_dhd
from .distillhash import DistillHash, create_distillhash

METHODS = ("dhd", "dhd-hp", "dhd-hp-bceq", "distillhash", "distillhash-noisy", "distillhash-squared")


def create_method(name: str, **params: Any) -> nn.Module:
    """A deep method's loss module by name."""
    if name in ("dhd", "dhd-hp", "dhd-hp-bceq"):
        params.pop("pairs", None)
        return create_dhd(name, **params)
    if name.startswith("distillhash"):
        return create_distillhash(name, **params)
    raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")


__all__ = ["DHD", "METHODS", "DistillHash", "create_method"]
