"""One search by image from the command line, as a user types it: ``hashdistill search COLLECTION --image Q -k 3``.

Runs the command ``--repeats`` times in a fresh interpreter for each source tree given (``--tree name=src/``:
that tree's ``hashdistill`` on ``PYTHONPATH``; default: this checkout), and records each run's wall time and
peak resident memory (the child's own ``ru_maxrss``, from ``os.wait4``). Each tree is byte-compiled first
(``compileall``), as an installed package is: these machines set ``PYTHONDONTWRITEBYTECODE``, so a tree never
compiled would pay for compiling its modules on every run. The first run warms the page cache and is not
counted. Nothing else heavy may run meanwhile (two cores).

    python benchmarks/search_cli.py --collection runs/demo.hdc --image runs/demo-query.png \\
        --tree before=/tmp/old/src --tree after=src

Writes ``benchmarks/results/search-cli.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from hashdistill import _io
from hashdistill.tables import provenance, results_table

RESULTS = Path(__file__).parent / "results"


def one_run(tree: Path, collection: Path, image: Path, k: int) -> tuple[float, float, str]:
    """(seconds, peak MB, stdout) of one search in a fresh interpreter with ``tree`` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    cmd = [sys.executable, "-m", "hashdistill", "search", str(collection), "--image", str(image), "-k", str(k)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"{tree}: search failed: {err.strip()}")
    return seconds, usage.ru_maxrss / 1024, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collection", type=Path, default=Path("runs/demo.hdc"))
    ap.add_argument("--image", type=Path, default=Path("runs/demo-query.png"))
    ap.add_argument("-k", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--tree", action="append", default=[], help="name=SRC: a source tree to time (repeatable)")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    trees = [t.split("=", 1) for t in args.tree] or [["this", str(Path(__file__).parents[1] / "src")]]
    rows, outputs = [], {}
    for name, src in trees:
        subprocess.run([sys.executable, "-m", "compileall", "-q", src], check=True, stdout=subprocess.DEVNULL)
        one_run(Path(src), args.collection, args.image, args.k)  # warm the page cache
        runs = [one_run(Path(src), args.collection, args.image, args.k) for _ in range(args.repeats)]
        seconds, mb = np.array([r[0] for r in runs]), np.array([r[1] for r in runs])
        outputs[name] = runs[0][2]
        rows.append({"tree": name, "source": src, "runs": args.repeats, "median_seconds": float(np.median(seconds)),
                     "min_seconds": float(seconds.min()), "max_seconds": float(seconds.max()),
                     "median_peak_mb": float(np.median(mb))})  # fmt: skip
    same = len({o for o in outputs.values()}) == 1
    prov = provenance(Path(__file__), argv)
    out = args.out_dir / "search-cli"
    _io.write_json(out.with_suffix(".json"), {**prov, "collection": str(args.collection), "k": args.k, "rows": rows,
                                              "same_results": same})  # fmt: skip
    md = (
        "# One search by image from the command line\n\n"
        f"`{prov['command']}` at commit `{prov['commit']}` ({prov['machine']}): `hashdistill search "
        f"{args.collection} --image {args.image} -k {args.k}`, each run a fresh interpreter on a byte-compiled tree (the\n"
        f"first, warming the page cache, not counted). Same results from every tree: {'yes' if same else 'NO'}.\n\n"
        + results_table(rows, ["tree", "source", "runs", "median_seconds", "min_seconds", "max_seconds", "median_peak_mb"])
    )
    _io.write_text(out.with_suffix(".md"), md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
