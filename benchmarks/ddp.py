"""The cost of torchrun data parallelism on CPU: one process against two (gloo) on the same machine.

Training (fmnist-1k, 10,000 training images, global batch 128, 3 epochs): the demo's small CNN end to end,
and cached DHD over frozen MobileNetV2 features (features computed beforehand, so only the head trains);
one process with 2 threads against 2 processes x 1 thread (torchrun's default), the same global batch.
Encoding: ``hashdistill encode RUN --split database`` (69,000 images), 1 process against 2, wall clock of
the whole command. Writes ``benchmarks/results/ddp.{json,md}``.

    python benchmarks/ddp.py [--demo-run runs/demo] [--train 10000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hashdistill import _io
from hashdistill.tables import provenance, results_table

RESULTS = Path(__file__).resolve().parent / "results"
MODES = {
    "end-to-end small CNN": ["configs/demo.yaml"],
    "cached DHD (MobileNetV2 features)": ["configs/dhd-fmnist-cached.yaml", "--set", "augment.views=2"],
}


def hashdistill(args: list[str], procs: int, threads: int) -> tuple[subprocess.CompletedProcess, float]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    cmd = [*(launcher if procs > 1 else [sys.executable]), "-m", "hashdistill", *args]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return r, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo-run", type=Path, default=Path("runs/demo"), help="a trained run whose database is encoded")
    ap.add_argument("--train", type=int, default=10_000, help="training images")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode, config in MODES.items():
            base = [*config, "--set", f"data.limit_train={args.train}", "--set", f"schedule.epochs={args.epochs}",
                    "--set", "model.bits=64", "--quiet", "--runs-dir", tmp]  # fmt: skip
            if "cached" in mode:  # warm the feature cache once: the comparison is of the training loop
                hashdistill(["train", *base, "--set", "name=warm", "--set", "schedule.epochs=2"], 1, cores)
            for procs in (1, 2):
                name = f"{mode.split()[0]}-{procs}"
                batch = 128 // procs
                extra = ["--set", f"optim.batch_size={batch}", "--set", f"name={name}"]
                extra += ["--set", f"runtime.num_threads={cores // procs}"]
                hashdistill(["train", *base, *extra], procs, cores // procs)
                log = [json.loads(x) for x in (Path(tmp) / name / "log.jsonl").read_text().splitlines()]
                metrics = json.loads((Path(tmp) / name / "metrics.json").read_text())
                epoch_s = statistics.median(r["seconds"] for r in log)
                rows.append({"work": f"train: {mode}", "processes": procs, "threads_each": cores // procs,
                             "batch_each": batch, "global_batch": batch * procs, "seconds": round(epoch_s, 2),
                             "unit": "s / epoch (median)", "map_at_1000": round(metrics["map_at_1000"], 4)})  # fmt: skip
                print(rows[-1], flush=True)
        if (args.demo_run / "checkpoint.pt").is_file():
            for procs in (1, 2):
                out = Path(tmp) / f"codes-{procs}.npz"
                _, seconds = hashdistill(["encode", str(args.demo_run), "--split", "database", "--out", str(out),
                                          "--device", "cpu"], procs, cores // procs)  # fmt: skip
                rows.append({"work": "encode 69,000 database images (whole command)", "processes": procs,
                             "threads_each": cores // procs, "batch_each": 256, "global_batch": 256 * procs,
                             "seconds": round(seconds, 2), "unit": "s", "map_at_1000": ""})  # fmt: skip
                print(rows[-1], flush=True)
            same = (Path(tmp) / "codes-1.npz").read_bytes() == (Path(tmp) / "codes-2.npz").read_bytes()
        else:
            same = None
    record = provenance(__file__, argv)
    result = {**record, "results": rows, "sharded_codes_identical": same}
    path = args.out_dir / "ddp.json"
    _io.write_json(path, result)
    cols = ["work", "processes", "threads_each", "batch_each", "global_batch", "seconds", "unit", "map_at_1000"]
    _io.write_text(path.with_suffix(".md"), (
        "# torchrun on CPU: one process against two\n\n"
        f"`{record['command']}` at commit `{record['commit']}` on {record['machine']}. The same cores either way: one\n"
        "process with every thread, or two processes (gloo) sharing them. The sharded encoding's file is "
        f"{'identical' if same else 'not compared' if same is None else 'NOT identical'} to one process's.\n\n"
        + results_table(rows, cols)
    ))  # fmt: skip
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
