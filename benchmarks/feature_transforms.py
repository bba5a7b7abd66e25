"""What the frozen float features themselves can do: class and instance mAP of their cosine after the transforms a
practitioner would try first (mean-centring, PCA, PCA-whitening), at two input sizes, and after linear maps that
learn from the training split without labels, against one that learns from its labels.

The rows are the training-free bar of the unsupervised goal (``float-cosine`` in ``quality.py``: the raw features)
and the ceiling of the stored-features re-ranking (``rerank="features"``, docs/search.md) on the protocol's
instance level. Everything is fitted on the training split only; whitening divides each component by
sqrt(eigenvalue + eps x the mean eigenvalue). The learnt maps ask how far a linear map goes without labels:
``lpp k`` keeps the training images' k-NN graph (locality preserving projections, the linear form of
Laplacian eigenmaps: the smallest generalised eigenvectors of (X'LX, X'DX)); ``kmeans-lda K`` is Fisher's
discriminant on K k-means clusters (pseudo-classes); ``lda (labels)`` the same on the true classes, an oracle a
user without labels does not have (single-label protocols only). Writes
``benchmarks/results/feature-transforms-<protocol>.{json,md}``.

    python benchmarks/feature_transforms.py --protocol openmoji --features mobilenet_v2@64/14,mobilenet_v2@128/14
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from itertools import chain
from pathlib import Path

import numpy as np
import scipy.linalg

from hashdistill import _io
from hashdistill.data import PROTOCOLS, load_protocol
from hashdistill.methods.distillhash.pairs import knn_graph, normalise
from hashdistill.metrics import float_scores
from hashdistill.shallow import split_features
from hashdistill.tables import provenance, results_table

RESULTS = Path(__file__).resolve().parent / "results"


def transforms(
    train: np.ndarray, dims: list[int], eps: list[float]
) -> Iterator[tuple[str, Callable[[np.ndarray], np.ndarray]]]:
    """(name, f) pairs: f maps features to the transformed rows whose cosine ranks."""
    mu = train.mean(0)
    w, v = np.linalg.eigh(np.cov((train - mu).T))
    w, v = np.clip(w[::-1], 0, None), v[:, ::-1]
    yield "raw", lambda x: x
    yield "centred", lambda x: x - mu
    for d in (d for d in dims if d <= train.shape[1]):
        p = v[:, :d]
        yield f"pca {d}", lambda x, p=p: (x - mu) @ p
        for e in eps:
            pw = p / np.sqrt(w[:d] + e * w[:d].mean())
            yield f"pca-whitened {d} eps {e:g}", lambda x, pw=pw: (x - mu) @ pw


def _eig(a: np.ndarray, b: np.ndarray, d: int, largest: bool, reg: float = 1e-3) -> np.ndarray:
    """The d generalised eigenvectors of (a, b + reg x mean(diag b) I) with the largest (or smallest) eigenvalues."""
    b = b + reg * np.trace(b) / len(b) * np.eye(len(b))
    _, v = scipy.linalg.eigh(a, b)
    return v[:, ::-1][:, :d] if largest else v[:, :d]


def _fisher(x: np.ndarray, y: np.ndarray, d: int, reg: float) -> np.ndarray:
    """Fisher's discriminant of centred rows x with classes y: between- against within-class scatter."""
    classes, inv = np.unique(y, return_inverse=True)
    means = np.zeros((len(classes), x.shape[1]))
    np.add.at(means, inv, x)
    counts = np.bincount(inv).astype(float)
    means /= counts[:, None]
    within = (x - means[inv]).T @ (x - means[inv])
    return _eig((means.T * counts) @ means, within, d, largest=True, reg=reg)


