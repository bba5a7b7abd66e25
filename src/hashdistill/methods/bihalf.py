"""BiHalf, unsupervised hashing by maximising bit entropy (Li & van Gemert, AAAI 2021); docs/algorithms/baselines.md."""

from __future__ import annotations

import torch
from pydantic import Field

from ..registry import METHODS
from .feature_similarity import FeatureSimilarityMethod, FeatureSimilarityParams


class _BiHalf(torch.autograd.Function):
    """Forward: in each bit (column), the batch's larger half of u becomes +1 and the rest -1 (the paper's Eq. 8,
    the optimal transport of u onto the half-half distribution); backward: dL/du = dL/db + gamma (u - b) / numel
    (Eq. 11, the straight-through gradient plus the penalty pulling u towards b)."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, gamma: float) -> torch.Tensor:
        n = len(u)
        ranks = u.argsort(dim=0, descending=True).argsort(dim=0)
        b = torch.where(ranks < n // 2, 1.0, -1.0).to(u.dtype)
        ctx.save_for_backward(u, b)
        ctx.gamma = gamma
        return b

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        u, b = ctx.saved_tensors
        return grad + ctx.gamma * (u - b) / b.numel(), None


def bi_half(u: torch.Tensor, gamma: float = 6.0) -> torch.Tensor:
    return _BiHalf.apply(u, gamma)


class BiHalfParams(FeatureSimilarityParams):
    """gamma = 6 is the released code's (and DeepHash-pytorch's); the loss is its image-retrieval loss."""

    gamma: float = Field(6.0, ge=0)
    """the weight of the pull of u towards its bi-half codes in the backward pass"""


@METHODS.register("bihalf")
class BiHalf(FeatureSimilarityMethod):
    """L = mean_pairs (cos(b_i, b_j) - cos(x_i, x_j))^2, b = BiHalf(z) over the batch

    The hash layer's output z goes through the bi-half layer, which makes every bit +1 on exactly half of the
    batch (maximal bit entropy, no loss term for it); the codes' cosine similarities learn those of the frozen
    features x (the released image code's loss). Encoding takes sign(z), as the released code's test pass. No label
    is read (``supervised = False``). Under torchrun, the halves and pairs are the local batch's.
    """

    Params = BiHalfParams
    params: BiHalfParams

    def forward(self, z: torch.Tensor, z_s: torch.Tensor | None, idx: torch.Tensor, proxies=None) -> dict[str, torch.Tensor]:
        loss = self.similarity_loss(bi_half(z, self.params.gamma), idx)
        return {"loss": loss}
