"""DistillHash (Yang et al., CVPR 2019): unsupervised hashing by distilling data pairs; docs/algorithms/distillhash.md.

The losses (Bayesian pairwise likelihood, the released code's squared variant, quantization) and the
staging of one run, from the contract's hooks: ``prepare`` labels the initial pairs from frozen features
(step 0); step 1 learns from them for ``stage1_epochs``; at that epoch ``on_epoch`` freezes the stage-1
codes of the training images (``stage1-h.npy`` in the run, so a resume reuses them), distils the pairs
(step 2) and the remaining epochs learn from the distilled pairs (step 3). No class label is read: batches
carry positions (``targets = "positions"``) and the context's labels reach the purity report only.

Beyond the paper (each measured in ``benchmarks/notes/quality-fmnist-1k.md``): the initial pairs may come
from several input sizes' features, each mean-centred (``pair_features``); batches are built from
anchors and some of their k nearest neighbours (``batches``), since in a random batch of 128 out of
5,000 images a k = 20 neighbour pair is rare; and ``pairs.calibration`` optionally Platt-fits the
stage-1 posterior to the noisy labels before distilling (``pairs.calibrate``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ... import _io
from ...errors import ConfigError
from ...registry import METHODS
from ..base import HashingMethod, TrainingContext
from .pairs import DistilledPairs, InitialPairs, calibrate, cross_fitted, knn_graph, normalise, purity, purity_curve
from .params import DistillHashParams


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
    (docs/algorithms/distillhash.md, steps 1 and 3; DPSH's Eq. 2): softplus(theta) - [s = +1] theta, averaged over the
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


@METHODS.register("distillhash")
class DistillHash(HashingMethod):
    """Pair loss on the batch's pairs + ``quantization`` x quantization loss; labels from the pair source
    (the initial pairs, then the distilled ones). ``DistillHashNoisy`` and ``DistillHashSquared`` are the
    ablations. Under torchrun the pairs are those of each rank's local batch (its anchors and their
    neighbours), and steps 0 and 2 run on rank 0, their pairs broadcast (``shared``)."""

    Params = DistillHashParams
    targets = "positions"
    supervised = False
    shared = ("graph", "initial", "source", "report")
    saved = ("stage1", "stage1_fold")  # the checkpoint keeps the stage-1 outputs; the pairs are rebuilt from them
    distills: ClassVar[bool] = True
    pair_loss_type: ClassVar[type[nn.Module]] = BayesianPairLoss
    params: DistillHashParams

    def __init__(self, params: DistillHashParams | None = None, **kw: Any) -> None:
        super().__init__(params, **kw)
        self.pair_loss = self.pair_loss_type(self.params.balance)
        self.quantize = QuantizationLoss()
        self.source: InitialPairs | DistilledPairs | None = None
        self.initial: InitialPairs | None = None
        self.graph: torch.Tensor | None = None
        self.report: dict[str, Any] = {}
        self.allowed: np.ndarray | None = None  # while a cross-fit model trains: the images its batches may hold
        self.stage1: np.ndarray | None = None  # the frozen stage-1 outputs h, (n, K) or cross-fitted (F, n, K)
        self.stage1_fold: np.ndarray | None = None

    @classmethod
    def check(cls, params: DistillHashParams, settings: dict[str, Any]) -> None:
        epochs, batch = settings["epochs"], settings["batch_size"]
        if cls.distills and not params.stage1_epochs < epochs:
            raise ConfigError(
                f"method.stage1_epochs must be between 1 and schedule.epochs - 1 ({epochs - 1}), got {params.stage1_epochs}"
            )
        if params.pairs.batch_neighbours >= batch:
            raise ConfigError(
                f"method.pairs.batch_neighbours must be below optim.batch_size ({batch}), got {params.pairs.batch_neighbours}"
            )

    # -------------------------------------------------------------- steps 0 and 2
    def setup(self, features: np.ndarray | list[np.ndarray], truth: np.ndarray | None = None, seed: int = 0) -> dict[str, Any]:
        """Step 0 from frozen features of the training images (an array, or one per input size, combined
        by ``pair_features``); ``truth`` only feeds the purity report."""
        c = self.params.pairs
        f = pair_features(features if isinstance(features, list) else [features], c.center)
        depth = max(c.k, c.noise_neighbours + c.noise_skip - 1)
        self.graph = knn_graph(f, depth, c.memory_mb)
        self.initial = InitialPairs(f, c.rule, c.k, tuple(c.quantiles), self.graph, c.memory_mb, seed, tuple(c.spread))
        self.source = self.initial
        if truth is not None:
            self.report["initial"] = purity(self.initial, truth, c.memory_mb, c.report_rows, seed)
        return self.report

    def distill_from(
        self, codes: np.ndarray, truth: np.ndarray | None = None, seed: int = 0, fold: np.ndarray | None = None
    ) -> dict[str, Any]:
        """Step 2 from the stage-1 outputs h of the training images (same order as the features): (n, K) from the
        run's model, or (F, n, K) cross-fitted with each image's ``fold``. The posterior is read from sign(h)
        (the paper) or from h (``pairs.posterior: continuous``); ``truth`` feeds the report and its curve only."""
        c = self.params.pairs
        n, skip = c.noise_neighbours, c.noise_skip
        ranked = torch.cat([torch.arange(len(self.graph))[:, None], self.graph], dim=1)  # rank 0: the image itself
        self.source = DistilledPairs(
            codes, ranked[:, :n], ranked[:, skip : skip + n], binary=c.posterior == "codes", fold=fold,
            initial=self.initial if c.distill_rule == "agree" else None, rule=c.distill_rule, margin=c.margin,
            noise=c.noise_rates, anchor_quantile=c.anchor_quantile, seed=seed,
        )  # fmt: skip
        if c.calibration != "none":
            scale, offset = calibrate(self.source, self.initial, c.calibration == "balanced", c.memory_mb, c.report_rows, seed)
            self.source.scale, self.source.offset = scale, offset
            self.report["calibration"] = {"method": c.calibration, "scale": scale, "offset": offset}
        self.source.materialise(c.memory_mb)
        if truth is not None:
            self.report["distilled"] = purity(self.source, truth, c.memory_mb, c.report_rows, seed)
            k = self.source.b.shape[-1]
            margins = np.arange(-k / 2, k / 2 + 0.25, 0.5)
            self.report["curve"] = purity_curve(self.source, truth, margins, c.memory_mb, c.report_rows, seed)
            self.report["curve"]["at"] = c.margin
        return self.report

    # -------------------------------------------------------------- the contract's hooks
    def prepare(self, ctx: TrainingContext) -> dict[str, Any]:
        """Step 0 on the frozen encoder's features of the training images, one array per input size."""
        spec = self.params.pairs
        feats = [np.asarray(ctx.frozen_features(spec.feature_spec(s), f"pair features @{s}"), np.float32) for s in spec.sizes]
        self.setup(feats, ctx.report_labels, ctx.seed)
        return self._reported("initial", ctx)

    def on_epoch(self, epoch: int, ctx: TrainingContext) -> dict[str, Any]:
        """At ``stage1_epochs``: freeze the stage-1 outputs (saved, so a resume reuses them) and distil."""
        if not self.distills or epoch < self.params.stage1_epochs or isinstance(self.source, DistilledPairs):
            return {}
        extra: dict[str, Any] = {}
        if self.stage1 is None:  # not restored from a checkpoint: freeze them now
            if self.params.pairs.posterior_fit == "cross_fit":
                self.stage1, self.stage1_fold, extra = self._cross_fit(ctx)
            else:  # continuous h: the posterior takes sign(h) or h as configured
                self.stage1 = ctx.encode().astype(np.float32)
        codes, fold = self.stage1, self.stage1_fold
        self.distill_from(codes, ctx.report_labels, ctx.seed, fold)
        if "curve" in self.report:
            from ...plots import purity_curves

            purity_curves({ctx.run_dir.name: self.report["curve"]}, ctx.run_dir / "purity-curve", self.report.get("initial"))
        return {**self._reported("distilled", ctx), **extra}

    def _cross_fit(self, ctx: TrainingContext) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """``pairs.folds`` fresh stage-1 models, each trained on the pairs among the images outside its fold for
        ``stage1_epochs`` (``ctx.train_aside``); the checkpoint keeps their outputs (``get_extra_state``)."""
        t0 = time.perf_counter()

        def fit(positions: np.ndarray, f: int) -> np.ndarray:
            ctx.log(f"cross-fit: stage-1 model {f + 1}/{self.params.pairs.folds} on the pairs of {len(positions):,} images")
            self.allowed = np.zeros(ctx.n, dtype=bool)
            self.allowed[positions] = True
            try:
                return ctx.train_aside(positions, self.params.stage1_epochs, ctx.seed * 1_009 + f + 1)
            finally:
                self.allowed = None

        codes, fold = cross_fitted(ctx.n, self.params.pairs.folds, fit, ctx.seed)
        return codes, fold, {"cross_fit_seconds": round(time.perf_counter() - t0, 3)}

    def _reported(self, part: str, ctx: TrainingContext) -> dict[str, Any]:
        if part not in self.report:  # unlabelled images: nothing to measure the pairs against
            return {}
        r = self.report[part]
        ctx.log(
            f"{part} pairs: {r['pairs']:,} of {r['of_pairs']:,} kept, purity {r['purity']:.3f} "
            f"(similar {r['similar']:,} at {r['similar_purity']:.3f}, dissimilar {r['dissimilar']:,} at "
            f"{r['dissimilar_purity']:.3f})"
        )
        _io.write_json(ctx.run_dir / "purity.json", self.report)
        # the metrics (and what train prints) take the summary; the curve stays in purity.json and its plot
        return {"purity": {k: v for k, v in self.report.items() if k != "curve"}}

    def anchors_per_batch(self, batch_size: int) -> int:
        return batch_size // (1 + self.params.pairs.batch_neighbours)

    def batches(self, order: np.ndarray, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Each batch: anchors from the epoch's order and ``pairs.batch_neighbours`` of each one's k nearest
        neighbours (epoch = every training image once as an anchor)."""
        for anchors in super().batches(order, batch_size, rng):
            yield self.with_neighbours(anchors, rng) if self.params.pairs.batch_neighbours else anchors

    def with_neighbours(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The anchors and ``batch_neighbours`` of each one's k nearest neighbours (drawn with repetition),
        without duplicates: batches in which similar pairs are not rare."""
        k, m = self.params.pairs.k, self.params.pairs.batch_neighbours
        picks = self.graph[torch.as_tensor(anchors)[:, None], torch.as_tensor(rng.integers(0, k, (len(anchors), m)))]
        picks = picks.flatten().numpy()
        if self.allowed is not None:  # a cross-fit model: its held-out fold never enters a batch
            picks = picks[self.allowed[picks]]
        return np.unique(np.concatenate([np.asarray(anchors), picks]))

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
        return {"loss": pair + self.params.quantization * q, "pair": pair, "quant": q}


@METHODS.register("distillhash-noisy")
class DistillHashNoisy(DistillHash):
    """``distillhash-noisy``: the initial (noisy) pairs for every epoch, no distillation (SSDH-like)."""

    distills = False


@METHODS.register("distillhash-squared")
class DistillHashSquared(DistillHash):
    """``distillhash-squared``: the released code's squared pair loss instead of the Bayesian likelihood."""

    pair_loss_type = SquaredPairLoss
