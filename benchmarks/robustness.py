"""DHD with and without self-distillation under unseen query deformations (the paper's Table 4) and its
sensitivity to transformations (Fig. 6), on fmnist-1k at 64 bits, with the full report.

Trains (or, with ``--reuse``, reads) three runs from one config, same budget and seed:
``dhd`` (L_HP + L_bce-Q on T_T, + L_SdH pulling T_S to it), ``dhd-hp-bceq`` (the same loss on T_T, no
student) and ``dhd-hp-bceq-ts`` (on T_S, no SdH). Writes ``benchmarks/results/robustness-<protocol>.{json,md}``
and the report (HTML, Markdown, figures) under ``benchmarks/results/robustness-<protocol>/``.

    python benchmarks/robustness.py --config configs/dhd-fmnist-small-cnn.yaml
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
from pathlib import Path

from hashdistill import _io
from hashdistill.config import load_config
from hashdistill.deform import DEFORMATIONS
from hashdistill.report import write_report
from hashdistill.robustness import SENSITIVITY_GRID, robustness, sensitivity
from hashdistill.run import Run
from hashdistill.tables import git_commit, results_table
from hashdistill.train import train

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {"dhd": ["method=dhd"], "dhd-hp-bceq": ["method=dhd-hp-bceq"],
            "dhd-hp-bceq-ts": ["method=dhd-hp-bceq", "method.train_view=student"]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path("configs/dhd-fmnist-small-cnn.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0, help="seed of the deformations and transformations")
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/robustness"))
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    ap.add_argument("--reuse", action="store_true", help="read runs already trained under --runs-dir")
    args = ap.parse_args(argv)

    runs = []
    for label, sets in VARIANTS.items():
        cfg = load_config(args.config, [*args.overrides, *sets, f"model.bits={args.bits}", f"name={label}"])
        run_dir = args.runs_dir / label
        if not (args.reuse and (run_dir / "metrics.json").is_file()):
            print(f"training {label} ...", flush=True)
            train(cfg, run_dir, progress=False)
        runs.append(run_dir)
    protocol = cfg.data.protocol
    loaded = [Run.load(r) for r in runs]
    print("deformations ...", flush=True)
    rob = robustness(loaded, list(DEFORMATIONS), args.seed)
    print("sensitivity ...", flush=True)
    sens = sensitivity(loaded, SENSITIVITY_GRID, args.seed)
    names = list(VARIANTS)
    table4 = [{"deformation": d, **{r["run"]: r["map"] for r in rob if r["deformation"] == d}} for d in DEFORMATIONS]
    for row in table4:
        row["SdH gain vs T_T"] = row["dhd"] - row["dhd-hp-bceq"]
        row["SdH gain vs T_S"] = row["dhd"] - row["dhd-hp-bceq-ts"]
    fig6 = [{"s": s, **{r["run"]: r["mean_hamming"] for r in sens if r["s"] == s}} for s in SENSITIVITY_GRID]
    stem = f"robustness-{protocol}"
    report = write_report(loaded, args.out_dir / stem, list(DEFORMATIONS), SENSITIVITY_GRID, args.seed,
                          title=f"DHD with and without SdH on {protocol}, {args.bits} bits")  # fmt: skip
    command = "python benchmarks/" + " ".join(shlex.quote(a) for a in [Path(__file__).name, *(argv or sys.argv[1:])])
    result = {
        "protocol": protocol, "bits": args.bits, "config": str(args.config), "overrides": args.overrides,
        "seed": args.seed, "runs": names, "robustness": rob, "sensitivity": sens, "command": command,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "commit": git_commit(Path(__file__).parent),
    }  # fmt: skip
    _io.write_json(args.out_dir / f"{stem}.json", result)
    md = [f"# Robustness and sensitivity on `{protocol}`, {args.bits} bits", "",
          f"Runs from `{args.config}` ({' '.join(args.overrides) or 'no overrides'}), one seed; `dhd` trains with "
          "SdH, `dhd-hp-bceq` the same loss without it on T_T, `dhd-hp-bceq-ts` without it on T_S. Produced by "
          f"`{command}` at commit `{result['commit']}`.", "",
          f"## Table 4 analogue: mAP@1000 with each deformation applied to the queries only (seed {args.seed})", "",
          results_table(table4, ["deformation", *names, "SdH gain vs T_T", "SdH gain vs T_S"]), "",
          "## Fig. 6 analogue: mean Hamming distance between clean and transformed query codes", "",
          results_table(fig6, ["s", *names]), "",
          f"The full report (curves, heatmaps, histograms, example queries): `{stem}/report.md`, "
          f"`{stem}/report.html`.", ""]  # fmt: skip
    notes = Path(__file__).resolve().parent / "notes" / f"{stem}.md"
    if notes.is_file():
        md += [notes.read_text()]
    _io.write_text(args.out_dir / f"{stem}.md", "\n".join(md))
    print(f"wrote {args.out_dir / stem}.json, .md and {report['html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
