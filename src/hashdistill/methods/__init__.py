"""Deep hashing methods: each module holds its losses and nothing else."""

from __future__ import annotations

from typing import Any

from torch import nn

from .dhd import DHD, create_dhd

METHODS = ("dhd", "dhd-hp", "dhd-hp-bceq")


def create_method(name: str, **params: Any) -> nn.Module:
    """A deep method's loss module by name."""
    if name in ("dhd", "dhd-hp", "dhd-hp-bceq"):
        return create_dhd(name, **params)
    raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")


__all__ = ["DHD", "METHODS", "create_method"]
