"""Shallow hashers (LSH, PCAH, PCA-RR, SH, ITQ, SDH, KSH) with scikit-learn's shape, and ``run_shallow``, which fits
one on a protocol's training split and scores it; ``run_float`` scores the frozen float features by cosine."""

from .hashers import ITQ, KSH, LSH, PCAH, PCARR, SDH, SH, SHALLOW_METHODS, NotFittedError, create_hasher
from .runner import FLOAT_METHOD, run_float, run_shallow, split_features

__all__ = ["FLOAT_METHOD", "ITQ", "KSH", "LSH", "PCAH", "PCARR", "SDH", "SH", "SHALLOW_METHODS", "NotFittedError",
           "create_hasher", "run_float", "run_shallow", "split_features"]  # fmt: skip
