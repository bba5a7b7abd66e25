"""Deep hashing methods: each module holds one method's losses and nothing else.

``create_method(name, bits=, n_classes=, seed=, method_params=, **dhd_and_pair_settings)`` builds one by
name; ``SelfDistilled(method, lambda1)`` adds DHD's self-distillation to any of them (config ``sdh: true``).
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from .cnnh import CNNH
from .csq import CSQ
from .dch import DCH
from .dhd import DHD, create_dhd
from .dhn import DHN
from .distillhash import DistillHash, create_distillhash
from .dnnh import DNNH
from .dpn import DPN
from .hashnet import HashNet
from .sdh import SelfDistilled

BASELINES: dict[str, type[nn.Module]] = {
    "cnnh": CNNH, "dnnh": DNNH, "dhn": DHN, "hashnet": HashNet, "dch": DCH, "dpn": DPN, "csq": CSQ,
}  # fmt: skip
DHD_VARIANTS = ("dhd", "dhd-hp", "dhd-hp-bceq")
DISTILLHASH_VARIANTS = ("distillhash", "distillhash-noisy", "distillhash-squared")
METHODS = (*DHD_VARIANTS, *BASELINES, *DISTILLHASH_VARIANTS)


def baseline_params(name: str) -> tuple[str, ...]:
    """The ``method_params`` a baseline accepts (its hyper-parameters; bits, classes and seed come from the run)."""
    if name not in BASELINES:
        return ()
    skip = {"self", "bits", "n_classes", "seed"}
    return tuple(p for p in inspect.signature(BASELINES[name].__init__).parameters if p not in skip)


def create_method(
    name: str, bits: int = 64, n_classes: int = 0, seed: int = 0, method_params: dict[str, Any] | None = None, **params: Any
) -> nn.Module:
    """A deep method's loss module by name. DHD reads ``temperature``, ``lambda1``, ``lambda2``, ``sigma``,
    ``quantize_proxies``; DistillHash ``pairs``; a baseline its ``method_params``."""
    extra = dict(method_params or {})
    if name in BASELINES:
        known = baseline_params(name)
        unknown = sorted(set(extra) - set(known))
        if unknown:
            raise ValueError(f"unknown method_params for {name}: {', '.join(unknown)}; known: {', '.join(known)}")
        return BASELINES[name](bits=bits, n_classes=n_classes, seed=seed, **extra)
    if extra:
        raise ValueError(f"method_params apply to the baselines ({', '.join(BASELINES)}), not {name}")
    if name in DHD_VARIANTS:
        params.pop("pairs", None)
        return create_dhd(name, **params)
    if name in DISTILLHASH_VARIANTS:
        return create_distillhash(name, **params)
    raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")


__all__ = ["BASELINES", "CNNH", "CSQ", "DCH", "DHD", "DHN", "DNNH", "DPN", "METHODS", "DistillHash", "HashNet",
           "SelfDistilled", "baseline_params", "create_method"]  # fmt: skip
