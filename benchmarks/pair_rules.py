"""Purity of DistillHash's initial pair labels under each rule, on frozen features of a protocol's
training images (ground truth read for this measurement only). It chose the default rule.

    python benchmarks/pair_rules.py --protocol fmnist-1k --features mobilenet_v2@64/14
    python benchmarks/pair_rules.py --protocol fmnist-1k --features mobilenet_v2@64/14,mobilenet_v2@128/14 --center

Several comma-separated feature sets are combined as DistillHash combines them (``pair_features``: each
mean-centred with ``--center``, unit rows, concatenated). Writes ``benchmarks/results/pair-rules-<protocol>.{json,md}``,
keeping the rows of other feature sets.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from hashdistill import _io
from hashdistill.data import PROTOCOLS, load_protocol
from hashdistill.methods.distillhash import pair_features
from hashdistill.methods.distillhash.pairs import InitialPairs, knn_graph, purity
from hashdistill.shallow import split_features
from hashdistill.tables import provenance, results_table

RESULTS = Path(__file__).resolve().parent / "results"
RULES = [
    ("knn", {"k": 10}), ("knn", {"k": 20}), ("knn", {"k": 50}), ("knn", {"k": 100}),
    ("threshold", {"quantiles": (0.02,)}), ("threshold", {"quantiles": (0.05,)}), ("threshold", {"quantiles": (0.1,)}),
    ("two-threshold", {"quantiles": (0.05, 0.3)}), ("two-threshold", {"quantiles": (0.1, 0.5)}),
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default="fmnist-1k", choices=list(PROTOCOLS))
    ap.add_argument("--features", default="mobilenet_v2@64/14", help="pixels or BACKBONE@SIZE[/BLOCK], comma-separated")
    ap.add_argument("--center", action="store_true", help="mean-centre each feature set (DistillHash's method.pairs.center)")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    p = load_protocol(args.protocol)
    f = pair_features([split_features(p, "train", spec) for spec in args.features.split(",")], args.center)
    features = args.features.replace(",", " + ") + (" (centred)" if args.center else "")
    y = p.labels[p.train]
    graph = knn_graph(f, 100)
    rows = []
    for rule, params in RULES:
        t0 = time.perf_counter()
        src = InitialPairs(f, rule, graph=graph, **params)
        r = purity(src, y)
        rows.append({
            "features": features, "rule": rule, "params": ", ".join(f"{k}={v}" for k, v in params.items()), **r,
            "seconds": round(time.perf_counter() - t0, 1),
        })  # fmt: skip
        print(f"{rule:>13} {rows[-1]['params']:<24} similar {r['similar']:>10,} at {r['similar_purity']:.3f}  "
              f"dissimilar at {r['dissimilar_purity']:.3f}", flush=True)  # fmt: skip
    prov = provenance(__file__, argv)
    for row in rows:
        row["command"], row["commit"] = prov["command"], prov["commit"]
    path = args.out_dir / f"pair-rules-{args.protocol}.json"
    old = json.loads(path.read_text()) if path.is_file() else {"rows": []}
    rows = [r for r in old["rows"] if r["features"] != features] + rows
    result = {"protocol": args.protocol, "base_rate": float(np.mean(y[:, None] == y[None])) if y.ndim == 1 else None,
              "rows": rows}  # fmt: skip
    _io.write_json(path, result)
    cols = [
        "features",
        "rule",
        "params",
        "similar",
        "similar_purity",
        "dissimilar",
        "dissimilar_purity",
        "kept_fraction",
        "purity",
    ]
    _io.write_text(path.with_suffix(".md"), (
        f"# DistillHash initial pair rules on `{args.protocol}`\n\n"
        f"Each row's command and commit are in the JSON. Over all {rows[0]['of_pairs']:,} unordered pairs of the training\n"
        f"images; `similar_purity` is the fraction of pairs labelled similar that share a class (chance:\n"
        f"{result['base_rate']:.3f}), `dissimilar_purity` the same for dissimilar.\n\n" + results_table(rows, cols)
    ))  # fmt: skip
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
