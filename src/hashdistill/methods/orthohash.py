"""OrthoHash (Hoe et al., NeurIPS 2021): one loss, cross-entropy over the cosine similarity to fixed,
near-orthogonal class codes with a margin, + an optional quantization term; docs/algorithms/baselines.md."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat

from ..registry import METHODS
from .base import HashingMethod, MethodParams
from .csq import hash_centres
from .targets import label_indicator, random_signs, soft_targets


class OrthoHashParams(MethodParams):
    """scale s = 8, cosine margin m = 0.2, Bernoulli codebook, no quantization and label smoothing for multi-hot
    labels: the authors' released defaults (kamwoh/orthohash, main.py)."""

    scale: PositiveFloat = 8.0
    """s: logits are s (cos(v, c_k) - m [k is a label])"""
    margin: float = Field(0.2, ge=0)
    """m: the additive cosine margin on the item's own classes"""
    codebook: Literal["bernoulli", "spread"] = "bernoulli"
    """class codes: seeded Bernoulli(0.5) signs (the released default), or spread out (CSQ's centres)"""
    quantization: float = Field(0.0, ge=0)
    """the weight of 1 - cos(v, sign(v)) (the released ``quan`` with ``quan_type: cs``)"""
    multilabel: Literal["label_smoothing", "bce"] = "label_smoothing"
    """multi-hot labels: softmax cross-entropy to the normalised label vector, or per-class BCE"""


@METHODS.register("orthohash")
class OrthoHash(HashingMethod):
    """L = CE(s (cos(v, C) - m Y), Y) + q (1 - cos(v, sign v))

    with C the fixed class codes (classes x K, {-1, +1}), v the hash layer's output before tanh (``uses_logits``),
    Y the one-hot (or multi-hot) labels: the paper's Eq. 7 (cosine-margin softmax over the codebook), its
    multi-label form, and the quantization term of Eq. 9. Maximising the cosine to one's class code is the
    paper's link between classification and Hamming distance. Pointwise: no pairs in the batch.
    """

    Params = OrthoHashParams
    uses_logits = True
    params: OrthoHashParams

    def __init__(self, params: OrthoHashParams | None = None, **kw) -> None:
        super().__init__(params, **kw)
        if self.params.codebook == "spread":
            codes = hash_centres(self.n_classes, self.bits, self.seed)
        else:
            codes = random_signs(self.n_classes, self.bits, self.seed)
        self.register_buffer("codebook", codes)

    def forward(self, v: torch.Tensor, v_s: torch.Tensor | None, y: torch.Tensor, proxies=None) -> dict[str, torch.Tensor]:
        p = self.params
        cos = F.normalize(v, dim=1) @ F.normalize(self.codebook.to(v.device), dim=1).T
        onehot = label_indicator(y, self.n_classes).to(v.dtype)
        logits = p.scale * (cos - p.margin * onehot)
        if y.ndim == 1:
            ce = F.cross_entropy(logits, y.long())
        elif p.multilabel == "bce":
            ce = F.binary_cross_entropy_with_logits(logits, onehot)
        else:
            ce = -(soft_targets(y, self.n_classes).to(v.dtype) * F.log_softmax(logits, dim=1)).sum(1).mean()
        quant = (1 - F.cosine_similarity(v, v.detach().sign(), dim=1)).mean()
        return {"loss": ce + p.quantization * quant, "ce": ce, "quant": quant}