def _lpp(x: np.ndarray, k: int, d: int) -> np.ndarray:
    """Locality preserving projections of centred rows x over their symmetrised cosine k-NN graph (DistillHash's
    ``knn_graph``, the neighbours its initial pairs take)."""
    w = np.zeros((len(x), len(x)))
    np.put_along_axis(w, knn_graph(normalise(x), k).numpy(), 1.0, axis=1)
    w = np.maximum(w, w.T)
    deg = w.sum(1)
    return _eig(x.T @ (deg[:, None] * x) - x.T @ w @ x, x.T @ (deg[:, None] * x), d, largest=False)


def _kmeans(x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Cluster of each row: faiss k-means on the unit rows of x, best of 4 starts."""
    import faiss

    u = np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)
    km = faiss.Kmeans(u.shape[1], k, niter=50, nredo=4, seed=seed, verbose=False)
    km.train(u)
    return km.index.search(u, 1)[1].ravel()


def learnt(
    train: np.ndarray, labels: np.ndarray, dims: list[int], graph_k: list[int], clusters: list[int]
) -> Iterator[tuple[str, Callable[[np.ndarray], np.ndarray]]]:
    """(name, f) pairs of linear maps fitted on the centred training rows: without labels (k-NN graph, k-means
    pseudo-classes), then with them (the oracle; only for a class vector)."""
    mu = train.mean(0)
    x = (train - mu).astype(np.float64)
    for d in (d for d in dims if d <= train.shape[1]):
        maps = [(f"lpp k {k} {d}", _lpp(x, k, d)) for k in graph_k]
        maps += [(f"kmeans-lda K {c} {d}", _fisher(x, _kmeans(x, c), d, reg=1.0)) for c in clusters]
        if labels.ndim == 1:
            maps.append((f"lda (labels) {d}", _fisher(x, labels, d, reg=0.1)))
        for name, p in maps:
            yield name, lambda z, p=p: (z - mu) @ p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default="openmoji", choices=list(PROTOCOLS))
    ap.add_argument("--features", default="mobilenet_v2@64/14,mobilenet_v2@128/14", help="comma-separated specs")
    ap.add_argument("--dims", default="32,64,128", help="PCA widths (those above the features' width are skipped)")
    ap.add_argument("--eps", default="0.1,1", help="whitening regularisers, times the mean eigenvalue")
    ap.add_argument("--graph-k", default="10", help="neighbours of the k-NN graph the lpp rows keep")
    ap.add_argument("--clusters", default="40,150", help="k-means clusters the kmeans-lda rows take as classes")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    p = load_protocol(args.protocol)
    labels, fam = p.labels, p.families()
    dims, eps = [int(d) for d in args.dims.split(",")], [float(e) for e in args.eps.split(",")]
    graph_k, clusters = [int(k) for k in args.graph_k.split(",")], [int(c) for c in args.clusters.split(",")]
    rows = []
    for spec in args.features.split(","):
        train, q, db = (split_features(p, s, spec) for s in ("train", "query", "database"))
        for name, f in chain(transforms(train, dims, eps), learnt(train, labels[p.train], dims, graph_k, clusters)):
            s = float_scores(f(q), f(db), labels[p.query], labels[p.database], p.spec.topk, **fam)
            rows.append({"features": spec, "transform": name, **{k: round(v, 4) for k, v in s.items()}})
            print(rows[-1], flush=True)
    result = {**provenance(__file__, argv), "protocol": p.name, "rows": rows}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"feature-transforms-{p.name}"
    _io.write_json(args.out_dir / f"{stem}.json", result)
    cols = ["features", "transform", *(k for k in rows[0] if k not in ("features", "transform"))]
    _io.write_text(args.out_dir / f"{stem}.md", (
        f"# The frozen features' cosine after centring, PCA, whitening and learnt linear maps on `{p.name}`\n\n"
        f"`{result['command']}` at commit `{result['commit']}` on {result['machine']}. Fitted on the training split; `lda (labels)` uses its labels, every other row none; "
        "`map_siblings`: the instance level, where the protocol has it.\n\n" + results_table(rows, cols)
    ))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
