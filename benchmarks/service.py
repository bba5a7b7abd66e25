"""The HTTP service under load, on 127.0.0.1, against the stack a user would assemble by hand.

Servers (each its own process, one at a time): ``hashdistill serve`` over a copy of a collection (the demo's,
69,000 fmnist-1k database items), with micro-batching and without (``--batch-window-ms 0``); and the anchor:
FastAPI + the run's model in torch eager, one request at a time + faiss ``IndexBinaryFlat`` over the same
codes (adds go into the faiss index and a Python list, nothing written to disk), served by uvicorn as a plain
``pip install fastapi uvicorn`` runs it (h11, asyncio; ``hashdistill serve`` uses httptools and uvloop, from
its ``[serve]`` extra). The server runs on core 0 (``taskset -c 0``) and the load generator on core 1, so that
each server gets exactly one core whatever its clients cost (``--no-pin``: share both).

Clients: N threads (1, 8, 32) sharing a fixed count of requests; search by image (a query's PNG), by code
(JSON), and a mixed workload (90 % search by code, 9 % by image, 1 % adds of one image, interleaved in a fixed
order). Then a soak: the mixed workload at 8 clients against ``hashdistill serve`` for ``--soak-minutes``,
the server's resident memory and the minute's p99 recorded every minute. Then adds and searches at once for a
fixed time, the server killed (SIGKILL) and restarted, and every acknowledged add looked up. Writes
``benchmarks/results/service.{json,md}``.

    python benchmarks/service.py --collection runs/demo.hdc --run runs/demo
"""

from __future__ import annotations

import argparse
import io
import json
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

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    run = Run.load(run_dir)
    codes, db_ids, _ = load_codes(Path(run_dir) / "codes-database.npz", run.bits)
    index = faiss.IndexBinaryFlat(run.bits)
    index.add(codes.array)
    ids = [int(i) for i in db_ids]
    app = FastAPI()

    def encode(data: bytes):
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        with torch.inference_mode():
            x = torch.from_numpy(image).permute(2, 0, 1)[None]
            return pack(run.model(run.clean(x)).numpy())

    @app.post("/search")
    async def search(request: Request, k: int = 10):
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            upload: UploadFile = (await request.form())["file"]
            q = encode(await upload.read())
        else:
            q = pack(np.array([(await request.json())["codes"]], np.int8))
        d, i = index.search(q.array, k)
        return {"results": [{"id": ids[j], "distance": int(x)} for j, x in zip(i[0], d[0])]}

    @app.post("/items", status_code=201)
    async def add(files: list[UploadFile]):
        new = []
        for f in files:
            index.add(encode(await f.read()).array)
            ids.append(max(ids) + 1)
            new.append(ids[-1])
        return {"ids": new}

    return app


# --------------------------------------------------------------------------- load
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int, pin: bool) -> subprocess.Popen:
    cmd = ["taskset", "-c", "0", *cmd] if pin else cmd  # taskset execs: the pid is the server's
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code  # (warmed)
            if ready == 200 or (ready == 404 and httpx.get(f"http://127.0.0.1:{port}/docs").status_code == 200):
                return proc  # ready (the anchor has no /readyz: it loads everything before it listens)
        except httpx.HTTPError:
            time.sleep(0.3)
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read()[-2000:]}")
    raise RuntimeError("server did not start")


def stop(proc: subprocess.Popen, kill: bool = False) -> None:
    proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    proc.wait(timeout=30)


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


MIX = ["codes"] * 90 + ["image"] * 9 + ["add"]  # the mixed workload's 100-request cycle, spread below
MIX = [MIX[(i * 37) % 100] for i in range(100)]  # 37 is coprime to 100: a fixed order that interleaves the kinds


