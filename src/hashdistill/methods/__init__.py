"""Deep hashing methods: one module per method, each a ``HashingMethod`` (``base.py``) with its ``Params``.

``METHODS`` maps a config's ``method.name`` to its class: adding a method is one module and one line here.
``create_method(params, bits=, n_classes=, seed=)`` builds one from validated settings, wrapped in
``SelfDistilled`` when ``params.self_distill`` is on; ``method_params(settings)`` validates a ``method`` section.
See docs/architecture.md ("Methods") and docs/algorithms/.
"""

from __future__ import annotations

from typing import Any

from ..errors import MethodError
from .adsh import ADSH
from .base import HashingMethod, MethodParams, TrainingContext
from .bihalf import BiHalf
from .cibhash import CIBHash
from .cnnh import CNNH
from .csq import CSQ
from .dch import DCH
from .dhd import DHD, DHDProxyOnly, DHDProxyQuantized
from .dhn import DHN
from .distillhash import DistillHash, DistillHashNoisy, DistillHashSquared
from .dnnh import DNNH
from .dpn import DPN
from .dpsh import DPSH
from .dsdh import DSDH
from .dsh import DSH
from .dtsh import DTSH
from .greedyhash import GreedyHash
from .greedyhash_unsupervised import GreedyHashUnsupervised
from .hashnet import HashNet
from .hyp2 import HyP2
from .orthohash import OrthoHash
from .self_distill import SelfDistilled
from .ssdh import SSDH

METHODS: dict[str, type[HashingMethod]] = {
    "dhd": DHD,
    "dhd-hp": DHDProxyOnly,
    "dhd-hp-bceq": DHDProxyQuantized,
    "cnnh": CNNH,
    "dnnh": DNNH,
    "dhn": DHN,
    "hashnet": HashNet,
    "dch": DCH,
    "dpn": DPN,
    "csq": CSQ,
    "dpsh": DPSH,
    "dsdh": DSDH,
    "dsh": DSH,
    "dtsh": DTSH,
    "greedyhash": GreedyHash,
    "orthohash": OrthoHash,
    "adsh": ADSH,
    "hyp2": HyP2,
    "distillhash": DistillHash,
    "distillhash-noisy": DistillHashNoisy,
    "distillhash-squared": DistillHashSquared,
    "ssdh": SSDH,
    "cibhash": CIBHash,
    "bihalf": BiHalf,
    "greedyhash-unsupervised": GreedyHashUnsupervised,
}


def method_class(name: str) -> type[HashingMethod]:
    if name not in METHODS:
        raise MethodError("name", f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def method_params(settings: dict[str, Any] | str) -> MethodParams:
    """Validate a config's ``method`` section (a mapping with ``name``, or just the name) into the method's
    ``Params``; raises ``pydantic.ValidationError`` for a bad value, ``MethodError`` for a bad combination."""
    if isinstance(settings, str):
        settings = {"name": settings}
    if not isinstance(settings, dict):
        raise MethodError("", f"expected a mapping with a name, or a method name, got {settings!r}")
    if "name" not in settings:
        raise MethodError("name", f"missing; known: {', '.join(METHODS)}")
    cls = method_class(settings["name"])
    params = cls.Params.model_validate(settings)
    if params.self_distill and cls.views != 1:
        raise MethodError("self_distill", f"{params.name} already trains on two views (its own L_SdH); use a one-view variant")
    if params.train_view != "teacher" and (params.self_distill or cls.views != 1):
        raise MethodError(
            "train_view", "picks the one view of a method trained without self-distillation; with it the loss sees T_T"
        )
    return params


def same_params(a: str, b: str) -> bool:
    """Whether two method names share one parameter class (DHD and its ablations, say)."""
    return method_class(a).Params is method_class(b).Params


def create_method(params: MethodParams | str, bits: int = 64, n_classes: int = 0, seed: int = 0) -> HashingMethod:
    """The method a config's ``method`` section describes (a name takes every default), wrapped in
    ``SelfDistilled`` when ``self_distill`` is on."""
    if isinstance(params, str):
        params = method_params(params)
    method = method_class(params.name)(params, bits=bits, n_classes=n_classes, seed=seed)
    return SelfDistilled(method, params.self_distill_weight) if params.self_distill else method


__all__ = [
    "ADSH", "BiHalf", "CIBHash", "CNNH", "CSQ", "DCH", "DHD", "DHN", "DNNH", "DPN", "DPSH", "DSDH", "DSH", "DTSH", "METHODS", "DistillHash", "DistillHashNoisy",
    "DistillHashSquared", "GreedyHash", "GreedyHashUnsupervised", "HashNet", "HyP2", "OrthoHash", "HashingMethod", "MethodError", "MethodParams", "SSDH", "SelfDistilled",
    "TrainingContext", "create_method", "method_class", "method_params", "same_params",
]  # fmt: skip
