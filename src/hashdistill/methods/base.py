"""The contract between the trainer and every deep hashing method (docs/architecture.md, "Methods").

A method is a ``HashingMethod``: a loss module that *declares* what it consumes as class attributes and
gets a few no-op hooks it may override. The trainer reads the declarations and calls the hooks; it never
asks a method what it is. Its hyper-parameters are a pydantic model, ``Params``, next to the loss.

Adding a method is one module with a ``HashingMethod`` subclass under ``@METHODS.register("name")``
(``registry.py``); nothing in the trainer, the config or ``methods/__init__.py`` changes. The settings every
method takes, ``MethodParams``, are the config's (``config.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from ..config import MethodParams


@dataclass
class TrainingContext:
    """What the trainer hands a method's hooks: the training set's size, its labels (``None`` for an
    unsupervised method), the labels for reports only (never for a loss), the run folder, and callables:
    frozen-backbone features of the training images for a spec (``features.frozen_features``), the current
    model's continuous codes h of the training images' clean views, and ``train_aside(positions, epochs,
    seed)``: a fresh model of the run's architecture (initial weights from ``seed``) trained on the method's
    current loss for ``epochs`` epochs of the run's schedule, its batches drawn by the method's ``batches``
    from ``positions`` only, returning its codes h of the training images; the run's own model, optimiser and
    schedule are untouched (DistillHash's cross-fitted posterior)."""

    n: int
    labels: np.ndarray | None
    report_labels: np.ndarray | None  # None: unlabelled images (no report against ground truth)
    seed: int
    run_dir: Path
    frozen_features: Callable[[dict[str, Any], str], np.ndarray]
    encode: Callable[[], np.ndarray]
    log: Callable[[str], None]
    train_aside: Callable[[np.ndarray, int, int], np.ndarray]


class HashingMethod(nn.Module):
    """Base of every deep method. Subclasses set the declarations below and implement ``forward``.

    Declarations (class attributes):

    - ``views``: 1, the loss sees one view of each image (T_T, or T_S with ``train_view: student``);
      2, it sees the teacher and the student view (``h_student`` is not ``None``).
    - ``targets``: ``"labels"``, a batch carries the images' labels to ``forward``; ``"positions"``, their
      positions in the training set (methods with per-image state: CNNH's target codes, DistillHash's pairs).
    - ``supervised``: whether the method reads class labels at all; an unsupervised method's context
      holds ``labels=None`` (its ``report_labels`` may feed a report, never the loss).
    - ``uses_proxies``: the model carries trainable proxies (classes x K) handed to ``forward``.
    - ``uses_logits``: ``forward`` receives the pre-activation z (h = tanh(z)) instead of h.
    - ``shared``: the attributes ``prepare`` / ``on_epoch`` compute over the whole training set (CNNH's target
      codes, DistillHash's pairs). Under torchrun the hooks run on rank 0 alone and these are broadcast.
    - ``saved``: the attributes the checkpoint keeps (``state_dict()``, through ``get_extra_state``), so that a
      resumed run equals an uninterrupted one; ``None``: the ``shared`` ones. Arrays, tensors, numbers only.

    ``forward(h_teacher, h_student, y, proxies)`` returns a dict with ``"loss"`` and any parts to log. Under
    torchrun each rank's ``forward`` sees its own share of the global batch: a loss that pairs items pairs
    them within that local batch (each method's docstring says whether it pairs).
    """

    Params: ClassVar[type[MethodParams]] = MethodParams
    views: ClassVar[int] = 1
    targets: ClassVar[Literal["labels", "positions"]] = "labels"
    supervised: ClassVar[bool] = True
    uses_proxies: ClassVar[bool] = False
    uses_logits: ClassVar[bool] = False
    shared: ClassVar[tuple[str, ...]] = ()
    saved: ClassVar[tuple[str, ...] | None] = None  # the attributes a checkpoint keeps (None: ``shared``)

    def __init__(
        self, params: MethodParams | None = None, *, bits: int = 64, n_classes: int = 0, seed: int = 0, **hyper: Any
    ) -> None:
        super().__init__()
        if params is not None and hyper:
            raise TypeError("pass either params or hyper-parameters as keywords, not both")
        self.params = params if params is not None else self.Params(**hyper)
        self.bits, self.n_classes, self.seed = bits, n_classes, seed

    # -------------------------------------------------------------- hooks (no-ops by default)
    @classmethod
    def check(cls, params: MethodParams, settings: dict[str, Any]) -> None:
        """Cross-checks with the rest of the config (``settings``: ``epochs``, ``batch_size``); raise
        ``ValueError("method.KEY: ...")`` for a bad combination."""

    def prepare(self, ctx: TrainingContext) -> dict[str, Any]:
        """Before the first epoch (also on resume): whole-set state. Returns entries for the run's metrics."""
        return {}

    def on_epoch(self, epoch: int, ctx: TrainingContext) -> dict[str, Any]:
        """At the start of each epoch (0-based, also the first epoch of a resume). Returns metrics entries."""
        return {}

    def on_step(self, step: int) -> None:
        """Before each optimisation step, with the global step (schedules inside a loss)."""

    def proxy_lr_mult(self) -> float:
        """The learning rate of the model's proxies (``uses_proxies``) as a multiple of the head's: 1, one rate for
        both. A method whose proxies are directions scored by cosine may want them faster (DHD)."""
        return 1.0

    def shared_state(self) -> dict[str, Any]:
        """The whole-set state named by ``shared`` (sent from rank 0 to the others under torchrun)."""
        return {k: getattr(self, k) for k in self.shared}

    def load_shared_state(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)

    # -------------------------------------------------------------- state a checkpoint keeps
    def get_extra_state(self) -> dict[str, Any]:
        """What ``state_dict()`` carries beside the method's parameters and buffers, so that a resumed run
        equals an uninterrupted one: the ``saved`` attributes (by default the ``shared`` ones), as tensors and
        plain values (a checkpoint is loaded with ``weights_only``)."""
        return {k: _to_saved(getattr(self, k)) for k in (self.shared if self.saved is None else self.saved)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, _from_saved(v))

    def anchors_per_batch(self, batch_size: int) -> int:
        """How many images of the epoch's order one batch takes (the rest of a batch are its own picks)."""
        return batch_size

    def batches(self, order: np.ndarray, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """The epoch's batches (training-set positions) from its shuffled ``order``: consecutive chunks."""
        step = self.anchors_per_batch(batch_size)
        for a in range(0, len(order), step):
            yield order[a : a + step]

    def steps_per_epoch(self, n: int, batch_size: int) -> int:
        return math.ceil(n / self.anchors_per_batch(batch_size))

    def forward(
        self, h_teacher: torch.Tensor, h_student: torch.Tensor | None, y: torch.Tensor, proxies: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def _to_saved(value: Any) -> Any:
    """A value as a checkpoint holds it: tensors, numbers, strings, None; a numpy array as a marked tensor."""
    if isinstance(value, np.ndarray):
        return {"numpy": torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"method state of type {type(value).__name__} cannot be saved: override get_extra_state")


def _from_saved(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"numpy"}:
        return value["numpy"].numpy()
    return value
