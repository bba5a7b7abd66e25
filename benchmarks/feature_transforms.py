"""What the frozen float features themselves can do, training-free: class and instance mAP of their cosine after
the transforms a practitioner would try first (mean-centring, PCA, PCA-whitening), at two input sizes.

The rows are the training-free bar of the unsupervised goal (``float-cosine`` in ``quality.py``: the raw features)
and the ceiling of the stored-features re-ranking (``rerank="features"``, docs/search.md) on the protocol's
instance level. Centring, PCA and whitening are fitted on the training split only; whitening divides each
component by sqrt(eigenvalue + eps x the mean eigenvalue). Writes
``benchmarks/results/feature-transforms-<protocol>.{json,md}``.

    python benchmarks/feature_transforms.py --protocol openmoji --features mobilenet_v2@64/14,mobilenet_v2@128/14
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from hashdistill import _io
from hashdistill.data import PROTOCOLS, load_protocol
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default="openmoji", choices=list(PROTOCOLS))
    ap.add_argument("--features", default="mobilenet_v2@64/14,mobilenet_v2@128/14", help="comma-separated specs")
    ap.add_argument("--dims", default="32,64,128", help="PCA widths (those above the features' width are skipped)")
    ap.add_argument("--eps", default="0.1,1", help="whitening regularisers, times the mean eigenvalue")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    p = load_protocol(args.protocol)
    labels, fam = p.labels, p.families()
    dims, eps = [int(d) for d in args.dims.split(",")], [float(e) for e in args.eps.split(",")]
    rows = []
    for spec in args.features.split(","):
        train, q, db = (split_features(p, s, spec) for s in ("train", "query", "database"))
        for name, f in transforms(train, dims, eps):
            s = float_scores(f(q), f(db), labels[p.query], labels[p.database], p.spec.topk, **fam)
            rows.append({"features": spec, "transform": name, **{k: round(v, 4) for k, v in s.items()}})
            print(rows[-1], flush=True)
    result = {**provenance(__file__, argv), "protocol": p.name, "rows": rows}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"feature-transforms-{p.name}"
    _io.write_json(args.out_dir / f"{stem}.json", result)
    cols = ["features", "transform", *(k for k in rows[0] if k not in ("features", "transform"))]
    _io.write_text(args.out_dir / f"{stem}.md", (
        f"# The frozen features' cosine after centring, PCA and whitening on `{p.name}`\n\n"
        f"`{result['command']}` at commit `{result['commit']}` on {result['machine']}. Fitted on the training split; "
        "`map_siblings`: the instance level, where the protocol has it.\n\n" + results_table(rows, cols)
    ))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
