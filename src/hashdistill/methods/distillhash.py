"""DistillHash (Yang et al., CVPR 2019): unsupervised hashing by distilling data pairs.

The losses (Bayesian pairwise likelihood, the released code's squared variant, quantization) and the
staging of one run: step 1 learns from the initial noisy pairs for ``stage1_epochs``; at that epoch the
stage-1 codes of the training images are frozen, pairs are distilled (``pairs.DistilledPairs``) and
training continues on the distilled pairs only (step 3). No class label is read anywhere: the trainer
hands this method the batch's positions in the training set, not its labels.

Beyond the paper (each measured in ``benchmarks/notes/quality-fmnist-1k.md``): the initial pairs may come
from several input sizes' features, each mean-centred (``pair_features``); batches are built from
anchors and some of their k nearest neighbours (``with_neighbours``), since in a random batch of 128 out
of 5,000 images a k = 20 neighbour pair is rare; and ``calibration`` optionally Platt-fits the stage-1
posterior to the noisy labels before distilling (``pairs.calibrate``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..pairs import DistilledPairs, InitialPairs, calibrate, knn_graph, normalise, purity

CALIBRATIONS = ("none", "balanced", "prior")
PAIR_DEFAULTS: dict[str, Any] = {
    "backbone": "mobilenet_v2",  # frozen, pretrained encoder whose features define the initial pairs
    "pretrained": True,
    "input_size": 64,
    "layer": 14,  # pooled output of this block (null: the final features)
    "center": True,  # cosine of mean-centred features (a list of input sizes: each centred, concatenated)
    "rule": "knn",  # knn | threshold | two-threshold
    "k": 20,  # knn rule
    "quantiles": [0.1, 0.5],  # threshold rules: quantiles of the pair distances
    "noise_neighbours": 20,  # n: neighbourhood over which the local noise rates are minimised
    "noise_skip": 2,  # rho_plus's neighbourhood starts at this rank (rank 0 is the image; the released `start`)
    "posterior": "codes",  # P_ij from the stage-1 codes b (the paper) or the continuous h ("continuous")
    "calibration": "none",  # none (the paper's sigmoid(b.b/2)) | balanced | prior: Platt-fit P on the noisy labels
    "stage1_epochs": 10,  # epochs on the noisy pairs before distilling (the rest learn from distilled pairs)
    "loss": "bayes",  # bayes (the paper) | squared (the released code)
    "balance": True,  # weigh similar and dissimilar pairs equally in each batch
    "batch_neighbours": 3,  # each batch: anchors + this many of each anchor's k nearest neighbours
    "quantization": 0.1,  # weight of the quantization term
    "memory_mb": 256,  # block size budget for whole-set pair work
    "report_rows": None,  # purity report over a sample of this many rows (null: every pair)
}


def pair_features(features: list[np.ndarray], center: bool = True) -> torch.Tensor:
    """Unit rows of the features that define the initial pairs: each array (e.g. one per input size)
    mean-centred when ``center`` and scaled to unit rows, then concatenated with equal weight."""
    parts = [torch.as_tensor(np.asarray(f, np.float32)) for f in features]
    parts = [normalise(p - p.mean(0) if center else p) for p in parts]
    return normalise(torch.cat(parts, dim=1))


def _masked_mean(values: torch.Tensor, s: torch.Tensor, balance: bool) -> torch.Tensor:
    pos, neg = s > 0, s < 0
    if not balance:
        mask = pos | neg
        return values[mask].mean() if mask.any() else values.sum() * 0
    parts = [values[m].mean() for m in (pos, neg) if m.any()]
    return torch.stack(parts).mean() if parts else values.sum() * 0


class BayesianPairLoss(nn.Module):
    """Negative log-likelihood of p(s_ij = +1 | h_i, h_j) = sigmoid(theta_ij), theta_ij = h_i . h_j / 2
    (the algorithm note, steps 1 and 3; DPSH's Eq. 2): softplus(theta) - [s = +1] theta, averaged over the
    labelled pairs (s = 0 is ignored), similar and dissimilar pairs equally weighted when ``balance``."""

    def __init__(self, balance: bool = True) -> None:
        super().__init__()
        self.balance = balance

    def forward(self, h_a: torch.Tensor, h_b: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        theta = 0.5 * h_a @ h_b.T
        return _masked_mean(F.softplus(theta) - (s > 0).to(theta.dtype) * theta, s, self.balance)


class SquaredPairLoss(nn.Module):
    """The released code's variant: ((1/K) h_i . h_j - s_ij)^2 over the labelled pairs."""

    def __init__(self, balance: bool = True) -> None:
        super().__init__()
        self.balance = balance

    def forward(self, h_a: torch.Tensor, h_b: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        sim = h_a @ h_b.T / h_a.shape[1]
        return _masked_mean((sim - s.to(sim.dtype)) ** 2, s, self.balance)


class QuantizationLoss(nn.Module):
    """||h - sign(h)||^2 / K, averaged over the batch (DPSH's quantization term)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b = torch.where(h.detach() >= 0, 1.0, -1.0)
        return ((h - b) ** 2).mean()


class DistillHash(nn.Module):
    """Pair loss on the batch's pairs + ``quantization`` x quantization loss; labels from the pair source.

    ``distill=False`` is the SSDH-like ablation: the noisy pairs for every epoch.
    """

    needs_student = False
    uses_labels = False

    def __init__(self, pairs: dict[str, Any] | None = None, distill: bool = True, loss: str | None = None) -> None:
        super().__init__()
        self.cfg = {**PAIR_DEFAULTS, **(pairs or {})}
        if loss is not None:
            self.cfg["loss"] = loss
        if self.cfg["loss"] not in ("bayes", "squared"):
            raise ValueError(f"pairs.loss must be bayes or squared, got {self.cfg['loss']!r}")
        if self.cfg["posterior"] not in ("codes", "continuous"):
            raise ValueError(f"pairs.posterior must be codes or continuous, got {self.cfg['posterior']!r}")
        if self.cfg["calibration"] not in CALIBRATIONS:
            raise ValueError(f"pairs.calibration must be one of {', '.join(CALIBRATIONS)}, got {self.cfg['calibration']!r}")
        self.distill = distill
        cls = BayesianPairLoss if self.cfg["loss"] == "bayes" else SquaredPairLoss
        self.pair_loss = cls(bool(self.cfg["balance"]))
        self.quantize = QuantizationLoss()
        self.source: InitialPairs | DistilledPairs | None = None
        self.initial: InitialPairs | None = None
        self.graph: torch.Tensor | None = None
        self.report: dict[str, Any] = {}

    # -------------------------------------------------------------- the trainer's hooks
    def setup(self, features: np.ndarray | list[np.ndarray], truth: np.ndarray | None = None, seed: int = 0) -> dict[str, Any]:
        """Step 0 from frozen features of the training images (an array, or one per input size, combined
        by ``pair_features``); ``truth`` only feeds the purity report."""
        c = self.cfg
        f = pair_features(features if isinstance(features, list) else [features], bool(c["center"]))
        depth = max(int(c["k"]), int(c["noise_neighbours"]) + int(c["noise_skip"]) - 1)
        self.graph = knn_graph(f, depth, c["memory_mb"])
        self.initial = InitialPairs(f, c["rule"], int(c["k"]), tuple(c["quantiles"]), self.graph, c["memory_mb"], seed)
        self.source = self.initial
        if truth is not None:
            self.report["initial"] = purity(self.initial, truth, c["memory_mb"], c["report_rows"], seed)
        return self.report

    def distill_from(self, codes: np.ndarray, truth: np.ndarray | None = None, seed: int = 0) -> dict[str, Any]:
        """Step 2 from the stage-1 outputs h of the training images (same order as the features); the
        posterior is read from sign(h) (the paper) or from h (``posterior: continuous``)."""
        c = self.cfg
        n, skip = int(c["noise_neighbours"]), int(c["noise_skip"])
        ranked = torch.cat([torch.arange(len(self.graph))[:, None], self.graph], dim=1)  # rank 0: the image itself
        nbr_minus, nbr_plus = ranked[:, :n], ranked[:, skip : skip + n]
        self.source = DistilledPairs(codes, nbr_minus, nbr_plus, binary=c["posterior"] == "codes")
        if c["calibration"] != "none":
            scale, offset = calibrate(self.source, self.initial, c["calibration"] == "balanced", c["memory_mb"], c["report_rows"], seed)
            self.source.scale, self.source.offset = scale, offset
            self.report["calibration"] = {"method": c["calibration"], "scale": scale, "offset": offset}
        self.source.materialise(c["memory_mb"])
        if truth is not None:
            self.report["distilled"] = purity(self.source, truth, c["memory_mb"], c["report_rows"], seed)
        return self.report

    @property
    def distilled(self) -> bool:
        """Whether step 2 has run (the batch labels now come from the distilled pairs)."""
        return isinstance(self.source, DistilledPairs)

    @property
    def batch_neighbours(self) -> int:
        return int(self.cfg["batch_neighbours"])

    def with_neighbours(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The anchors and ``batch_neighbours`` of each one's k nearest neighbours (drawn with repetition),
        without duplicates: batches in which similar pairs are not rare."""
        k, m = int(self.cfg["k"]), self.batch_neighbours
        picks = self.graph[torch.as_tensor(anchors)[:, None], torch.as_tensor(rng.integers(0, k, (len(anchors), m)))]
        return np.unique(np.concatenate([np.asarray(anchors), picks.flatten().numpy()]))

    @property
    def stage1_epochs(self) -> int | None:
        return int(self.cfg["stage1_epochs"]) if self.distill else None

    # -------------------------------------------------------------- the loss
    def forward(
        self, h_teacher: torch.Tensor, h_student: torch.Tensor | None, idx: torch.Tensor, proxies: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        if self.source is None:
            raise RuntimeError("DistillHash.setup(features) must run before training")
        idx = idx.cpu()
        s = self.source.labels(idx, idx).to(h_teacher.device)
        s.fill_diagonal_(0)  # a pair is two different images
        pair = self.pair_loss(h_teacher, h_teacher, s)
        q = self.quantize(h_teacher)
        return {"loss": pair + float(self.cfg["quantization"]) * q, "pair": pair, "quant": q}


def create_distillhash(name: str, pairs: dict[str, Any] | None = None, **_: Any) -> DistillHash:
    """``distillhash`` (paper), ``distillhash-noisy`` (no distillation, SSDH-like), ``distillhash-squared``."""
    variants = {"distillhash": {}, "distillhash-noisy": {"distill": False}, "distillhash-squared": {"loss": "squared"}}
    if name not in variants:
        raise ValueError(f"unknown DistillHash variant {name!r}")
    return DistillHash(pairs, **variants[name])
