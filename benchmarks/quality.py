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

The DHD paper's comparison (Tables 2 and 3, see ``paper_tables.py``) on one config's frozen features:
shallow methods on those features, every deep baseline and DHD at 16/32/64 bits, each baseline trained
on T_S only and with SdH at 16/64 bits, and DHD's ablations. Rows already in the results are kept
(the run resumes where it stopped); ``--force`` retrains them; ``--only dpn,csq`` retrains just those
methods' rows (T_T, T_S and +SdH):

    python benchmarks/quality.py --protocol fmnist-1k --compare configs/compare-fmnist.yaml
    python benchmarks/quality.py --protocol fmnist-1k --compare configs/compare-fmnist.yaml --only dpn
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from hashdistill import _io
from hashdistill.data import PROTOCOLS, load_protocol
from hashdistill.features import feature_name
from hashdistill.methods.distillhash import DistillHashParams
from hashdistill.shallow import FLOAT_METHOD, SHALLOW_METHODS, run_float, run_shallow
from hashdistill.tables import provenance, result_label, results_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import paper_tables

RESULTS = Path(__file__).resolve().parent / "results"


def _key(row: dict) -> tuple:
    return (row["method"], row["bits"], row["features"], row.get("seed", 0))


def features_of(cfg) -> str:
    """The name rows of a config's runs carry: its frozen features' (as shallow rows on them), or the end-to-end backbone."""
    m = cfg.model
    if m.mode == "cached":
        return feature_name({"backbone": m.backbone, "input_size": m.input_size, "layer": m.layer})
    return f"{m.backbone}@{m.input_size}px (end-to-end)"


def run_deep(config: Path, protocol: str, bits: int, overrides: list[str], runs_dir: Path, label: str | None = None) -> dict:
    """Train one deep run (fresh) and return its result row."""
    import shutil

    from hashdistill.config import load_config
    from hashdistill.train import train

    cfg = load_config(config, [*overrides, f"data.protocol={protocol}", f"model.bits={bits}"])
    seed = f"-s{cfg.runtime.seed}" if cfg.runtime.seed else ""
    name = f"{cfg.run_name}-{label or cfg.method.name}-{protocol}-{bits}{seed}"
    cfg = cfg.replace([f"name={name}"])
    run_dir = runs_dir / name
    shutil.rmtree(run_dir, ignore_errors=True)
    m = train(cfg, run_dir, progress=False)
    extra = {}
    if isinstance(cfg.method, DistillHashParams):  # its rows name the features of its initial pairs
        purity = {k: v for k, v in (m.get("purity") or {}).items() if k != "curve"}  # the curve: distillhash_curve.py
        extra = {"pair_features": feature_name(cfg.method.pairs.model_dump()), "purity": purity}
    return {
        "method": label or cfg.method.name, "bits": bits, "features": features_of(cfg), **extra,
        **{k: m[k] for k in PROTOCOLS[protocol].metrics if k in m},
        "train_seconds": m["train_seconds"], "features_seconds": m["features_seconds"],
        "encode_seconds": m["encode_seconds"], "epochs": m["epochs"], "seed": cfg.runtime.seed,
        "train_view": cfg.method.train_view, "self_distill": cfg.method.self_distill, "config": str(config),
        "overrides": overrides,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default="fmnist-1k", choices=list(PROTOCOLS))
    ap.add_argument("--methods", default=",".join(SHALLOW_METHODS))
    ap.add_argument("--bits", default="16,32,64")
    ap.add_argument("--features", default="pixels")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", default="", help="with --config: train once per seed (comma-separated), e.g. 0,1,2")
    ap.add_argument("--config", type=Path, help="train a deep method from this config instead of shallow methods")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    ap.add_argument("--label", type=result_label, help="the rows' method name (default: the config's method), for variants")
    ap.add_argument("--compare", type=Path, help="run the paper's Table 2 / 3 comparison on this config's features")
    ap.add_argument("--force", action="store_true", help="with --compare: retrain rows already in the results")
    ap.add_argument("--only", help="with --compare: retrain only these methods' rows (comma-separated, e.g. dpn)")
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/benchmarks"))
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    methods = [] if args.config or args.compare else [m.strip().lower() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in (*SHALLOW_METHODS, FLOAT_METHOD)]
    if unknown:
        ap.error(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(SHALLOW_METHODS)}, {FLOAT_METHOD}")
    bits = [int(b) for b in args.bits.split(",")]

    protocol = load_protocol(args.protocol)
    old_path = args.out_dir / f"quality-{args.protocol}.json"
    old = json.loads(old_path.read_text()) if old_path.is_file() else {"runs": []}
    rows = {_key(r): r for r in old["runs"]}
    prov = provenance(__file__, argv)  # every row's command, machine and commit
    for m in methods:
        for b in [0] if m == FLOAT_METHOD else bits:
            row = (
                run_float(protocol, args.features)
                if m == FLOAT_METHOD
                else run_shallow(protocol, m, b, args.features, args.seed)[0]
            )
            row.update(prov)
            rows[_key(row)] = row
            print(
                f"{m:>6} {row['bits']:>3} bits  " + "  ".join(f"{k} {row[k]:.4f}" for k in protocol.spec.metrics if k in row)
                + f"  train {row['train_seconds']:.1f}s",
                flush=True,
            )  # fmt: skip

    if args.config:
        seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [None]
        for b, seed in ((b, s) for s in seeds for b in bits):
            sets = [*args.overrides, *([f"runtime.seed={seed}"] if seed is not None else [])]
            row = run_deep(args.config, args.protocol, b, sets, args.runs_dir, args.label)
            row.update(prov)
            rows[_key(row)] = row
            save(args, protocol, rows, prov["commit"])  # after every row: an interrupted series keeps what it made
            print(f"{row['method']:>6} {b:>3} bits  seed {row['seed']}  " + "  ".join(f"{k} {row[k]:.4f}" for k in protocol.spec.metrics if k in row)
                  + f"  train {row['train_seconds']:.0f}s  features {row['features_seconds']:.0f}s", flush=True)  # fmt: skip

    if args.compare:
        from hashdistill.config import load_config

        cfg = load_config(args.compare, [*args.overrides, f"data.protocol={args.protocol}"])
        compare_features = features_of(cfg)
        todo = [(m, [], b) for m in paper_tables.SHALLOW for b in paper_tables.TABLE2_BITS]
        todo += [(label, sets, b) for label, sets, bs in paper_tables.jobs() for b in bs]
        if args.only:
            only = {m.strip() for m in args.only.split(",")}
            todo = [job for job in todo if paper_tables.method_of(job[0]) in only]
        for n, (label, sets, b) in enumerate(todo, 1):
            if (label, b, compare_features, cfg.runtime.seed) in rows and not (args.force or args.only):
                continue
            if not sets:
                row, _, _ = run_shallow(protocol, label, b, compare_features, args.seed)
            else:
                row = run_deep(args.compare, args.protocol, b, [*args.overrides, *sets], args.runs_dir, label)
            row.update(prov)
            rows[_key(row)] = row
            print(f"[{n}/{len(todo)}] {label:>18} {b:>3} bits  " + "  ".join(f"{k} {row[k]:.4f}" for k in protocol.spec.metrics if k in row),
                  flush=True)  # fmt: skip
            save(args, protocol, rows, prov["commit"])  # after every row: an interrupted comparison resumes
    save(args, protocol, rows, prov["commit"])
    return 0


