"""hashdistill: learning-to-hash image retrieval (docs/architecture.md).

``hashdistill.Run.load(path)`` opens a trained run (``run.encode(images)``, ``run.codes("database")``);
``hashdistill.Collection`` makes it searchable by image (``Collection.create(dir, run)``, ``.add``, ``.search``).
The code and metric helpers below are importable without loading torch.
"""

from typing import Any

from ._version import __version__
from .codes import binarize, hamming, pack, unpack
from .metrics import (
    evaluate_retrieval,
    mean_average_precision,
    precision_at_k,
    precision_at_radius,
    precision_recall_curve,
)

__all__ = [
    "__version__",
    "Collection",
    "Run",
    "binarize",
    "evaluate_retrieval",
    "hamming",
    "mean_average_precision",
    "pack",
    "precision_at_k",
    "precision_at_radius",
    "precision_recall_curve",
    "unpack",
]


def __getattr__(name: str) -> Any:
    if name == "Run":  # imported on first use: they load torch
        from .run import Run

        return Run
    if name == "Collection":
        from .collection import Collection

        return Collection
    raise AttributeError(f"module 'hashdistill' has no attribute {name!r}")
