"""CIBHash, unsupervised hashing by a Contrastive Information Bottleneck (Qiu et al., IJCAI 2021):
docs/algorithms/baselines.md."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat

from ..registry import METHODS
from .base import HashingMethod, MethodParams
from .greedyhash import sign_straight_through


class CIBHashParams(MethodParams):
    """temperature 0.3 and beta = 0.001 are the released code's (as cisip-FIRe's cibhash loss keeps them)."""

    temperature: PositiveFloat = 0.3
    """tau of the NT-Xent contrast between the two views' codes"""
    beta: float = Field(0.001, ge=0)
    """the weight of the bit-wise KL between the two views' Bernoulli probabilities"""


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent: rows a_i and b_i are a positive pair, every other row of the 2N a negative; cosine
    similarity over ``temperature``, cross-entropy averaged over the 2N rows."""
    z = F.normalize(torch.cat([a, b]), dim=1)
    sim = z @ z.T / temperature
    n = len(a)
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, target)


def bernoulli_kl(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """sum over bits of KL(Bern(p) || Bern(q)), averaged over the batch."""
    kl = p * (torch.log(p + eps) - torch.log(q + eps)) + (1 - p) * (torch.log(1 - p + eps) - torch.log(1 - q + eps))
    return kl.sum(1).mean()


@METHODS.register("cibhash")
class CIBHash(HashingMethod):
    """L = NT-Xent(b_T, b_S) + beta (KL(p_T || sg p_S) + KL(p_S || sg p_T)) / 2

    p = sigmoid(z) per bit for each view's pre-activation z (``uses_logits``), b = sign(p - 1/2) with the
    gradient passed straight through (the paper's Eq. 9-11: the contrast between the two augmented views'
    codes, and the bottleneck's KL, each direction against the other view held fixed). The two views are the
    run's teacher and student views (``views = 2``); no label is read (``supervised = False``). Under
    torchrun, the negatives are the local batch's.
    """

    Params = CIBHashParams
    views = 2
    targets = "positions"
    supervised = False
    uses_logits = True
    params: CIBHashParams

    def forward(self, z_t: torch.Tensor, z_s: torch.Tensor | None, idx: torch.Tensor, proxies=None) -> dict[str, torch.Tensor]:
        p_t, p_s = torch.sigmoid(z_t), torch.sigmoid(z_s)
        b_t, b_s = sign_straight_through(p_t - 0.5), sign_straight_through(p_s - 0.5)
        contrast = nt_xent(b_t, b_s, self.params.temperature)
        kl = 0.5 * (bernoulli_kl(p_t, p_s.detach()) + bernoulli_kl(p_s, p_t.detach()))
        return {"loss": contrast + self.params.beta * kl, "contrast": contrast, "kl": kl}
