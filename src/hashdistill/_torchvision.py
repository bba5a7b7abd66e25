"""Make ``import torchvision`` (and so ``import timm``) work with a CPU-only torch.

The torchvision 0.28.0 wheel on PyPI is a CUDA build; with the CPU torch its compiled ops fail to
load and the import dies with "operator torchvision::nms does not exist". ``ensure_torchvision()``
first tries to load torchvision's own ``_C`` library; if that fails it declares the ``nms`` and
``qnms`` operator schemas (without kernels: ``torchvision.ops`` stays unusable, ``transforms.v2``
and ``models`` work). The declaring library object is kept alive inside this module for the life
of the process, which is what torch requires. Call it before importing torchvision or timm.
"""

from __future__ import annotations

import glob
import importlib.util
import os

import torch

_LIBRARIES: list = []  # keeps the torch.library.Library alive (torch unregisters it when collected)


def _declared() -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw("torchvision::nms", "")
        return True
    except RuntimeError:
        return False


def ensure_torchvision() -> None:
    """Idempotent; a no-op when torchvision is absent or its ops already load."""
    if _declared():
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    for so in glob.glob(os.path.join(spec.submodule_search_locations[0], "_C*.so")):
        try:
            torch.ops.load_library(so)
            if _declared():
                return
        except (OSError, RuntimeError):
            pass
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARIES.append(lib)
