"""The unsupervised GreedyHash (Su et al., NeurIPS 2018); docs/algorithms/baselines.md."""

from __future__ import annotations

import torch
from pydantic import Field

from ..registry import METHODS
from .feature_similarity import FeatureSimilarityMethod, FeatureSimilarityParams
from .greedyhash import cubic_penalty, sign_straight_through


class GreedyHashUnsupervisedParams(FeatureSimilarityParams):
    """alpha = 0.1 follows DeepHash-pytorch's GreedyHash_unsupervised.py."""

    alpha: float = Field(0.1, ge=0)
    """the weight of the cubic penalty mean | |h| - 1 |^3"""


@METHODS.register("greedyhash-unsupervised")
class GreedyHashUnsupervised(FeatureSimilarityMethod):
    """L = mean_pairs (cos(b_i, b_j) - cos(x_i, x_j))^2 + alpha mean | |h| - 1 |^3, b = sign(h) straight through

    The paper's unsupervised objective: the binary codes keep the cosine similarities of the frozen features x,
    with GreedyHash's sign (the gradient passed straight through) and cubic penalty; h is the hash layer's output
    before tanh (``uses_logits``). No label is read. Under torchrun, the pairs are the local batch's.
    """

    Params = GreedyHashUnsupervisedParams
    params: GreedyHashUnsupervisedParams

    def forward(self, h: torch.Tensor, h_s: torch.Tensor | None, idx: torch.Tensor, proxies=None) -> dict[str, torch.Tensor]:
        similarity = self.similarity_loss(sign_straight_through(h), idx)
        penalty = cubic_penalty(h)
        return {"loss": similarity + self.params.alpha * penalty, "similarity": similarity, "penalty": penalty}
