"""The paper's figures with matplotlib, each written as PNG and SVG (``<stem>.png``, ``<stem>.svg``).

``pr_curves`` and ``topm_curves`` (DHD Figs. 3-4) take one curve per run; ``proxy_heatmap`` the pairwise
cosine similarity of trained proxies (Fig. 5); ``bit_histograms`` per-bit histograms of the continuous
codes h (Fig. 7); ``sensitivity_curves`` the mean Hamming shift against s (Fig. 6); ``purity_curves`` DistillHash's
distilled-pair purity against the fraction kept.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt
import numpy as np

ANNOTATED_CLASSES = 20  # a proxy heatmap writes each cell's value up to this many classes; beyond, colours only
HEATMAP_INCHES = 14.0  # the most a proxy heatmap's side grows to (0.55 in a class until then)


def _save(fig: plt.Figure, stem: str | os.PathLike) -> list[Path]:
    """Write ``stem``.png and ``stem``.svg (each via a temp file, then renamed) and close the figure."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in ("png", "svg"):
        path = stem.with_suffix(f".{ext}")
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format=ext, dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
        out.append(path)
    plt.close(fig)
    return out


def pr_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], stem: str | os.PathLike, title: str = "") -> list[Path]:
    """Precision-recall curves, one per run: ``{name: (precision, recall)}`` (one point per Hamming radius)."""
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, (precision, recall) in curves.items():
        ax.plot(recall, precision, marker=".", markersize=3, label=name)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title or "precision-recall (Hamming radius)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, stem)


def topm_curves(curves: Mapping[str, tuple[Sequence[int], np.ndarray]], stem: str | os.PathLike, title: str = "") -> list[Path]:
    """Precision of the top M results against M, one curve per run: ``{name: (ms, precisions)}``."""
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, (ms, precision) in curves.items():
        ax.plot(ms, precision, marker=".", label=name)
    ax.set(xlabel="number of top returned items M", ylabel="precision@M", ylim=(0, 1.02), title=title or "P@top-M")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, stem)


def proxy_heatmap(proxies: np.ndarray, class_names: Sequence[str], stem: str | os.PathLike, title: str = "") -> list[Path]:
    """Pairwise cosine similarity of the trained proxies (classes x K) as a heatmap: each cell carries its value
    up to ``ANNOTATED_CLASSES`` classes, and the map grows with the classes up to ``HEATMAP_INCHES`` a side."""
    p = np.asarray(proxies, np.float64)
    p = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
    sim = p @ p.T
    n = len(sim)
    cell = min(0.55, HEATMAP_INCHES / n)
    fig, ax = plt.subplots(figsize=(1.0 + cell * n, 0.8 + 0.9 * cell * n))
    im = ax.imshow(sim, cmap="RdBu_r", vmin=-1, vmax=1)
    ticks = 8 if cell >= 0.3 else 5  # class names' font size: smaller once the cells shrink
    ax.set_xticks(range(n), class_names, rotation=60, ha="right", fontsize=ticks)
    ax.set_yticks(range(n), class_names, fontsize=ticks)
    if n <= ANNOTATED_CLASSES:
        for i in range(n):
            for j in range(n):
                colour = "white" if abs(sim[i, j]) > 0.6 else "black"
                ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=6, color=colour)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title or "cosine similarity of the hash proxies", fontsize=9)
    return _save(fig, stem)


def bit_histograms(h: np.ndarray, stem: str | os.PathLike, bits: int = 16, bins: int = 40, title: str = "") -> list[Path]:
    """Histograms of the continuous codes h for the first ``bits`` bits (one panel each) and all bits pooled."""
    h = np.asarray(h, np.float64)
    shown = min(bits, h.shape[1])
    cols = 4
    rows = (shown + 1 + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 1.6 * rows), sharex=True)
    axes = np.atleast_1d(axes).ravel()
    edges = np.linspace(-1, 1, bins + 1)
    for k in range(shown):
        axes[k].hist(h[:, k], bins=edges, color="tab:blue")
        axes[k].set_title(f"bit {k}", fontsize=7)
    axes[shown].hist(h.ravel(), bins=edges, color="tab:orange")
    axes[shown].set_title("all bits", fontsize=7)
    for ax in axes[shown + 1 :]:
        ax.axis("off")
    for ax in axes:
        ax.tick_params(labelsize=6)
    fig.suptitle(title or "continuous codes h per bit", fontsize=9)
    fig.tight_layout()
    return _save(fig, stem)


def sensitivity_curves(rows: Sequence[Mapping], stem: str | os.PathLike, title: str = "") -> list[Path]:
    """Mean Hamming distance between clean and transformed query codes against s, one line per run
    (rows of ``robustness.sensitivity``)."""
    fig, ax = plt.subplots(figsize=(5, 4))
    for name in dict.fromkeys(r["run"] for r in rows):
        pts = sorted((r["s"], r["mean_hamming"]) for r in rows if r["run"] == name)
        ax.plot([0.0] + [s for s, _ in pts], [0.0] + [d for _, d in pts], marker="o", markersize=3, label=name)
    ax.set(
        xlabel="s (teacher group scale)",
        ylabel="mean Hamming distance to the clean code",
        title=title or "sensitivity to transformations",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, stem)


def purity_curves(
    curves: Mapping[str, Mapping], stem: str | os.PathLike, initial: Mapping | None = None, title: str = ""
) -> list[Path]:
    """DistillHash's distilled pairs (``pairs.purity_curve``), one curve per run: purity against the fraction of each
    side's candidates kept as the margin varies (similar solid, dissimilar dotted), each run's margin circled, and
    the initial labels' purity dashed."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for (name, curve), colour in zip(curves.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        margins = np.asarray(curve["margin"])
        at = int(np.argmin(np.abs(margins - curve.get("at", 0.0))))
        for side, style in (("similar", "-"), ("dissimilar", ":")):
            c = curve[side]
            kept, purity, show = np.asarray(c["kept_fraction"]), np.asarray(c["purity"]), np.asarray(c["kept"]) > 0
            ax.plot(kept[show], purity[show], style, color=colour, label=f"{name}: {side} ({curve['rule']}, {c['of']:,})")
            ax.plot(kept[at], purity[at], marker="o", color=colour, markersize=7, fillstyle="none")
    if initial:
        for side, style in (("similar", "--"), ("dissimilar", "-.")):
            ax.axhline(initial[f"{side}_purity"], color="grey", linestyle=style, linewidth=0.8, label=f"initial {side}")
    ax.set(xlabel="fraction of candidates kept", ylabel="purity (agreement with ground truth)", xlim=(0, 1.02),
           ylim=(0, 1.02), title=title or "distilled pairs as the margin varies (circle: the run's margin)")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    return _save(fig, stem)
