"""Pairwise supervision without labels, for DistillHash (docs/algorithms/distillhash.md).

Labels of a pair are +1 (similar), -1 (dissimilar) or 0 (unlabelled / dropped). Nothing here builds
an n x n matrix: the labels of a mini-batch's pairs are computed on demand from per-image state
(normalised features and a k-NN graph for the initial labels; stage-1 codes and noise neighbourhoods
for the distilled ones), and whole-set statistics (thresholds, the purity report) run in row blocks
sized by a memory budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import ConfigError
from ...labels import shares_label

RULES = ("knn", "threshold", "two-threshold", "ssdh")
LN2 = math.log(2.0)


def _rows_per_block(n_cols: int, per_entry: int, memory_mb: float) -> int:
    return max(1, int(memory_mb * 2**20 // max(1, n_cols * per_entry)))


def normalise(features: Any) -> torch.Tensor:
    """Rows scaled to unit length (cosine similarity = inner product), float32."""
    return F.normalize(torch.as_tensor(np.asarray(features, np.float32)), dim=1)


def knn_graph(f: torch.Tensor, k: int, memory_mb: float = 256) -> torch.Tensor:
    """(n, k) indices of each row's k most cosine-similar other rows, nearest first (self excluded)."""
    n = len(f)
    if not 0 < k < n:
        raise ConfigError(f"k must be in [1, {n - 1}] for {n} images, got {k}")
    out = torch.empty(n, k, dtype=torch.long)
    step = _rows_per_block(n, 4, memory_mb)
    for a in range(0, n, step):
        s = f[a : a + step] @ f.T
        s[torch.arange(len(s)), torch.arange(a, a + len(s))] = -math.inf
        out[a : a + step] = s.topk(k, dim=1).indices
    return out


