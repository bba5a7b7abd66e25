"""How trained runs hold up when their queries change: unseen deformations (DHD's Table 4) and the mean
Hamming shift under the teacher group scaled by s (DHD's Fig. 6). Queries only; the database codes are the
run's saved ones."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .codes import load_codes, pack
from .datasets import load_training_data, take
from .deform import deform
from .metrics import mean_average_precision
from .train import encode_batch, encode_images, load_run, transforms

SENSITIVITY_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class LoadedRun:
    """A trained run ready to encode its protocol's queries: config, model, clean transform, database codes."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self.cfg, self.model, self.clean = load_run(self.dir)
        self.data = load_training_data(self.cfg)
        self.queries = take(self.data.query.images, np.arange(len(self.data.query)))
        self.query_codes = self._codes("query")  # of the clean queries, packed
        self.database = self._codes("database")

    def _codes(self, part: str) -> np.ndarray:
        """The run's saved packed codes of a split, or the split encoded when none match it."""
        split = self.data.query if part == "query" else self.data.database
        saved = self.dir / f"codes-{part}.npz"
        codes, ids, _ = load_codes(saved) if saved.is_file() else (None, None, None)
        if codes is None or not np.array_equal(ids, split.ids):
            codes = pack(encode_images(self.model, self.clean, split.images))
        return codes

    @cached_property
    def query_h(self) -> np.ndarray:
        """Continuous codes h of the clean queries (encoded once)."""
        return encode_batch(self.model, self.clean, self.queries)

    @property
    def name(self) -> str:
        return self.dir.name

    def query_map(self, images: torch.Tensor) -> float:
        """mAP@K of (possibly deformed) query images against the database codes."""
        q = pack(encode_batch(self.model, self.clean, images))
        return mean_average_precision(q, self.database, self.data.query.labels, self.data.database.labels, topk=self.data.topk)


def loaded_run(run: str | Path | LoadedRun) -> LoadedRun:
    """A run folder loaded once (a ``LoadedRun`` passes through)."""
    return run if isinstance(run, LoadedRun) else LoadedRun(run)


def robustness(runs: list[str | Path | LoadedRun], deformations: list[str], seed: int = 0) -> list[dict[str, Any]]:
    """One row per (run, deformation): mAP@K with that deformation applied to the queries only."""
    rows = []
    for run in map(loaded_run, runs):
        for name in deformations:
            value = run.query_map(deform(run.queries, name, seed))
            rows.append({"run": run.name, "deformation": name, "topk": run.data.topk, "map": value})
    return rows


@torch.inference_mode()
def sensitivity(
    runs: list[str | Path | LoadedRun], grid: tuple[float, ...] = SENSITIVITY_GRID, seed: int = 0
) -> list[dict[str, Any]]:
    """One row per (run, s): the mean Hamming distance between each query's clean code and its code under
    the run's teacher group with every probability scaled by s (s = 0 is the clean view)."""
    rows = []
    for run in map(loaded_run, runs):
        clean = run.query_h >= 0  # sign(0) = +1
        for s in grid:
            tf = transforms({**run.cfg, "s_teacher": float(s)})[0].to(next(run.model.parameters()).device)
            torch.manual_seed(seed)
            moved = encode_batch(run.model, tf, run.queries) >= 0
            rows.append({"run": run.name, "s": float(s), "mean_hamming": float((clean != moved).sum(1).mean())})
    return rows
