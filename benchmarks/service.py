"""The HTTP service under load, on 127.0.0.1, against the stack a user would assemble by hand.

Servers (each its own process, one at a time): ``hashdistill serve`` over a copy of a collection (the demo's,
69,000 fmnist-1k database items), with micro-batching and without (``--batch-window-ms 0``); and the anchor:
FastAPI + the run's model in torch eager, one request at a time + faiss ``IndexBinaryFlat`` over the same
codes, served by uvicorn as a plain ``pip install fastapi uvicorn`` runs it (h11, asyncio; ``hashdistill serve``
uses httptools and uvloop, from its ``[serve]`` extra). Clients: N threads (1, 8, 32) sharing a fixed count of requests; search by image (a query's PNG) and by
code (JSON). Then adds and searches at once for a fixed time, the server killed (SIGKILL) and restarted, and
every acknowledged add looked up. Writes ``benchmarks/results/service.{json,md}``.

    python benchmarks/service.py --collection runs/demo.hdc --run runs/demo
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from fastapi import FastAPI, Request, UploadFile
from PIL import Image

from hashdistill import _io
from hashdistill.tables import provenance, results_table

RESULTS = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------- the anchor: a hand-made stack
def baseline_app(run_dir: str):
    """FastAPI + torch eager (one image per request) + faiss IndexBinaryFlat over the run's database codes."""
    import faiss
    import torch

    from hashdistill.codes import load_codes, pack
    from hashdistill.run import Run

    torch.set_num_threads(os.cpu_count())
    run = Run.load(run_dir)
    codes, ids, _ = load_codes(Path(run_dir) / "codes-database.npz", run.bits)
    index = faiss.IndexBinaryFlat(run.bits)
    index.add(codes.array)
    app = FastAPI()

    @app.post("/search")
    async def search(request: Request, k: int = 10):
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            upload: UploadFile = (await request.form())["file"]
            image = np.asarray(Image.open(io.BytesIO(await upload.read())).convert("RGB"))
            with torch.inference_mode():
                x = torch.from_numpy(image).permute(2, 0, 1)[None]
                q = pack(run.model(run.clean(x)).numpy())
        else:
            q = pack(np.array([(await request.json())["codes"]], np.int8))
        d, i = index.search(q.array, k)
        return {"results": [{"id": int(ids[j]), "distance": int(x)} for j, x in zip(i[0], d[0])]}

    return app


# --------------------------------------------------------------------------- load
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read()[-2000:]}")
    raise RuntimeError("server did not start")


def stop(proc: subprocess.Popen, kill: bool = False) -> None:
    proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    proc.wait(timeout=30)


