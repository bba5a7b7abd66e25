"""Retrieval quality on a benchmark protocol: every method at several code lengths.

Shallow methods fit on ``--features`` (pixels); deep methods train from a config
(``--config configs/dhd-fmnist-small-cnn.yaml``), one run per code length under ``--runs-dir``.

Writes ``benchmarks/results/quality-<protocol>.json`` as
``{"protocol", "commit", "runs": [{"method", "bits", "features", "map_at_1000", "map_all", "p_at_h2",
"train_seconds", ...}]}`` and a Markdown table beside it. Rows of earlier runs with another
(method, bits, features) are kept, so each issue adds its methods to the same file.

    python benchmarks/quality.py --protocol fmnist-1k --methods lsh,pcah,sh,itq,sdh,ksh --bits 16,32,64
    python benchmarks/quality.py --protocol fmnist-1k --config configs/dhd-fmnist-small-cnn.yaml --bits 16,32,64
    python benchmarks/quality.py --protocol fmnist-1k --methods lsh,pcah,sh,itq --features mobilenet_v2@64/14
    python benchmarks/quality.py --protocol fmnist-1k --config configs/distillhash-fmnist.yaml \
        --set method=distillhash-noisy --label distillhash-noisy
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from pathlib import Path

from hashdistill import _io
from hashdistill.data import PROTOCOLS, load_protocol
from hashdistill.evaluate import git_commit, results_table, run_shallow
from hashdistill.features import feature_name
from hashdistill.shallow import SHALLOW_METHODS

RESULTS = Path(__file__).resolve().parent / "results"


def _key(row: dict) -> tuple:
    return (row["method"], row["bits"], row["features"])


def run_deep(config: Path, protocol: str, bits: int, overrides: list[str], runs_dir: Path, label: str | None = None) -> dict:
    """Train one deep run (fresh) and return its result row."""
    import shutil

    from hashdistill.config import load_config
    from hashdistill.train import train

    cfg = load_config(config, [*overrides, f"protocol={protocol}", f"bits={bits}"])
    cfg["name"] = f"{cfg['name']}-{label or cfg['method']}-{protocol}-{bits}"
    run_dir = runs_dir / cfg["name"]
    shutil.rmtree(run_dir, ignore_errors=True)
    m = train(cfg, run_dir, progress=False)
    if cfg["mode"] == "cached":  # the frozen features' name, as shallow rows on them carry it
        where = feature_name({"backbone": cfg["backbone"], "input_size": cfg["input_size"], "layer": cfg["backbone_layer"]})
    else:
        where = f"{cfg['backbone']}@{cfg['input_size']}px (end-to-end)"
    extra = {}
    if cfg.get("pairs"):
        extra = {"pair_features": feature_name(cfg["pairs"]), "purity": m.get("purity")}
    return {
        "method": label or cfg["method"], "bits": bits, "features": where, **extra,
        **{k: m[k] for k in ("map_at_1000", "map_all", "p_at_h2") if k in m},
        "train_seconds": m["train_seconds"], "features_seconds": m["features_seconds"],
        "encode_seconds": m["encode_seconds"], "epochs": cfg["epochs"], "seed": cfg["seed"],
        "config": str(config), "overrides": overrides,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default="fmnist-1k", choices=list(PROTOCOLS))
    ap.add_argument("--methods", default=",".join(SHALLOW_METHODS))
    ap.add_argument("--bits", default="16,32,64")
    ap.add_argument("--features", default="pixels")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", type=Path, help="train a deep method from this config instead of shallow methods")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    ap.add_argument("--label", help="the rows' method name (default: the config's method), for variants")
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/benchmarks"))
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    methods = [] if args.config else [m.strip().lower() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in SHALLOW_METHODS]
    if unknown:
        ap.error(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(SHALLOW_METHODS)}")
    bits = [int(b) for b in args.bits.split(",")]

    protocol = load_protocol(args.protocol)
    json_path = args.out_dir / f"quality-{args.protocol}.json"
    old = json.loads(json_path.read_text()) if json_path.is_file() else {"runs": []}
    rows = {_key(r): r for r in old["runs"]}
    command = "python benchmarks/" + " ".join(shlex.quote(a) for a in [Path(__file__).name, *(argv or sys.argv[1:])])
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    commit = git_commit(Path(__file__).parent)
    for m in methods:
        for b in bits:
            row, _, _ = run_shallow(protocol, m, b, args.features, args.seed)
            row["command"], row["machine"], row["commit"] = command, machine, commit
            rows[_key(row)] = row
            print(
                f"{m:>6} {b:>3} bits  " + "  ".join(f"{k} {row[k]:.4f}" for k in protocol.spec.metrics)
                + f"  train {row['train_seconds']:.1f}s",
                flush=True,
            )  # fmt: skip

    if args.config:
        for b in bits:
            row = run_deep(args.config, args.protocol, b, args.overrides, args.runs_dir, args.label)
            row["command"], row["machine"], row["commit"] = command, machine, commit
            rows[_key(row)] = row
            print(f"{row['method']:>6} {b:>3} bits  " + "  ".join(f"{k} {row[k]:.4f}" for k in protocol.spec.metrics)
                  + f"  train {row['train_seconds']:.0f}s  features {row['features_seconds']:.0f}s", flush=True)  # fmt: skip

    order = {m: i for i, m in enumerate(SHALLOW_METHODS)}
    runs = sorted(rows.values(), key=lambda r: (r["features"], order.get(r["method"], 99), r["method"], r["bits"]))
    result = {"protocol": args.protocol, "commit": git_commit(Path(__file__).parent), "runs": runs}
    _io.write_json(json_path, result)
    cols = ["method", "bits", "features", *protocol.spec.metrics, "train_seconds", "features_seconds", "encode_seconds"]
    md = (
        f"# Retrieval quality on `{args.protocol}`\n\n{protocol.spec.description}.\n\n"
        f"Written at commit `{result['commit']}`. In the JSON each row names the command and the commit that\n"
        "produced it.\n\n"
        + results_table(runs, cols)
    )
    notes = Path(__file__).resolve().parent / "notes" / f"quality-{args.protocol}.md"
    if notes.is_file():  # hand-written analysis of the figures, kept across reruns
        md += "\n" + notes.read_text()
    _io.write_text(json_path.with_suffix(".md"), md)
    print(f"wrote {json_path} and {json_path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
