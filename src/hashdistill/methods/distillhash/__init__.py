"""DistillHash as one package: the method and its ablations (``method``), its settings (``params``) and
the pair machinery (``pairs``); docs/algorithms/distillhash.md."""

from .method import DistillHash, DistillHashNoisy, DistillHashSquared, pair_features
from .params import DistillHashParams, PairParams

__all__ = ["DistillHash", "DistillHashNoisy", "DistillHashParams", "DistillHashSquared", "PairParams", "pair_features"]
