"""How trained runs hold up when their queries change: unseen deformations (DHD's Table 4) and the mean
Hamming shift under the teacher group scaled by s (DHD's Fig. 6). Queries only; the database codes are the
run's saved ones."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from .augment import view_transforms
from .codes import pack
from .data.splits import take
from .deform import acting, deform
from .metrics import mean_average_precision
from .model import encode_batch
from .run import Run

SENSITIVITY_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def as_run(run: str | os.PathLike | Run) -> Run:
    """A run folder loaded once (a ``Run`` passes through)."""
    return run if isinstance(run, Run) else Run.load(run)


def query_images(run: Run) -> torch.Tensor:
    """The run's query images as one uint8 batch."""
    q = run.data.query
    return take(q.images, np.arange(len(q)))


def query_map(run: Run, images: torch.Tensor) -> tuple[float, float]:
    """(mAP@K, mAP@all) of (possibly deformed) query images against the run's database codes."""
    q = pack(encode_batch(run.model, run.clean, images))
    d, db = run.data, run.codes("database")
    at_k = mean_average_precision(q, db, d.query.labels, d.database.labels, topk=d.topk)
    return at_k, mean_average_precision(q, db, d.query.labels, d.database.labels)


def robustness(runs: list[str | os.PathLike | Run], deformations: list[str], seed: int = 0) -> list[dict[str, Any]]:
    """One row per (run, deformation): mAP@K and mAP@all with that deformation applied to the queries only.
    A deformation that cannot change a run's queries (a colour one on grey images: ``deform.acting``) gets no
    row for that run, rather than a copy of the clean row; ``left_out`` names them."""
    rows = []
    for run in map(as_run, runs):
        queries = query_images(run)
        for name in acting(queries, deformations):
            at_k, at_all = query_map(run, deform(queries, name, seed))
            rows.append({"run": run.name, "deformation": name, "topk": run.data.topk, "map": at_k, "map_all": at_all})
    return rows


def left_out(deformations: list[str], rows: list[dict[str, Any]]) -> list[str]:
    """The deformations of ``deformations`` that ``robustness`` gave no row (they act on no run's queries)."""
    measured = {r["deformation"] for r in rows}
    return [d for d in deformations if d not in measured]


@torch.inference_mode()
def sensitivity(
    runs: list[str | os.PathLike | Run], grid: tuple[float, ...] = SENSITIVITY_GRID, seed: int = 0
) -> list[dict[str, Any]]:
    """One row per (run, s): the mean Hamming distance between each query's clean code and its code under
    the run's teacher group with every probability scaled by s (s = 0 is the clean view)."""
    rows = []
    for run in map(as_run, runs):
        queries = query_images(run)
        clean = run.h("query") >= 0  # sign(0) = +1
        for s in grid:
            tf = view_transforms(run.config, s_teacher=float(s))[0].to(run.device)
            torch.manual_seed(seed)
            moved = encode_batch(run.model, tf, queries) >= 0
            rows.append({"run": run.name, "s": float(s), "mean_hamming": float((clean != moved).sum(1).mean())})
    return rows
