"""DistillHash's settings (docs/algorithms/distillhash.md): the training schedule and loss weights at the
method's level, and how pairs are labelled, distilled and batched under ``pairs``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from ...features import feature_spec
from ..base import MethodParams

CALIBRATIONS = ("none", "balanced", "prior")


class PairParams(BaseModel):
    """Step 0's initial pairs (a frozen pretrained encoder's neighbours), step 2's noise-rate neighbourhoods
    and posterior, batching, and the memory budget of whole-set pair work."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    backbone: str = "mobilenet_v2"
    """the frozen, pretrained encoder whose features define the initial pairs"""
    pretrained: bool | str = True
    """the encoder's weights: true (offline package) or a weights file"""
    input_size: PositiveInt | list[PositiveInt] = 64
    """the encoder's input side; a list: each size's features centred and concatenated"""
    layer: int | None = 14
    """pooled output of this block (null: the final features)"""
    center: bool = True
    """pair distances are the cosine of mean-centred features"""
    rule: Literal["knn", "threshold", "two-threshold", "ssdh"] = "knn"
    """initial pair rule: knn, threshold, two-threshold or ssdh (half Gaussians around the distance histogram's mode)"""
    k: PositiveInt = 20
    """knn rule: an image's k nearest neighbours are its similar pairs"""
    quantiles: list[float] = [0.1, 0.5]
    """threshold rules: quantiles of the pair distances"""
    spread: list[float] = [2.0, 2.0]
    """ssdh rule: similar below mode - spread[0] sigma_left, dissimilar above mode + spread[1] sigma_right"""
    noise_neighbours: PositiveInt = 20
    """neighbourhood over which the local noise rates are minimised"""
    noise_skip: int = Field(2, ge=0)
    """rho_plus's neighbourhood starts at this rank (the released `start`)"""
    posterior: Literal["codes", "continuous"] = "codes"
    """the posterior P from the stage-1 codes b (the paper) or the continuous h"""
    calibration: Literal["none", "balanced", "prior"] = "none"
    """Platt-fit P on the noisy labels first (none: as the paper)"""
    distill_rule: Literal["agree", "relabel"] = "agree"
    """agree: keep an initial label where the Bayes rule assigns the same one (the abstract); relabel: every
    pair takes the rule's label (the released code's reading)"""
    posterior_fit: Literal["in_sample", "cross_fit"] = "in_sample"
    """the stage-1 posterior from the run's own model (in_sample) or from fold models that never saw the pair's
    images (cross_fit)"""
    folds: int = Field(2, ge=2)
    """cross_fit: the training images are split into this many folds, one stage-1 model per fold"""
    noise_rates: Literal["local", "global"] = "local"
    """local: extremes over each pair's neighbourhoods (the released code); global: anchor points over all pairs"""
    anchor_quantile: float = Field(0.0, ge=0, lt=0.5)
    """global noise rates: this quantile of P (and of 1 - P) over the pairs; 0 is the minimum"""
    margin: float = 0.0
    """how far (logit units; bits for binary codes) a pair must clear step 2's thresholds to be kept"""
    batch_neighbours: int = Field(3, ge=0)
    """each batch: anchors + this many of each anchor's k-NN"""
    memory_mb: float = Field(256, gt=0)
    """block size budget for whole-set pair work"""
    report_rows: PositiveInt | None = None
    """purity report over a sample of this many rows (null: every pair)"""

    @field_validator("input_size")
    @classmethod
    def _sizes(cls, v: int | list[int]) -> int | list[int]:
        if isinstance(v, list) and not v:
            raise ValueError("give an input size or a non-empty list of them")
        return v

    @field_validator("quantiles")
    @classmethod
    def _quantiles(cls, v: list[float]) -> list[float]:
        if not 1 <= len(v) <= 2 or not all(0 < q < 1 for q in v) or v != sorted(v):
            raise ValueError("one or two increasing quantiles in (0, 1)")
        return v

    @field_validator("spread")
    @classmethod
    def _spread(cls, v: list[float]) -> list[float]:
        if len(v) != 2 or not all(x >= 0 for x in v):
            raise ValueError("two non-negative multiples of the halves' spreads")
        return v

    @model_validator(mode="after")
    def _margin(self) -> PairParams:
        if self.margin < 0 and self.distill_rule == "relabel":
            raise ValueError(
                f"margin {self.margin:g} with distill_rule relabel would label some pairs both ways; use margin >= 0"
            )
        return self

    @property
    def sizes(self) -> list[int]:
        return self.input_size if isinstance(self.input_size, list) else [self.input_size]

    def feature_spec(self, size: int) -> dict:
        """The frozen-features spec of one input size (``features.frozen_features``)."""
        return feature_spec(self.backbone, self.pretrained, size, self.layer)


class DistillHashParams(MethodParams):
    """Step 1 trains ``stage1_epochs`` on the initial pairs, the rest on the distilled ones; the pair loss
    weighs similar and dissimilar pairs equally when ``balance``, plus ``quantization`` x the quantization
    term (DPSH's)."""

    stage1_epochs: PositiveInt = 10
    """epochs on the initial (noisy) pairs before distillation"""
    balance: bool = True
    """weigh similar and dissimilar pairs equally in the pair loss"""
    quantization: float = Field(0.1, ge=0)
    """the quantization term's weight (DPSH's)"""
    pairs: PairParams = PairParams()
    """how pairs are labelled, distilled and batched"""
