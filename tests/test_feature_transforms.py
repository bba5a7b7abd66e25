"""The learnt linear maps of ``benchmarks/feature_transforms.py`` on hand-made points whose answer is known."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")
_spec = importlib.util.spec_from_file_location(
    "feature_transforms", Path(__file__).resolve().parents[1] / "benchmarks" / "feature_transforms.py"
)
ft = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ft)


def _two_blobs(rng: np.random.Generator, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Two classes 1 apart on axis 0 with sd 0.1 there, and sd 3 on axes 1 and 2: the classes differ only
    along the axis of least variance, so PCA's first direction misses it."""
    y = np.repeat([0, 1], n)
    x = rng.normal(0, [0.1, 3.0, 3.0], (2 * n, 3))
    x[:, 0] += y
    return x - x.mean(0), y


def test_fisher_finds_the_axis_that_separates_the_classes_not_the_widest() -> None:
    x, y = _two_blobs(np.random.default_rng(0))
    v = ft._fisher(x, y, 1, reg=1e-3)[:, 0]
    assert abs(v[0]) / np.linalg.norm(v) > 0.99


def _locality(x: np.ndarray, k: int, v: np.ndarray) -> float:
    """LPP's objective by its definition, pair by pair: sum over k-NN edges (cosine, either direction) of the
    squared gap of the projections, over the degree-weighted spread of the projections."""
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    edges = set()
    for i in range(len(x)):
        sims = [(u[i] @ u[j], j) for j in range(len(x)) if j != i]
        edges |= {tuple(sorted((i, j))) for _, j in sorted(sims, reverse=True)[:k]}
    z, deg = x @ v, np.zeros(len(x))
    for i, j in edges:
        deg[i] += 1
        deg[j] += 1
    return sum((z[i] - z[j]) ** 2 for i, j in edges) / float(deg @ z**2)


def test_lpp_finds_the_direction_that_keeps_neighbours_closest() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 2, (3, 4))
    x = centres[rng.integers(0, 3, 120)] + rng.normal(0, 1, (120, 4)) * [1.0, 1.5, 2.0, 2.5]
    x -= x.mean(0)  # well-conditioned: the regulariser (1e-3 x the mean variance) moves no direction
    v = ft._lpp(x, 5, 1)[:, 0]
    others = [rng.normal(0, 1, 4) for _ in range(200)] + list(np.eye(4)) + [ft._lpp(x, 5, 4)[:, -1]]
    assert _locality(x, 5, v) < min(_locality(x, 5, w) for w in others)


def test_the_label_oracle_is_left_out_for_multi_label_protocols() -> None:
    rng = np.random.default_rng(2)
    x, y = _two_blobs(rng, 50)
    names = [n for n, _ in ft.learnt(x, y, [2], [5], [4])]
    multi = [n for n, _ in ft.learnt(x, np.eye(2, dtype=np.uint8)[y], [2], [5], [4])]
    assert names == ["lpp k 5 2", "kmeans-lda K 4 2", "lda (labels) 2"]
    assert multi == names[:2]
    assert [n for n, _ in ft.learnt(x, y, [4], [5], [4])] == []  # wider than the features: skipped