def seed_summary(runs: list[dict], metrics: list[str]) -> str:
    """Mean ± sd (sample) over seeds of every (method, bits, features) trained with more than one seed."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["method"], r["bits"], r["features"]), []).append(r)
    rows = []
    for (method, bits, features), rs in groups.items():
        if len(rs) > 1:
            row = {"method": method, "bits": bits, "features": features, "seeds": ",".join(str(r["seed"]) for r in rs)}
            for m in metrics:
                v = np.array([r[m] for r in rs if m in r])
                row[m] = f"{v.mean():.4f} ± {v.std(ddof=1):.4f}"
            rows.append(row)
    if not rows:
        return ""
    return "\n## Mean ± sd over seeds\n\n" + results_table(rows, ["method", "bits", "features", "seeds", *metrics])


def save(args: argparse.Namespace, protocol, rows: dict, commit: str) -> None:
    """The JSON and Markdown of every row, with the paper's tables for each feature set that has them."""
    json_path = args.out_dir / f"quality-{args.protocol}.json"
    order = {m: i for i, m in enumerate(SHALLOW_METHODS)}
    runs = sorted(rows.values(), key=lambda r: (r["features"], order.get(r["method"], 99), r["method"], r["bits"]))
    result = {"protocol": args.protocol, "commit": commit, "runs": runs}
    _io.write_json(json_path, result)
    cols = ["method", "bits", "features", "seed", *protocol.spec.metrics, "train_seconds", "features_seconds", "encode_seconds"]
    md = (
        f"# Retrieval quality on `{args.protocol}`\n\n{protocol.spec.description}.\n\n"
        f"Written at commit `{result['commit']}`. In the JSON each row names the command and the commit that\n"
        "produced it.\n\n" + results_table(runs, cols)
    )
    md += seed_summary(runs, protocol.spec.metrics)
    metric = protocol.spec.metrics[0]
    for features in sorted({r["features"] for r in runs}):
        tables = paper_tables.markdown(runs, features, metric)
        md += "\n" + tables if tables else ""
    notes = Path(__file__).resolve().parent / "notes" / f"quality-{args.protocol}.md"
    if notes.is_file():  # hand-written analysis of the figures, kept across reruns
        md += "\n" + notes.read_text()
    _io.write_text(json_path.with_suffix(".md"), md)
    print(f"wrote {json_path} and {json_path.with_suffix('.md')}")


if __name__ == "__main__":
    sys.exit(main())
