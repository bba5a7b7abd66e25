"""Deep hashing methods: one module per method, each a ``HashingMethod`` (``base.py``) with its ``Params``, which
registers itself: ``@METHODS.register("name")`` above the class (``registry.py``). Adding a method is adding
one module here; nothing else names it. ``create_method(params, bits=, n_classes=, seed=)`` builds one from
validated settings (``config.method_params``), wrapped in ``SelfDistilled`` when ``params.self_distill`` is on.
See docs/architecture.md ("Methods") and docs/algorithms/.
"""

from __future__ import annotations

from ..config import MethodParams, method_params, same_params
from ..errors import MethodError
from ..registry import METHODS
from .base import HashingMethod, TrainingContext
from .self_distill import SelfDistilled


def method_class(name: str) -> type[HashingMethod]:
    """The class registered as ``name``; an unknown name lists the known ones (``MethodError``)."""
    return METHODS.get(name)


def create_method(params: MethodParams | str, bits: int = 64, n_classes: int = 0, seed: int = 0) -> HashingMethod:
    """The method a config's ``method`` section describes (a name takes every default), wrapped in
    ``SelfDistilled`` when ``self_distill`` is on."""
    if isinstance(params, str):
        params = method_params(params)
    method = method_class(params.name)(params, bits=bits, n_classes=n_classes, seed=seed)
    return SelfDistilled(method, params.self_distill_weight) if params.self_distill else method


__all__ = [
    "METHODS", "HashingMethod", "MethodError", "MethodParams", "SelfDistilled", "TrainingContext", "create_method",
    "method_class", "method_params", "same_params",
]  # fmt: skip
