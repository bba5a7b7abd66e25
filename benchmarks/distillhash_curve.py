"""DistillHash's distilled pairs against the margin: purity and fraction kept for each variant's runs.

Reads ``purity.json`` from the run folders ``benchmarks/quality.py`` trained (``--runs-dir``, seed 0 of each
variant at each code length) and writes ``benchmarks/results/distillhash-curve-<protocol>.{json,md,png,svg}``.
The table gives each side's kept fraction and purity at a few margins; the plot shows whole curves for one
code length. The runs are those of the rows in ``quality-<protocol>.json``, whose commit and command they
carry; this script only reads them.

    python benchmarks/distillhash_curve.py --protocol fmnist-1k [--bits 64] [--runs-dir runs/benchmarks]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hashdistill import _io, plots
from hashdistill.tables import provenance, results_table

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("distillhash", "distillhash-relabel", "distillhash-cross-fit", "distillhash-cross-fit-calibrated")
MARGINS = (-8.0, -4.0, 0.0, 4.0, 8.0, 16.0)


def rows_of(name: str, bits: int, report: dict) -> list[dict]:
    """One table row per margin in ``MARGINS``: each side's kept fraction and purity there."""
    curve, out = report["curve"], []
    for m in MARGINS:
        if m not in curve["margin"]:
            continue
        at = curve["margin"].index(m)
        row = {"variant": name, "bits": bits, "rule": curve["rule"], "margin": m}
        for side in ("similar", "dissimilar"):
            c = curve[side]
            row[f"{side}_kept"] = c["kept"][at]
            row[f"{side}_kept_fraction"] = c["kept_fraction"][at]
            row[f"{side}_purity"] = c["purity"][at]
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default="fmnist-1k")
    ap.add_argument("--bits", type=int, default=64, help="the code length the plot shows (the table has all)")
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/benchmarks"))
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    rows, curves, initial, runs = [], {}, None, {}
    for name in VARIANTS:
        for bits in (16, 32, 64):
            path = args.runs_dir / f"distillhash-fmnist-{name}-{args.protocol}-{bits}" / "purity.json"
            if not path.is_file():
                continue
            report = json.loads(path.read_text())
            rows += rows_of(name, bits, report)
            metrics = json.loads((path.parent / "metrics.json").read_text())
            runs[f"{name}-{bits}"] = {"run": path.parent.name, "train_seconds": metrics["train_seconds"],
                                      "cross_fit_seconds": metrics.get("cross_fit_seconds")}  # fmt: skip
            initial = report["initial"]
            if bits == args.bits:
                curves[name] = report["curve"]
    if not curves:
        raise SystemExit(f"no DistillHash runs of {args.protocol} at {args.bits} bits under {args.runs_dir}")
    stem = args.out_dir / f"distillhash-curve-{args.protocol}"
    plots.purity_curves(curves, stem, initial, title=f"{args.protocol}, {args.bits} bits: distilled pairs by margin")
    prov = provenance(Path(__file__), argv)
    _io.write_json(stem.with_suffix(".json"), {**prov, "protocol": args.protocol, "initial": initial, "runs": runs,
                                                "rows": rows, "curves": curves})  # fmt: skip
    cols = ["variant", "bits", "rule", "margin", "similar_kept", "similar_kept_fraction", "similar_purity",
            "dissimilar_kept", "dissimilar_kept_fraction", "dissimilar_purity"]  # fmt: skip
    md = (
        f"# DistillHash's distilled pairs against the margin on `{args.protocol}`\n\n"
        f"`{prov['command']}` at commit `{prov['commit']}` ({prov['machine']}), reading the seed-0 runs that\n"
        f"`benchmarks/quality.py` trained (their rows in `quality-{args.protocol}.json` name the command and commit).\n"
        f"Initial labels: {initial['similar']:,} similar pairs at purity {initial['similar_purity']:.3f}, "
        f"{initial['dissimilar']:,} dissimilar at {initial['dissimilar_purity']:.3f}. A side's candidates are the pairs\n"
        "with that initial label (agree) or every pair (relabel); the margin is in bits (logit units).\n\n"
        f"![curves]({stem.name}.png)\n\n"
        + results_table(rows, cols)
        + "\nTime (seconds, 2 cores): the run's training epochs, and on top of them the cross-fitted stage-1 models (step 2).\n\n"
        + results_table([{"run": k, **v} for k, v in runs.items()], ["run", "train_seconds", "cross_fit_seconds"])
    )
    _io.write_text(stem.with_suffix(".md"), md)
    print(f"wrote {stem}.{{json,md,png,svg}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
