"""What BiHalf and the unsupervised GreedyHash share: the cosine similarity of a batch's codes learns the cosine
similarity of the images' frozen-backbone features (docs/algorithms/baselines.md, "Feature-similarity methods").

The features are the run's *clean* images through a frozen, pretrained encoder (``features.frozen_features``),
looked up by training-set position; the papers take the fc7 features of the very input the hash layer sees
(VGG-16 frozen, only the hash layer trained), which for our cached views differs only by the view's augmentation.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, PositiveInt

from ..features import feature_spec
from .base import HashingMethod, MethodParams, TrainingContext


class FrozenFeatures(BaseModel):
    """The frozen, pretrained encoder whose features the codes' similarities learn."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    backbone: str = "mobilenet_v2"
    """the encoder (hashdistill.backbones)"""
    pretrained: bool | str = True
    """its weights: true (offline package) or a weights file"""
    input_size: PositiveInt = 128
    """the encoder's input side"""
    layer: int | None = 14
    """pooled output of this block (null: the final features)"""

    def spec(self) -> dict[str, Any]:
        return feature_spec(self.backbone, self.pretrained, self.input_size, self.layer)


class FeatureSimilarityParams(MethodParams):
    features: FrozenFeatures = FrozenFeatures()
    """the encoder whose feature similarities the codes learn"""
    pairing: Literal["halves", "all"] = "halves"
    """which pairs of a batch: its first half against its second, item by item (the released code), or all"""


def cosine_similarity_loss(b: torch.Tensor, x: torch.Tensor, pairing: str = "halves") -> torch.Tensor:
    """mean over pairs (i, j) of (cos(b_i, b_j) - cos(x_i, x_j))^2; ``halves``: the pairs (i, i + n/2) for
    i < n/2 (n odd: the last item sits out), ``all``: every i < j."""
    if pairing == "halves":
        m = len(b) // 2
        return F.mse_loss(F.cosine_similarity(b[:m], b[m : 2 * m]), F.cosine_similarity(x[:m], x[m : 2 * m]))
    nb, nx = F.normalize(b, dim=1), F.normalize(x, dim=1)
    i, j = torch.triu_indices(len(b), len(b), offset=1, device=b.device)
    return F.mse_loss((nb @ nb.T)[i, j], (nx @ nx.T)[i, j])


class FeatureSimilarityMethod(HashingMethod):
    """Base of the unsupervised methods whose codes learn the frozen features' cosine similarities: ``prepare``
    loads the training images' features (``feature_bank``, broadcast under torchrun); ``forward`` receives
    positions and the pre-activation z; a subclass binarises z its own way and scores the codes with
    ``similarity_loss``."""

    targets = "positions"
    supervised = False
    uses_logits = True
    shared = ("feature_bank",)
    params: FeatureSimilarityParams

    def prepare(self, ctx: TrainingContext) -> dict[str, Any]:
        spec = self.params.features
        f = ctx.frozen_features(spec.spec(), f"similarity features @{spec.input_size}")
        self.feature_bank = torch.from_numpy(np.asarray(f, np.float32))
        return {}

    def similarity_loss(self, b: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if self.feature_bank.device != b.device:  # once: the bank follows the codes to their device
            self.feature_bank = self.feature_bank.to(b.device)
        x = self.feature_bank[idx.to(b.device).long()]
        return cosine_similarity_loss(b, x, self.params.pairing)
