"""How long the headline metrics take at a protocol's full size: mAP@1000, mAP@all and P@H<=2 of 1,000
queries against 69,000 database codes (fmnist-1k's shape), random 64-bit codes, the protocol's labels.

Writes ``benchmarks/results/metrics-speed.{json,md}``; the goal is under 5 s on 2 cores.

    python benchmarks/metrics_speed.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from hashdistill import _io
from hashdistill.data import load_protocol
from hashdistill.metrics import evaluate_retrieval
from hashdistill.tables import provenance, results_table

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default="fmnist-1k")
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    p = load_protocol(args.protocol)
    rng = np.random.default_rng(0)
    q = rng.choice([-1, 1], (len(p.query), args.bits)).astype(np.int8)
    db = rng.choice([-1, 1], (len(p.database), args.bits)).astype(np.int8)
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        out = evaluate_retrieval(q, db, p.labels[p.query], p.labels[p.database])
        times.append(time.perf_counter() - t0)
    row = {"protocol": args.protocol, "queries": len(q), "database": len(db), "bits": args.bits,
           "best_seconds": round(min(times), 3), "median_seconds": round(float(np.median(times)), 3),
           "goal_seconds": 5.0, **out}  # fmt: skip
    result = {"benchmark": "metrics-speed", **provenance(__file__, argv), "runs": [row]}
    command = result["command"]
    path = args.out_dir / "metrics-speed.json"
    _io.write_json(path, result)
    cols = ["protocol", "queries", "database", "bits", "best_seconds", "median_seconds", "goal_seconds"]
    _io.write_text(path.with_suffix(".md"), (
        "# Speed of the headline metrics at full protocol size\n\n"
        f"`{command}` at commit `{result['commit']}` on {result['machine']}: mAP@1000, mAP@all and P@H<=2 in one\n"
        f"pass over random {args.bits}-bit codes ({args.repeat} repeats).\n\n" + results_table([row], cols)
    ))  # fmt: skip
    print(f"best {row['best_seconds']} s, median {row['median_seconds']} s; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