class Connection:
    """One keep-alive HTTP/1.1 connection on a raw socket, sending requests built once: the load generator costs
    a few microseconds a request, so one core of it can outrun the server (httpx costs about as much as the
    server it measures)."""

    def __init__(self, port: int) -> None:
        self.port, self.sock, self.buf = port, None, b""

    def request(self, raw: bytes) -> int:
        """Send ``raw`` (a whole request), read the response; its status code."""
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buf = b""
        try:
            self.sock.sendall(raw)
            while b"\r\n\r\n" not in self.buf:
                self.buf += self._recv()
            head, _, rest = self.buf.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            fields = dict(line.split(b":", 1) for line in lines[1:])
            fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
            length = int(fields.get(b"content-length", b"0"))
            while len(rest) < length:
                rest += self._recv()
            self.buf = rest[length:]
            if fields.get(b"connection", b"").lower() == b"close":
                self.close()
            return int(lines[0].split()[1])
        except (OSError, ValueError, IndexError):
            self.close()
            raise

    def _recv(self) -> bytes:
        data = self.sock.recv(1 << 16)
        if not data:
            raise OSError("connection closed")
        return data

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None


def http_request(method: str, path: str, body: bytes = b"", kind: str | None = None, headers: dict | None = None) -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    head += [f"Content-Type: {kind}"] if kind else []
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def multipart(field: str, name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "hashdistillbenchmarkboundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()  # fmt: skip
    return body, f"multipart/form-data; boundary={boundary}"


class Workload:
    """The requests a client sends, built once: search by image, by code, or the mixed cycle (``MIX``)."""

    def __init__(self, port: int, images: list[bytes], codes: list[list[int]], token: str | None = None) -> None:
        self.port = port
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.by_code = [http_request("POST", "/search", json.dumps({"codes": c, "k": 10}).encode(), "application/json")
                        for c in codes]  # fmt: skip
        self.by_image = [http_request("POST", "/search?k=10", *multipart("file", "q.png", im)) for im in images]
        self.adds = [http_request("POST", "/items", *multipart("files", f"{i}.png", im), auth) for i, im in enumerate(images)]

    def kind(self, mode: str, i: int) -> str:
        return MIX[i % len(MIX)] if mode == "mixed" else mode

    def send(self, c: Connection, kind: str, i: int) -> bool:
        if kind == "image":
            return c.request(self.by_image[i % len(self.by_image)]) == 200
        if kind == "codes":
            return c.request(self.by_code[i % len(self.by_code)]) == 200
        return c.request(self.adds[i % len(self.adds)]) == 201


def load(work: Workload, mode: str, clients: int, requests: int | None = None, seconds: float | None = None) -> list:
    """``clients`` threads sending ``requests`` requests between them (or for ``seconds``): one record
    ``(finished at, kind, latency s, ok)`` per request."""
    records, lock, counter = [], threading.Lock(), iter(range(requests if requests is not None else 2**62))
    stop_at = time.monotonic() + seconds if seconds is not None else float("inf")

    def client() -> None:
        c = Connection(work.port)
        while time.monotonic() < stop_at:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            kind, t0 = work.kind(mode, i), time.perf_counter()
            try:
                ok = work.send(c, kind, i)
            except (OSError, ValueError, IndexError):
                ok = False
            t1 = time.perf_counter()
            with lock:
                records.append((t1, kind, t1 - t0, ok))
        c.close()

    with ThreadPoolExecutor(clients) as pool:
        for done in [pool.submit(client) for _ in range(clients)]:
            done.result()  # a client's own failure (not the server's) stops the benchmark
    return records


def summary(records: list, wall: float | None = None) -> dict:
    """QPS over the records' span (or ``wall``), latency percentiles in ms, errors."""
    ends = np.array([r[0] for r in records])
    ms = np.array([r[2] for r in records]) * 1000
    wall = wall or float(ends.max() - (ends - ms / 1000).min())
    return {"qps": len(records) / wall, "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "errors": sum(not r[3] for r in records)}  # fmt: skip


def measure(work: Workload, mode: str, clients: int, requests: int) -> dict:
    t0 = time.perf_counter()
    records = load(work, mode, clients, requests)
    out = summary(records, time.perf_counter() - t0)
    if mode == "mixed":  # each kind's own p99 within the mix
        for kind in ("codes", "image", "add"):
            mine = [r for r in records if r[1] == kind]
            out[f"{kind}_p99_ms"] = summary(mine)["p99_ms"] if mine else None
    return out


def soak(work: Workload, proc: subprocess.Popen, minutes: int, clients: int) -> list[dict]:
    """The mixed workload for ``minutes``: per minute, requests, QPS, p50/p99, errors and the server's RSS."""
    rows, t_start = [], time.perf_counter()
    for minute in range(1, minutes + 1):
        t0 = time.perf_counter()
        records = load(work, "mixed", clients, seconds=60.0)
        row = {"minute": minute, "requests": len(records), **summary(records, time.perf_counter() - t0),
               "rss_mb": rss_mb(proc.pid)}  # fmt: skip
        rows.append({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()})
        print(f"soak minute {minute}: {row['qps']:.0f} q/s  p99 {row['p99_ms']:.1f} ms  rss {row['rss_mb']:.1f} MiB  "
              f"errors {row['errors']}  ({time.perf_counter() - t_start:.0f} s)", flush=True)  # fmt: skip
    return rows


def durability(collection: Path, seconds: float, images: list[bytes], pin: bool) -> dict:
    """Adds and searches at once for ``seconds``, SIGKILL, restart: is every acknowledged add there?"""
    port = free_port()
    serve = [sys.executable, "-m", "hashdistill", "serve", str(collection), "--port", str(port)]
    proc = start(serve, port, pin)
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
    proc = start(serve, port, pin)
    with httpx.Client(timeout=60) as c:
        found = sum(c.get(f"http://127.0.0.1:{port}/items/{i}").status_code == 200 for i in acked)
    stop(proc)
    return {"seconds": seconds, "acknowledged_adds": len(acked), "found_after_restart": found, "searches": searches[0],
            "errors": errors[0]}  # fmt: skip


def report(result: dict, collection: Path) -> str:
    rows, durable, minutes = result["results"], result["durability"], result["soak"]
    cols = ["mode", "clients", "requests", "qps", "p50_ms", "p95_ms", "p99_ms", "errors", "baseline_qps",
            "baseline_p99_ms", "speedup", "nobatch_qps", "nobatch_p99_ms"]  # fmt: skip
    mixed_cols = ["mode", "clients", "requests", "qps", "p99_ms", "codes_p99_ms", "image_p99_ms", "add_p99_ms",
                  "errors", "baseline_qps", "baseline_p99_ms", "speedup"]  # fmt: skip
    pinned = ("the server on core 0 (`taskset -c 0`), the load generator on core 1" if result["pinned"] else
              "server and load generator sharing both cores")  # fmt: skip
    text = (
        "# The HTTP service under load (127.0.0.1)\n\n"
        f"`{result['command']}` at commit `{result['commit']}` on {result['machine']}. `hashdistill serve` over a\n"
        f"copy of `{collection}` against the hand-made stack (FastAPI + torch eager per request + faiss\n"
        f"IndexBinaryFlat), each alone on the machine with its clients: {pinned}. `nobatch` is hashdistill\n"
        "with micro-batching off. `mixed`: 90 % search by code, 9 % by image, 1 % adds of one image.\n\n"
        + results_table([r for r in rows if r["mode"] != "mixed"], cols)
        + "\n"
        + results_table([r for r in rows if r["mode"] == "mixed"], mixed_cols)
    )
    if minutes:
        first, rest = minutes[0]["rss_mb"], [m["rss_mb"] for m in minutes[1:]] or [minutes[0]["rss_mb"]]
        p99 = [m["p99_ms"] for m in minutes]
        text += (
            f"\n## Soak: the mixed workload at {result['soak_clients']} clients for {len(minutes)} minutes\n\n"
            + results_table(minutes, ["minute", "requests", "qps", "p50_ms", "p99_ms", "errors", "rss_mb"])
            + f"\nResident memory after minute 1: {first:.1f} MiB; afterwards {min(rest):.1f}–{max(rest):.1f} MiB "
            f"(drift {100 * (max(rest) - first) / first:+.1f} %). p99 per minute {min(p99):.1f}–{max(p99):.1f} ms.\n"
        )
    return text + (
        f"\nAdds and searches at once for {durable['seconds']:g} s, then SIGKILL and a restart: "
        f"{durable['found_after_restart']} of {durable['acknowledged_adds']} acknowledged adds found "
        f"({durable['searches']} searches meanwhile, {durable['errors']} errors).\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collection", type=Path, default=Path("runs/demo.hdc"))
    ap.add_argument("--run", type=Path, default=Path("runs/demo"), help="the run the collection was made from")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--requests", type=int, default=3000, help="requests per (server, mode, clients)")
    ap.add_argument("--mixed-requests", type=int, default=3000, help="requests per mixed row")
    ap.add_argument("--soak-minutes", type=int, default=10)
    ap.add_argument("--soak-clients", type=int, default=8)
    ap.add_argument("--durability-seconds", type=float, default=10.0)
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin server and clients to cores")
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
    from hashdistill.config import load_config
    from hashdistill.data import load_protocol

    pin = args.pin and os.cpu_count() >= 2 and shutil.which("taskset") is not None
    if pin:
        os.sched_setaffinity(0, {1})  # the load generator's core
    p = load_protocol("fmnist-1k")
    images = []
    for i in p.query[:200]:
        buf = io.BytesIO()
        Image.fromarray(p.images[i]).save(buf, format="PNG")
        images.append(buf.getvalue())
    q, _, _ = load_codes(args.run / "codes-query.npz", load_config(args.run / "config.yaml").model.bits)
    codes = np.where(unpack(q[:200]) > 0, 1, -1).astype(int).tolist()
    clients = [int(c) for c in args.clients.split(",")]
    measured: dict[tuple, dict] = {}
    soaked: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "collection"
        shutil.copytree(args.collection, copy)
        token = (copy / "token").read_text().strip() if (copy / "token").is_file() else None
        servers = {
            "hashdistill": ["serve", str(copy)],
            "hashdistill-nobatch": ["serve", str(copy), "--batch-window-ms", "0"],
            "baseline": None,
        }
        for name, extra in servers.items():
            port = free_port()
            cmd = ([sys.executable, "-m", "hashdistill", *extra, "--port", str(port)] if extra else
                   [sys.executable, __file__, "--run", str(args.run), "--serve-baseline", str(port)])  # fmt: skip
            proc = start(cmd, port, pin)
            token = token or (copy / "token").read_text().strip()
            work = Workload(port, images, codes, token)
            try:
                for mode in ("image", "codes", "mixed"):
                    if name == "hashdistill-nobatch" and mode != "image":
                        continue  # no encoding by code: batching does not apply
                    measure(work, mode if mode != "mixed" else "codes", 4, 40)  # warm-up
                    for n in clients if mode != "mixed" else [c for c in clients if c > 1]:
                        count = args.mixed_requests if mode == "mixed" else args.requests
                        measured[name, mode, n] = r = measure(work, mode, n, count)
                        print(f"{name:>20} {mode:>5} {n:>3} clients: {r['qps']:7.1f} q/s  p50 {r['p50_ms']:6.1f} ms  "
                              f"p99 {r['p99_ms']:6.1f} ms  errors {r['errors']}", flush=True)  # fmt: skip
                if name == "hashdistill" and args.soak_minutes:
                    soaked = soak(work, proc, args.soak_minutes, args.soak_clients)
            finally:
                stop(proc)
        durable = durability(copy, args.durability_seconds, images, pin)
        print(f"durability: {durable}", flush=True)
    rows = []
    for mode in ("image", "codes", "mixed"):
        for n in clients:
            if (mode, n) == ("mixed", 1):
                continue
            ours, base = measured["hashdistill", mode, n], measured["baseline", mode, n]
            row = {"mode": mode, "clients": n, "requests": args.mixed_requests if mode == "mixed" else args.requests,
                   **{k: round(v, 2) if v is not None else v for k, v in ours.items()},
                   "baseline_qps": round(base["qps"], 2), "baseline_p99_ms": round(base["p99_ms"], 2),
                   "speedup": round(ours["qps"] / base["qps"], 2)}  # fmt: skip
            if mode == "image":
                nob = measured["hashdistill-nobatch", mode, n]
                row.update({"nobatch_qps": round(nob["qps"], 2), "nobatch_p99_ms": round(nob["p99_ms"], 2)})
            rows.append(row)
    result = {**provenance(__file__, argv), "pinned": pin, "results": rows, "soak_clients": args.soak_clients,
              "soak": soaked, "durability": durable}  # fmt: skip
    path = args.out_dir / "service.json"
    _io.write_json(path, result)
    _io.write_text(path.with_suffix(".md"), report(result, args.collection))
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