def _upper_blocks(
    n: int, bytes_per_entry: int, memory_mb: float, max_rows: int | None = None, seed: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(rows, all columns, mask of the pairs i < j) in row blocks sized by ``memory_mb``, over every row or
    a sorted seeded sample of ``max_rows`` of them: whole-set passes over the unordered pairs."""
    rows = (
        np.arange(n)
        if max_rows is None or max_rows >= n
        else np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))
    )
    step, cols = _rows_per_block(n, bytes_per_entry, memory_mb), torch.arange(n)
    for a in range(0, len(rows), step):
        r = torch.as_tensor(rows[a : a + step])
        yield r, cols, cols[None, :] > r[:, None]


def _pair_sample(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, n, size), rng.integers(0, n, size)
    keep = i != j
    return i[keep], j[keep]


def half_gaussian_thresholds(
    d: torch.Tensor, spread: tuple[float, float] = (2.0, 2.0), width: float = 0.01
) -> tuple[float, float]:
    """SSDH's pair thresholds from cosine distances ``d`` (Yang et al., IJCAI 2018, Sec. 3.1): the mode m of their
    histogram (bins of ``width``, m the start of the fullest bin, as the released code), each half around m taken
    as a half Gaussian (sigma^2 = mean squared offset from m: the fit of the half mirrored about m), and the
    thresholds m - spread[0] sigma_left (similar below) and m + spread[1] sigma_right (dissimilar above)."""
    d = d.double()
    bins = int(math.ceil(float(d.max()) / width)) + 1
    counts = torch.bincount((d / width).floor().long().clamp(0, bins - 1), minlength=bins)
    m = float(counts.argmax()) * width
    left, right = d[d <= m], d[d > m]
    sigma_l = float(((left - m) ** 2).mean().sqrt()) if len(left) else 0.0
    sigma_r = float(((right - m) ** 2).mean().sqrt()) if len(right) else 0.0
    return m - spread[0] * sigma_l, m + spread[1] * sigma_r


class InitialPairs:
    """Step 0: noisy labels from the local structure of frozen features (cosine distance d = 1 - cos).

    Rules: ``knn`` (+1 when either image is among the other's ``k`` nearest neighbours, else -1);
    ``threshold`` (+1 when d is below the ``quantiles[0]`` quantile of all pair distances, else -1; the
    released code's split); ``two-threshold`` (SSDH: +1 below the ``quantiles[0]`` quantile, -1 above
    ``quantiles[1]``, unlabelled between); ``ssdh`` (SSDH's own: the distance histogram's two halves around its
    mode taken as half Gaussians, +1 below mode - spread[0] sigma_left, -1 above mode + spread[1] sigma_right,
    unlabelled between; ``half_gaussian_thresholds``). Quantiles and the histogram come from a seeded sample
    of 200,000 pairs.
    """

    def __init__(
        self, features: Any, rule: str = "knn", k: int = 20, quantiles: tuple[float, ...] = (0.1, 0.5),
        graph: torch.Tensor | None = None, memory_mb: float = 256, seed: int = 0, spread: tuple[float, float] = (2.0, 2.0),
    ) -> None:  # fmt: skip
        if rule not in RULES:
            raise ConfigError(f"unknown pair rule {rule!r}; known: {', '.join(RULES)}")
        self.f, self.rule, self.k = normalise(features), rule, k
        self.thresholds: tuple[float, float] | None = None
        if rule == "knn":
            self.graph = graph[:, :k] if graph is not None and graph.shape[1] >= k else knn_graph(self.f, k, memory_mb)
        else:
            i, j = _pair_sample(len(self.f), 200_000, seed)
            d = 1 - (self.f[i] * self.f[j]).sum(1)
            if rule == "ssdh":
                self.thresholds = half_gaussian_thresholds(d, spread)
                return
            q = list(quantiles) if rule == "two-threshold" else [quantiles[0]] * 2
            if len(q) != 2 or not 0 < q[0] <= q[1] < 1:
                raise ConfigError(f"quantiles must be 0 < low <= high < 1, got {list(quantiles)}")
            lo, hi = torch.quantile(d, torch.tensor(q, dtype=d.dtype)).tolist()
            self.thresholds = (lo, hi)

    bytes_per_label = 8  # the working memory of one label in a block (for ``purity``'s row blocks)

    def __len__(self) -> int:
        return len(self.f)

    def labels(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """int8 (len(rows), len(cols)) labels of the pairs rows x cols (each without repeated indices)."""
        if self.rule == "knn":  # scatter each side's neighbour lists into the (rows, cols) grid
            n = len(self.f)
            out = torch.full((len(rows), len(cols)), -1, dtype=torch.int8)
            for a, b, transpose in ((rows, cols, False), (cols, rows, True)):
                where = torch.full((n,), -1, dtype=torch.long)
                where[b] = torch.arange(len(b))
                hit = where[self.graph[a]]  # (len(a), k): the neighbour's position in b, or -1
                r, c = (hit >= 0).nonzero(as_tuple=True)
                i, j = (hit[r, c], r) if transpose else (r, hit[r, c])
                out[i, j] = 1
            return out
        d = 1 - self.f[rows] @ self.f[cols].T
        lo, hi = self.thresholds
        out = torch.zeros(d.shape, dtype=torch.int8)
        out[d < lo] = 1
        out[d >= hi] = -1
        if self.rule == "threshold":
            out[out == 0] = -1
        return out


def slacks(theta: torch.Tensor, theta_min: torch.Tensor, theta_max: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How far each pair clears step 2's thresholds, in logit units (bits, for binary codes): (similar, dissimilar).

    With P = sigmoid(theta), the noise rates rho_minus = sigmoid(theta_min) and rho_plus = 1 - sigmoid(theta_max),
    a pair is similar where P > (1 + rho_minus) / 2, i.e. theta - T_plus > 0 with T_plus = logit((1 + rho_minus) / 2),
    and dissimilar where P < (1 - rho_plus) / 2, i.e. T_minus - theta > 0 with T_minus = logit(sigmoid(theta_max) / 2).
    Both thresholds are computed from log-sigmoids, so they stay exact where P saturates in floating point.
    """
    theta, theta_min, theta_max = (t.double() for t in (theta, theta_min, theta_max))
    t_plus = torch.log1p(torch.sigmoid(theta_min)) - F.logsigmoid(-theta_min)
    t_minus = F.logsigmoid(theta_max) - LN2 - torch.log1p(-0.5 * torch.sigmoid(theta_max))
    return theta - t_plus, t_minus - theta


def distill_rule(theta: torch.Tensor, theta_min: torch.Tensor, theta_max: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Step 2's rule on logits: +1 where the similar slack exceeds ``margin``, -1 where the dissimilar one
    does, else 0 (``slacks``; ``margin`` 0 is the paper's rule, a positive margin keeps fewer, surer pairs)."""
    return labels_from_slacks(*slacks(theta, theta_min, theta_max), margin)


def labels_from_slacks(pos: torch.Tensor, neg: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """+1 where the similar slack exceeds ``margin``, -1 where the dissimilar one does, else 0 (int8)."""
    return (pos > margin).to(torch.int8) - (neg > margin).to(torch.int8)


def local_extremes(theta: torch.Tensor, rows_nbrs: torch.Tensor, cols_nbrs: torch.Tensor, largest: bool) -> torch.Tensor:
    """min (or max) of theta[i', j'] over i' in rows_nbrs[r], j' in cols_nbrs[c], for every (r, c).

    ``theta`` is any matrix whose rows / columns the neighbour indices address (tests pass a full
    posterior matrix; ``DistilledPairs`` passes the block it computed).
    """
    reduce = torch.amax if largest else torch.amin
    t = reduce(theta[rows_nbrs], dim=1)  # (r, cols of theta): extreme over i' in N(i)
    return reduce(t[:, cols_nbrs], dim=2)  # (r, c): extreme over j' in N(j)


class DistilledPairs:
    """Step 2: pair labels from the stage-1 posterior P_ij = sigmoid(theta_ij) and noise-rate thresholds.

    ``codes``: the stage-1 outputs of the training images, (n, K) from the run's own model (in sample), or
    (F, n, K) from F cross-fitted models with ``fold`` (n,) naming each image's fold: model f never saw an
    image of fold f, and theta_ij = (theta^f(i)_ij + theta^f(j)_ij) / 2, theta^f_ij = scale * b^f_i . b^f_j / 2
    + offset (a pair inside one fold: one model that saw neither image; across folds: no model saw the pair).
    ``scale = 1, offset = 0`` is the paper's posterior; ``calibrate`` fits them.

    The noise rates are ``local`` (the released code's: extremes over the neighbourhoods ``nbr_minus`` /
    ``nbr_plus``, rows of a k-NN graph of the frozen features) or ``global`` (anchor points: the
    ``anchor_quantile`` quantiles of theta over a seeded sample of pairs; 0 = the minimum and maximum).
    ``rule``: ``relabel`` gives each pair the label ``distill_rule`` assigns; ``agree`` keeps a pair's
    ``initial`` label only where that rule assigns the same one, and drops it otherwise. ``margin`` (logit
    units) is how far a pair must clear the thresholds.
    """

    def __init__(
        self, codes: Any, nbr_minus: torch.Tensor, nbr_plus: torch.Tensor, binary: bool = True,
        scale: float = 1.0, offset: float = 0.0, *, fold: Any = None, initial: InitialPairs | None = None,
        rule: str = "relabel", margin: float = 0.0, noise: str = "local", anchor_quantile: float = 0.0, seed: int = 0,
    ) -> None:  # fmt: skip
        b = torch.as_tensor(np.asarray(codes)).double()
        if binary:  # the paper: P from the codes b = sign(h); else from the continuous h
            b = torch.where(b >= 0, 1.0, -1.0).double()
        self.b = b[None] if b.ndim == 2 else b  # (F, n, K)
        if (fold is None) != (len(self.b) == 1):
            raise ConfigError("give fold with cross-fitted codes (F, n, K), and only then")
        self.fold = torch.zeros(self.b.shape[1], dtype=torch.long) if fold is None else torch.as_tensor(np.asarray(fold))
        if rule not in ("relabel", "agree") or (rule == "agree") != (initial is not None):
            raise ConfigError(f"rule {rule!r}: relabel, or agree with the initial pairs")
        if noise not in ("local", "global"):
            raise ConfigError(f"noise rates must be local or global, got {noise!r}")
        self.nbr_minus, self.nbr_plus, self.initial, self.rule = nbr_minus, nbr_plus, initial, rule
        self.scale, self.offset, self.margin = float(scale), float(offset), float(margin)
        self.noise, self.anchor_quantile, self.seed = noise, anchor_quantile, seed
        self.dense: torch.Tensor | None = None
        self._anchor_cache: tuple[tuple[float, float], tuple[float, float]] | None = None

    def materialise(self, memory_mb: float = 256) -> bool:
        """Compute every pair's label once (int8, n x n) when that matrix fits ``memory_mb``, so batches
        read labels instead of recomputing the local noise rates; returns whether it did."""
        n = len(self)
        if n * n > memory_mb * 2**20:
            return False
        step = _rows_per_block(n, self.bytes_per_label, memory_mb)
        cols = torch.arange(n)
        self.dense = torch.cat([self._labels(torch.arange(a, min(n, a + step)), cols) for a in range(0, n, step)])
        return True

    def __len__(self) -> int:
        return self.b.shape[1]

    @property
    def bytes_per_label(self) -> int:
        return 8 * (self.nbr_minus.shape[1] + len(self.b) + 1)

    def theta(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """The posterior's logits theta_ij for the pairs rows x cols."""
        if len(self.b) == 1:
            return self.scale * (0.5 * self.b[0, rows] @ self.b[0, cols].T) + self.offset
        fr, fc = self.fold[rows], self.fold[cols]
        out = torch.zeros(len(rows), len(cols), dtype=torch.float64)
        for f in range(len(self.b)):
            wr, wc = (fr == f).double(), (fc == f).double()
            if wr.any() or wc.any():  # each side's model contributes half of the pair's logit
                out += (0.5 * self.b[f, rows] @ self.b[f, cols].T) * (0.5 * (wr[:, None] + wc[None, :]))
        return self.scale * out + self.offset

    def labels(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        if self.dense is not None:
            return self.dense[rows][:, cols]
        return self._labels(rows, cols)

    def slacks(self, rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(similar, dissimilar) slacks of the pairs rows x cols (``slacks``) under this source's noise rates."""
        if self.noise == "global":
            lo, hi = self._anchors()
            return slacks(self.theta(rows, cols), torch.tensor(lo), torch.tensor(hi))
        out = []
        for nbr, largest in ((self.nbr_minus, False), (self.nbr_plus, True)):
            r, c = nbr[rows], nbr[cols]  # (R, m), (C, m)
            ur, r_inv = torch.unique(r, return_inverse=True)
            uc, c_inv = torch.unique(c, return_inverse=True)
            out.append(local_extremes(self.theta(ur, uc), r_inv, c_inv, largest))
        return slacks(self.theta(rows, cols), out[0], out[1])

    def _anchors(self) -> tuple[float, float]:
        """The global noise-rate logits: theta's ``anchor_quantile`` and 1 - ``anchor_quantile`` quantiles over a
        seeded sample of 200,000 pairs (rho_minus = the smallest posterior, rho_plus = 1 - the largest); computed
        once per posterior (``calibrate`` may still change its scale and offset after construction)."""
        key = (self.scale, self.offset)
        if self._anchor_cache is None or self._anchor_cache[0] != key:
            self._anchor_cache = (key, self._sample_anchors())
        return self._anchor_cache[1]

    def _sample_anchors(self) -> tuple[float, float]:
        i, j = (torch.as_tensor(a) for a in _pair_sample(len(self), 200_000, self.seed))
        fi, fj = self.fold[i], self.fold[j]
        t = 0.25 * ((self.b[fi, i] * self.b[fi, j]).sum(1) + (self.b[fj, i] * self.b[fj, j]).sum(1))
        t = self.scale * t + self.offset
        q = torch.tensor([self.anchor_quantile, 1 - self.anchor_quantile], dtype=t.dtype)
        lo, hi = torch.quantile(t, q).tolist()
        return lo, hi

    def _labels(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        s = labels_from_slacks(*self.slacks(rows, cols), self.margin)
        if self.rule == "agree":  # keep the initial label where the rule agrees with it
            initial = self.initial.labels(rows, cols)
            s = torch.where(s == initial, initial, torch.zeros_like(s))
        return s


def fold_assignment(n: int, folds: int, seed: int = 0) -> np.ndarray:
    """(n,) fold of each training image: a seeded random split into ``folds`` near-equal folds."""
    if not 2 <= folds <= n:
        raise ConfigError(f"folds must be in [2, {n}] for {n} images, got {folds}")
    fold = np.empty(n, dtype=np.int64)
    fold[np.random.default_rng([seed, 13]).permutation(n)] = np.arange(n) % folds
    return fold


def cross_fitted(
    n: int, folds: int, fit: Callable[[np.ndarray, int], np.ndarray], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """((F, n, K) codes, (n,) folds): ``fit(positions, f)`` trains a fresh stage-1 model on the pairs inside
    ``positions`` (every image outside fold f) and returns its codes of all n images."""
    fold = fold_assignment(n, folds, seed)
    return np.stack([np.asarray(fit(np.flatnonzero(fold != f), f), np.float32) for f in range(folds)]), fold


THETA_STEP = 0.25  # calibration bins theta = b_i . b_j / 2 on this grid (exact for binary codes)


def fit_logistic(
    x: np.ndarray, positives: np.ndarray, negatives: np.ndarray, balance: bool = True, iters: int = 50
) -> tuple[float, float]:
    """(a, c) maximising the (weighted) likelihood of sigmoid(a x + c) for binned data: ``positives`` /
    ``negatives`` count the +1 / -1 labels at each value of ``x``; ``balance`` weighs both classes equally.
    Newton's method on the two parameters (a concave problem), halving steps that do not improve."""
    wp, wn = np.asarray(positives, np.float64), np.asarray(negatives, np.float64)
    if wp.sum() == 0 or wn.sum() == 0:
        raise ConfigError("calibration needs both similar and dissimilar pairs")
    if balance:
        wp, wn = wp / wp.sum(), wn / wn.sum()
    else:
        total = wp.sum() + wn.sum()
        wp, wn = wp / total, wn / total
    x = np.asarray(x, np.float64)

    def nll(w: np.ndarray) -> float:
        z = w[0] * x + w[1]
        return float(np.sum(wp * np.logaddexp(0, -z) + wn * np.logaddexp(0, z)))

    w = np.zeros(2)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(w[0] * x + w[1])))
        r = p * wn - (1 - p) * wp  # d nll / d z per bin
        v = (wp + wn) * p * (1 - p)
        grad = np.array([np.sum(r * x), np.sum(r)])
        hess = np.array([[np.sum(v * x * x), np.sum(v * x)], [np.sum(v * x), np.sum(v)]]) + 1e-12 * np.eye(2)
        step, before = np.linalg.solve(hess, grad), nll(w)
        while nll(w - step) > before and np.abs(step).max() > 1e-12:
            step = step / 2
        w = w - step
        if np.abs(step).max() < 1e-10:
            break
    return float(w[0]), float(w[1])


def calibrate(
    posterior: DistilledPairs, noisy: InitialPairs, balance: bool = True, memory_mb: float = 256,
    max_rows: int | None = None, seed: int = 0,
) -> tuple[float, float]:  # fmt: skip
    """Platt scaling of the stage-1 posterior on the noisy labels (no ground truth): the (scale, offset)
    with which sigmoid(scale * theta + offset) best predicts the initial labels s~ of the pairs, theta =
    b_i . b_j / 2 of ``posterior`` (its own scale and offset ignored). Counts are binned on a
    ``THETA_STEP`` grid over the unordered pairs, in row blocks (``max_rows``: a seeded sample of rows)."""
    k = posterior.b.shape[2]
    bins = int(round(k / THETA_STEP)) + 1  # theta in [-k/2, k/2]
    pos, neg = torch.zeros(bins, dtype=torch.float64), torch.zeros(bins, dtype=torch.float64)
    for r, cols, upper in _upper_blocks(len(posterior), 24, memory_mb, max_rows, seed):
        theta = (posterior.theta(r, cols) - posterior.offset) / posterior.scale
        s = noisy.labels(r, cols)
        idx = ((theta + k / 2) / THETA_STEP).round().long().clamp(0, bins - 1)
        pos += torch.bincount(idx[upper & (s > 0)], minlength=bins).double()
        neg += torch.bincount(idx[upper & (s < 0)], minlength=bins).double()
    grid = np.arange(bins) * THETA_STEP - k / 2
    return fit_logistic(grid, pos.numpy(), neg.numpy(), balance)


@dataclass
class PairCounts:
    similar: int = 0
    dissimilar: int = 0
    similar_correct: int = 0
    dissimilar_correct: int = 0
    total: int = 0

    def as_dict(self) -> dict[str, Any]:
        kept = self.similar + self.dissimilar
        return {
            "pairs": kept, "of_pairs": self.total, "kept_fraction": kept / max(1, self.total),
            "purity": (self.similar_correct + self.dissimilar_correct) / max(1, kept),
            "similar": self.similar, "similar_purity": self.similar_correct / max(1, self.similar),
            "dissimilar": self.dissimilar, "dissimilar_purity": self.dissimilar_correct / max(1, self.dissimilar),
        }  # fmt: skip


def purity(
    source: InitialPairs | DistilledPairs, y: np.ndarray, memory_mb: float = 256, max_rows: int | None = None, seed: int = 0
) -> dict[str, Any]:
    """Counts and agreement with ground truth of a pair labelling over the unordered pairs i < j.

    Row blocks keep memory within ``memory_mb``; ``max_rows`` limits the rows to a seeded sample (for
    large n), each row paired with every other image. Ground truth is used here only.
    """
    c = PairCounts()
    for r, cols, upper in _upper_blocks(len(source), source.bytes_per_label, memory_mb, max_rows, seed):
        lab = source.labels(r, cols)
        truth = torch.as_tensor(shares_label(y[r.numpy()], y))  # ground truth: the report only
        sim, dis = (lab == 1) & upper, (lab == -1) & upper
        c.similar += int(sim.sum())
        c.dissimilar += int(dis.sum())
        c.similar_correct += int((sim & truth).sum())
        c.dissimilar_correct += int((dis & ~truth).sum())
        c.total += int(upper.sum())
    return c.as_dict()


def purity_curve(
    source: DistilledPairs, y: np.ndarray, margins: np.ndarray, memory_mb: float = 256, max_rows: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Purity against the fraction kept as the margin varies, for the similar and the dissimilar side.

    For each margin m of the increasing grid ``margins``: how many pairs i < j a side keeps (slack > m,
    ``DistilledPairs.slacks``) and how many of those agree with the ground truth. A side's candidates are the
    pairs with that initial label under the ``agree`` rule, every pair under ``relabel`` (``of``). One
    blockwise pass; ground truth is used here only.
    """
    grid = torch.as_tensor(np.asarray(margins, np.float64))
    names = ("similar", "dissimilar")
    of = dict.fromkeys(names, 0)
    kept = {k: torch.zeros(len(grid) + 1, dtype=torch.float64) for k in names}  # by how many margins lie below
    correct = {k: torch.zeros(len(grid) + 1, dtype=torch.float64) for k in names}
    for r, cols, upper in _upper_blocks(len(source), source.bytes_per_label, memory_mb, max_rows, seed):
        pos, neg = source.slacks(r, cols)
        truth = torch.as_tensor(shares_label(y[r.numpy()], y))
        if source.rule == "agree":
            initial = source.initial.labels(r, cols)
            masks = (upper & (initial > 0), upper & (initial < 0))
        else:
            masks = (upper, upper)
        for name, slack, right, mask in zip(names, (pos, neg), (truth, ~truth), masks):
            at = torch.searchsorted(grid, slack[mask].contiguous())  # how many margins lie below the slack
            of[name] += int(mask.sum())
            kept[name] += torch.bincount(at, minlength=len(grid) + 1).double()
            correct[name] += torch.bincount(at[right[mask]], minlength=len(grid) + 1).double()
    out: dict[str, Any] = {"margin": grid.tolist(), "rule": source.rule}
    for name in names:
        kept_at = kept[name].flip(0).cumsum(0).flip(0)[1:]  # kept at margin g: the pairs with more than g margins below
        correct_at = correct[name].flip(0).cumsum(0).flip(0)[1:]
        out[name] = {
            "of": of[name], "kept": kept_at.long().tolist(), "correct": correct_at.long().tolist(),
            "kept_fraction": (kept_at / max(1, of[name])).tolist(),
            "purity": (correct_at / kept_at.clamp(min=1)).tolist(),
        }  # fmt: skip
    return out
