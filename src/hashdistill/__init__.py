"""hashdistill: learning-to-hash image retrieval."""

from .codes import binarize, hamming, pack, unpack
from .metrics import (
    evaluate_retrieval,
    mean_average_precision,
    precision_at_k,
    precision_at_radius,
    precision_recall_curve,
)

__version__ = "0.1.0"
__all__ = [
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
