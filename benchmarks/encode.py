"""Encoding speed: torch eager against ONNX Runtime (CPU), images per second at batch 1 and 256.

Models: the demo's small CNN at 28 px (``--demo-run``, a trained run folder, or an untrained one of the same
shape), and MobileNetV2 (offline ImageNet weights, 64-bit head) at 64 and 224 px. Both engines run the same
graph — the clean view (resize, crop, normalise) and the hash model — on the same uint8 images, with the same
number of threads, in one process. Writes ``benchmarks/results/encode.{json,md}``.

    python benchmarks/encode.py [--demo-run runs/demo] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hashdistill import _io
from hashdistill.augment import view_transforms
from hashdistill.config import load_config
from hashdistill.encoders import OnnxEncoder
from hashdistill.export import CleanViewModel, export_onnx
from hashdistill.model import build_model
from hashdistill.run import Run
from hashdistill.tables import provenance, results_table

RESULTS = Path(__file__).resolve().parent / "results"


def models(demo_run: Path | None) -> list[tuple[str, int, torch.nn.Module, torch.nn.Module]]:
    """(name, input size, model, clean view) of each model timed."""
    out = []
    if demo_run is not None:
        run = Run.load(demo_run)
        out.append((f"small-cnn ({demo_run.name})", run.config.model.input_size, run.model, run.clean))
    else:
        cfg = load_config("configs/demo.yaml")
        torch.manual_seed(0)
        out.append(("small-cnn (untrained)", 28, build_model(cfg, 10).eval(), view_transforms(cfg)[2]))
    for size in (64, 224):
        cfg = load_config(None, ["model.backbone=mobilenet_v2", "model.pretrained=true", f"model.input_size={size}",
                                 "augment.crop_ratio=1.0"])  # fmt: skip
        torch.manual_seed(0)
        out.append(("mobilenet_v2", size, build_model(cfg, 0).eval(), view_transforms(cfg)[2]))
    return out


def images_per_second(fn, images: np.ndarray, batch: int, seconds: float) -> float:
    """Throughput of ``fn`` on consecutive batches, at least ``seconds`` long after one warm-up call."""
    fn(images[:batch])
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a = (n * batch) % (len(images) - batch + 1)
        fn(images[a : a + batch])
        n += 1
    return n * batch / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo-run", type=Path, help="a trained demo run folder (default: an untrained small CNN)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, size, model, clean in models(args.demo_run):
            images = np.random.default_rng(0).integers(0, 256, (512, 3, size, size), dtype=np.uint8)
            graph = CleanViewModel(model, clean).eval()
            path = export_onnx(model, clean, Path(tmp) / "m.onnx")
            onnx = OnnxEncoder(path, None, threads=args.threads)

            @torch.inference_mode()
            def eager(x: np.ndarray, graph: torch.nn.Module = graph) -> np.ndarray:
                return graph(torch.from_numpy(x)).numpy()

            def ort(x: np.ndarray, onnx: OnnxEncoder = onnx) -> np.ndarray:
                return onnx.session.run(None, {"images": x})[0]

            agree = float(((eager(images[:64]) >= 0) == (ort(images[:64]) >= 0)).mean())
            for batch in (1, 256):
                t = images_per_second(eager, images, batch, args.seconds)
                o = images_per_second(ort, images, batch, args.seconds)
                rows.append({"model": name, "input_size": size, "batch": batch, "torch_images_per_s": round(t, 1),
                             "onnx_images_per_s": round(o, 1), "speedup": round(o / t, 2), "sign_agreement": agree})  # fmt: skip
                print(f"{name:>28} {size:>3} px batch {batch:>3}: torch {t:8.1f}/s  onnx {o:8.1f}/s  x{o / t:.2f}", flush=True)
    record = provenance(__file__, argv)
    command = record["command"]
    result = {**record, "machine": f"{record['machine']}, {args.threads} threads", "results": rows}
    path = args.out_dir / "encode.json"
    _io.write_json(path, result)
    cols = ["model", "input_size", "batch", "torch_images_per_s", "onnx_images_per_s", "speedup", "sign_agreement"]
    _io.write_text(path.with_suffix(".md"), (
        "# Encoding speed: torch eager vs ONNX Runtime (CPU)\n\n"
        f"`{command}` at commit `{result['commit']}` on {result['machine']}. Both engines run the same graph (clean\n"
        "view + hash model) on the same uint8 images; `sign_agreement` is the fraction of code bits whose signs agree\n"
        "on 64 images.\n\n" + results_table(rows, cols)
    ))  # fmt: skip
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
