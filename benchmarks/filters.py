"""Filtered search: the candidate mask against filtering inside the scan, by how much of the collection a filter
allows (collection/filtered.py chooses between them with ``SCAN_ABOVE``).

An item table and a Hamming index of N clustered 64-bit codes (20 centres, 10 % of bits flipped), each item's
metadata ``{"bucket": i % 250}``; a filter ``{"meta.bucket": {"in": [...]}}`` allows a chosen fraction. Per
fraction: milliseconds per query (k = 10, 200 queries one at a time, the way the service asks) for ``mask`` with
the mask already built, the first (cold) search that builds it, and ``scan``. Writes
``benchmarks/results/filters.{json,md}``.

    python benchmarks/filters.py --items 100000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from hashdistill import _io
from hashdistill.codes import pack
from hashdistill.collection.filtered import FilterCache, search_filtered
from hashdistill.collection.metadata import Where
from hashdistill.collection.store import ItemStore
from hashdistill.index import HammingIndex
from hashdistill.tables import git_commit, results_table

RESULTS = Path(__file__).resolve().parent / "results"
FRACTIONS = [0.004, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0]


def clustered(n: int, bits: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.choice([-1, 1], (20, bits)).astype(np.int8)
    codes = centres[rng.integers(0, 20, n)]
    return np.where(rng.random(codes.shape) < 0.1, -codes, codes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    codes = pack(clustered(args.items, 64, rng))
    queries = pack(clustered(args.queries, 64, rng))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = ItemStore(Path(tmp) / "items.sqlite")
        metas = [json.dumps({"bucket": i % 250}) for i in range(args.items)]
        ids = store.add(codes, [f"x:{i}" for i in range(args.items)], [None] * args.items, metas)
        index = HammingIndex(64, "flat")
        index.add(codes, ids)
        index.search(queries[:1], args.k)  # the kernels compiled before any timing
        for frac in FRACTIONS:
            where = Where.parse({"meta.bucket": {"in": list(range(round(250 * frac)))}})
            row = {"fraction": frac, "allowed": round(frac * 250) * args.items // 250}
            for strategy in ("mask", "scan"):
                cache = FilterCache(64)
                t0 = time.perf_counter()
                search_filtered(queries[:1], args.k, None, where, cache, store, index, strategy)
                cold = time.perf_counter() - t0
                t0 = time.perf_counter()
                for i in range(len(queries)):
                    search_filtered(queries[i : i + 1], args.k, None, where, cache, store, index, strategy)
                row[f"{strategy}_ms"] = round((time.perf_counter() - t0) / len(queries) * 1000, 3)
                if strategy == "mask":
                    row["mask_build_ms"] = round(cold * 1000, 1)
            row["faster"] = "mask" if row["mask_ms"] < row["scan_ms"] else "scan"
            rows.append(row)
            print(row, flush=True)
        store.close()
    out = {"benchmark": "filters", "commit": git_commit(), "items": args.items, "k": args.k, "rows": rows,
           "command": f"python benchmarks/filters.py --items {args.items}"}  # fmt: skip
    args.out_dir.mkdir(parents=True, exist_ok=True)
    _io.write_json(args.out_dir / "filters.json", out)
    md = (
        f"# Filtered search: mask or scan\n\n{args.items:,} clustered 64-bit codes, k = {args.k}, one query at a time "
        f"(commit {out['commit']}; `{out['command']}`). `mask_build_ms`: the first search with a filter, which "
        "reads the allowed ids and builds their index (kept in step with adds and removals after that, "
        "rebuilt after a metadata change).\n\n"
        + results_table(rows, ["fraction", "allowed", "mask_ms", "mask_build_ms", "scan_ms", "faster"])
    )
    _io.write_text(args.out_dir / "filters.md", md)
    print(f"wrote {args.out_dir / 'filters.json'}")


if __name__ == "__main__":
    main()
