"""A run's checkpoint (docs/architecture.md, "Runs"): everything a resume needs, so that a resumed run equals an
uninterrupted one bit for bit. ``checkpoint.pt`` holds tensors and numbers only (``_io.load_tensors`` reads it
back without running code): the model, the optimiser, the schedule, the AMP scaler, the method's own state
(``HashingMethod.state_dict``: ADSH's V, DSDH's B, DistillHash's stage-1 outputs, ...), the epochs done, the
best validation mAP so far and the seconds trained."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import _io
from .errors import ModelError


@dataclass
class Optimisation:
    """What one training loop steps: the model (``ddp``: the same, wrapped for torchrun), its optimiser, the
    per-step schedule and the AMP scaler. The run's loop has one; ``Trainer.train_aside`` builds its own."""

    model: torch.nn.Module
    ddp: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler


@dataclass
class Progress:
    """Where a run stands: epochs done, the best validation mAP so far (-1: none), seconds trained."""

    epoch: int = 0
    best: float = -1.0
    train_seconds: float = 0.0


def save_checkpoint(path: str | os.PathLike, opt: Optimisation, method: torch.nn.Module, progress: Progress) -> Path:
    """Write the checkpoint atomically (temp file, then rename)."""
    state = {
        "model": opt.model.state_dict(), "optimizer": opt.optimizer.state_dict(), "scheduler": opt.scheduler.state_dict(),
        "scaler": opt.scaler.state_dict(), "method": method.state_dict(), "epoch": progress.epoch, "best": progress.best,
        "train_seconds": progress.train_seconds,
    }  # fmt: skip
    return _io.atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike, device: str, opt: Optimisation, method: torch.nn.Module) -> Progress:
    """Restore ``opt`` and ``method`` from a checkpoint in place; returns where the run stood."""
    state = _io.load_tensors(path, device)
    opt.model.load_state_dict(state["model"])
    saved, built = len(state["optimizer"]["param_groups"]), len(opt.optimizer.param_groups)
    if saved != built:  # a setting that splits the parameters differently (method.proxy_lr_mult) has changed
        raise ModelError(
            f"{path}: written with {saved} optimiser parameter groups, this run's config makes {built}: resume with "
            "the settings it was written with (written before method.proxy_lr_mult existed: --set "
            "method.proxy_lr_mult=1)"
        )
    opt.optimizer.load_state_dict(state["optimizer"])
    opt.scheduler.load_state_dict(state["scheduler"])
    opt.scaler.load_state_dict(state.get("scaler", {}))
    if "method" in state:  # (a checkpoint written before methods saved their own state)
        method.load_state_dict(state["method"])
    return Progress(int(state["epoch"]), float(state["best"]), float(state["train_seconds"]))