def load(port: int, mode: str, clients: int, requests: int, images: list[bytes], codes: list[list[int]]) -> dict:
    """``requests`` searches shared by ``clients`` threads; latency per request, QPS over the whole run."""
    url = f"http://127.0.0.1:{port}/search?k=10"
    latencies, errors, lock, counter = [], [0], threading.Lock(), iter(range(requests))

    def client() -> None:
        with httpx.Client(timeout=60) as c:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                try:
                    if mode == "image":
                        r = c.post(url, files={"file": ("q.png", images[i % len(images)], "image/png")})
                    else:
                        r = c.post(url, json={"codes": codes[i % len(codes)], "k": 10})
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    errors[0] += not ok

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for _ in range(clients):
            pool.submit(client)
    wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    return {"qps": requests / wall, "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "errors": errors[0]}  # fmt: skip


def durability(collection: Path, seconds: float, images: list[bytes]) -> dict:
    """Adds and searches at once for ``seconds``, SIGKILL, restart: is every acknowledged add there?"""
    port = free_port()
    serve = [sys.executable, "-m", "hashdistill", "serve", str(collection), "--port", str(port)]
    proc = start(serve, port)
    token = (collection / "token").read_text().strip()
    auth = {"Authorization": f"Bearer {token}"}
    acked, searches, errors, stop_at = [], [0], [0], time.monotonic() + seconds

    def writer(i: int) -> None:
        with httpx.Client(timeout=60) as c:
            while time.monotonic() < stop_at:
                r = c.post(f"http://127.0.0.1:{port}/items", files=[("files", (f"{i}.png", images[i]))], headers=auth)
                (acked.extend(r.json()["ids"]) if r.status_code == 201 else errors.__setitem__(0, errors[0] + 1))

    def reader(i: int) -> None:
        with httpx.Client(timeout=60) as c:
            while time.monotonic() < stop_at:
                r = c.post(f"http://127.0.0.1:{port}/search?k=10", files={"file": ("q.png", images[i])})
                searches[0] += 1
                errors[0] += r.status_code != 200

    with ThreadPoolExecutor(6) as pool:
        for i in range(3):
            pool.submit(writer, i)
            pool.submit(reader, 3 + i)
    stop(proc, kill=True)
    proc = start(serve, port)
    with httpx.Client(timeout=60) as c:
        found = sum(c.get(f"http://127.0.0.1:{port}/items/{i}").status_code == 200 for i in acked)
    stop(proc)
    return {"seconds": seconds, "acknowledged_adds": len(acked), "found_after_restart": found, "searches": searches[0],
            "errors": errors[0]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collection", type=Path, default=Path("runs/demo.hdc"))
    ap.add_argument("--run", type=Path, default=Path("runs/demo"), help="the run the collection was made from")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--requests", type=int, default=600, help="requests per (server, mode, clients)")
    ap.add_argument("--durability-seconds", type=float, default=10.0)
    ap.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.serve_baseline:  # the anchor server's own process
        import uvicorn

        # as `pip install fastapi uvicorn` runs it: the pure-Python HTTP parser (h11) on asyncio's loop
        uvicorn.run(baseline_app(str(args.run)), host="127.0.0.1", port=args.serve_baseline, log_level="warning",
                    http="h11", loop="asyncio")  # fmt: skip
        return 0

    from hashdistill.codes import load_codes, unpack
    from hashdistill.data import load_protocol

    p = load_protocol("fmnist-1k")
    images = []
    for i in p.query[:200]:
        buf = io.BytesIO()
        Image.fromarray(p.images[i]).save(buf, format="PNG")
        images.append(buf.getvalue())
    from hashdistill.config import load_config

    q, _, _ = load_codes(args.run / "codes-query.npz", load_config(args.run / "config.yaml").model.bits)
    codes = np.where(unpack(q[:200]) > 0, 1, -1).astype(int).tolist()
    clients = [int(c) for c in args.clients.split(",")]
    measured: dict[tuple, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "collection"
        shutil.copytree(args.collection, copy)
        servers = {
            "hashdistill": ["serve", str(copy)],
            "hashdistill-nobatch": ["serve", str(copy), "--batch-window-ms", "0"],
            "baseline": None,
        }
        for name, extra in servers.items():
            port = free_port()
            cmd = ([sys.executable, "-m", "hashdistill", *extra, "--port", str(port)] if extra else
                   [sys.executable, __file__, "--run", str(args.run), "--serve-baseline", str(port)])  # fmt: skip
            proc = start(cmd, port)
            try:
                for mode in ("image", "codes"):
                    if name == "hashdistill-nobatch" and mode == "codes":
                        continue  # no encoding: batching does not apply
                    load(port, mode, 4, 40, images, codes)  # warm-up
                    for n in clients:
                        measured[name, mode, n] = r = load(port, mode, n, args.requests, images, codes)
                        print(f"{name:>20} {mode:>5} {n:>3} clients: {r['qps']:7.1f} q/s  p50 {r['p50_ms']:6.1f} ms  "
                              f"p99 {r['p99_ms']:6.1f} ms  errors {r['errors']}", flush=True)  # fmt: skip
            finally:
                stop(proc)
        durable = durability(copy, args.durability_seconds, images)
        print(f"durability: {durable}", flush=True)
    rows = []
    for mode in ("image", "codes"):
        for n in clients:
            ours, base = measured["hashdistill", mode, n], measured["baseline", mode, n]
            row = {"mode": mode, "clients": n, "requests": args.requests, **{k: round(v, 2) for k, v in ours.items()},
                   "baseline_qps": round(base["qps"], 2), "baseline_p99_ms": round(base["p99_ms"], 2),
                   "speedup": round(ours["qps"] / base["qps"], 2)}  # fmt: skip
            if mode == "image":
                nob = measured["hashdistill-nobatch", mode, n]
                row.update({"nobatch_qps": round(nob["qps"], 2), "nobatch_p99_ms": round(nob["p99_ms"], 2)})
            rows.append(row)
    result = {**provenance(__file__, argv), "results": rows, "durability": durable}
    command = result["command"]
    path = args.out_dir / "service.json"
    _io.write_json(path, result)
    cols = ["mode", "clients", "requests", "qps", "p50_ms", "p95_ms", "p99_ms", "errors", "baseline_qps",
            "baseline_p99_ms", "speedup", "nobatch_qps", "nobatch_p99_ms"]  # fmt: skip
    _io.write_text(path.with_suffix(".md"), (
        "# The HTTP service under load (127.0.0.1)\n\n"
        f"`{command}` at commit `{result['commit']}` on {result['machine']}. `hashdistill serve` over a copy of\n"
        f"`{args.collection}` against the hand-made stack (FastAPI + torch eager per request + faiss IndexBinaryFlat),\n"
        "each alone on the machine with its clients; `nobatch` is hashdistill with micro-batching off.\n\n"
        + results_table(rows, cols)
        + f"\nAdds and searches at once for {durable['seconds']:g} s, then SIGKILL and a restart: "
        f"{durable['found_after_restart']} of {durable['acknowledged_adds']} acknowledged adds found "
        f"({durable['searches']} searches meanwhile, {durable['errors']} errors).\n"
    ))  # fmt: skip
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
