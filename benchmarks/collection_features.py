"""Instance search in a collection: a collection made with ``features=True`` (docs/search.md "Stored features")
against the same collection's other re-rankings, through the public API, on a protocol with families (openmoji:
a query's skin-tone siblings are its instance-level matches).

A DHD run (``runs/frontier-l2/openmoji/dhd-64``, what ``benchmarks/frontier.py --config configs/compare-openmoji.yaml --runs-dir runs/frontier-l2``
trains) goes into a new collection with ``Collection.create(..., features=True)``; its database split is added
(``add_split``: encoded, h and the backbone features stored). Each query image is encoded once
(``query_rows``). ``rerank`` none (Hamming distance) and asymmetric (the score <h_q, b>, exact over every item) rank
the whole database; stored (with ``expand`` 0 and the default 2) and features re-rank its top R (k = R, oversample 1),
followed by the rest in the asymmetric order (as a search by image ranks it, and ``frontier.py``). Each ranking gives
class mAP@all and the instance mAP (``map_siblings``). Timed: the search of one query at k = 10 (the default
oversample 10, and 50), every query in turn, in a collection warmed as the service warms it (``warm_up``: the
numba scans loaded), and the encoding of the queries. Writes
``benchmarks/results/collection-features.{json,md}``.

    python benchmarks/collection_features.py --run runs/frontier-l2/openmoji/dhd-64
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hashdistill import _io
from hashdistill.collection import Collection
from hashdistill.data import load_protocol
from hashdistill.index.rerank import EXPAND
from hashdistill.metrics import ranking_scores
from hashdistill.run import Run
from hashdistill.tables import provenance, results_table

RESULTS = Path(__file__).resolve().parent / "results"
DEPTHS = (100, 500, 1000)
WHOLE = ("none", "asymmetric")  # Hamming distance; <h_q, b>, exact over every item
RERANKS = (("none", 0), ("asymmetric", 0), ("stored", 0), ("stored", EXPAND), ("features", 0))  # (rerank, expand)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/frontier-l2/openmoji/dhd-64"))
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if not (args.run / "checkpoint.pt").is_file():
        sys.exit(f"{args.run}: no trained run (python benchmarks/frontier.py --config configs/compare-openmoji.yaml trains it)")
    run = Run.load(args.run)
    q, db = run.data.split("query"), run.data.split("database")
    family = load_protocol(run.config.data.protocol).extra.get("family")  # by pool index, as the splits' ids
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        col = Collection.create(Path(tmp) / "c.hdc", run, features=True)
        col.add_split("database", run)
        build = time.perf_counter() - t0
        col.warm_up()  # as `hashdistill serve` does: every search runs the numba scans
        position = {f"{run.config.data.protocol}:database:{int(i)}": j for j, i in enumerate(db.ids)}
        t0 = time.perf_counter()
        rows = col.query_rows(q.images)
        encode_ms = (time.perf_counter() - t0) * 1000 / len(rows)

        def positions(hits) -> np.ndarray:
            return np.array([[position[h.source] for h in found] for found in hits], np.int64)

        # the whole database as a search by h ranks it (index/asymmetric.py): the order below a re-ranked top R
        by_score = positions(col.search_rows(rows, len(db), oversample=1, rerank="asymmetric"))
        fam = {"query_family": family[q.ids], "db_family": family[db.ids]} if family is not None else {}
        out = []
        for rerank, expand in RERANKS:
            search = {"rerank": rerank, "expand": expand}
            whole = rerank in WHOLE  # one ranking of the whole database, not a re-ranked top R
            for depth in (len(db),) if whole else DEPTHS:
                hits = col.search_rows(rows, depth, oversample=1, **search)
                order = np.empty((len(rows), len(db)), np.int64)
                for r, top in enumerate(positions(hits)):
                    order[r] = np.concatenate([top, by_score[r][~np.isin(by_score[r], top)]])
                s = ranking_scores(lambda rs, order=order: order[rs], q.labels, db.labels, **fam)
                row = {"rerank": rerank, "expand": expand, "R": None if whole else depth, "map_all": round(s["map_all"], 4),
                       "map_siblings": None if s.get("map_siblings") is None else round(s["map_siblings"], 4)}  # fmt: skip
                for oversample in (10, 50):
                    if whole and oversample != 10:  # oversample does not apply
                        continue
                    col.search_rows(rows[:1], 10, oversample=oversample, **search)
                    t0 = time.perf_counter()
                    for r in range(len(rows)):
                        col.search_rows(rows[r : r + 1], 10, oversample=oversample, **search)
                    row[f"ms_k10_x{oversample}"] = round((time.perf_counter() - t0) * 1000 / len(rows), 3)
                out.append(row)
                print(row, flush=True)
        col.flush()  # the memory-mapped files are written from the item table on flush
        disk = {name: (Path(tmp) / "c.hdc" / name).stat().st_size / len(col) for name in ("vectors.hdv", "features.hdv")}
        stats = col.stats()
        col.close()
    result = {
        **provenance(__file__, argv), "run": str(args.run), "protocol": run.config.data.protocol, "items": stats["items"],
        "bits": stats["bits"], "features": stats["features"], "engine": stats["engine"], "build_s": round(build, 2),
        "encode_ms_per_query": round(encode_ms, 3), "disk_bytes_per_item": {k: round(v, 1) for k, v in disk.items()},
        "rows": out,
    }  # fmt: skip
    args.out_dir.mkdir(parents=True, exist_ok=True)
    _io.write_json(args.out_dir / "collection-features.json", result)
    text = (
        f"# Instance search in a collection ({result['protocol']}, {result['items']} items, {result['bits']} bits, "
        f"{result['features']} features)\n\n`{result['command']}` at commit `{result['commit']}` on {result['machine']}. "
        f"Engine {result['engine']}; built (create + add_split with features) in {result['build_s']} s; encoding "
        f"{result['encode_ms_per_query']} ms per query image; on disk per item: h {disk['vectors.hdv']:.0f} B, "
        f"features {disk['features.hdv']:.0f} B (memory-mapped). `R`: the hits re-ranked (k = R, oversample 1; none and "
        f"asymmetric rank the whole database), the "
        f"rest by the asymmetric score <h_q, b>; `expand`: stored's query expansion; `map_siblings`: the instance level; `ms_k10_xN`: one search of k = 10 at oversample "
        f"N, without the encoding, in a warmed collection (`warm_up`, as the service).\n\n"
        + results_table(out, list(dict.fromkeys(k for r in out for k in r)))
        + "\n"
    )
    _io.write_text(args.out_dir / "collection-features.md", text)
    print(text)


if __name__ == "__main__":
    main()
