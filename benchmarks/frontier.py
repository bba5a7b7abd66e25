"""Bytes, milliseconds and mAP: learned binary codes against what a practitioner would pick instead (float
embeddings, product quantization), with re-ranking, on one protocol's frozen features and a DHD run's
continuous outputs h (the head over those features).

Rows, all on the protocol's query and database splits (training splits for whatever is trained):

- ``float``: exact search, faiss ``IndexFlatIP`` on normalised vectors (the features; the model's h).
- ``pq MxB``: faiss ``IndexPQ`` (M sub-quantizers of 8 bits = M bytes, L2 on normalised vectors), on the
  features and on h, trained on the database and training vectors (a collection's own); ``opq``: ``OPQM,PQM``; ``ivf-pq``: ``IVFn,PQ8`` with nprobe swept (items outside the
  probed lists rank last).
- ``itq`` / ``pcarr`` at 64 and 128 bits on the features; ``dhd`` at 64 and 128 bits (Hamming); ``dhd +
  asymmetric``: ranked by <h_q, b>, the query's h against the items' bits (``index/asymmetric.py``: exact, no
  memory beyond the codes); and that ranking's top R re-ranked (``index/rerank.py``) by ``stored-h`` (cosine with
  the items' h, float16 on disk; ``+ expansion n``: then the query expanded with its n best candidates, a
  collection's default) or ``stored-features`` (cosine with the items' backbone features, float16 on disk), the
  rest in the asymmetric order.

Per row: bytes per item in memory (codes and ids as held; faiss's serialised index) and on disk, mAP@K and
mAP@all (class level), the instance mAP where the protocol has families, queries per second (k = 100, all
queries in one call, both cores) at the protocol's size and at 1M items (the database replicated, floats
with a little noise, codes with 2 % of their bits flipped), and build seconds. Writes
``benchmarks/results/frontier-<protocol>.{json,md}`` and two plots (mAP against bytes, mAP against QPS).

    python benchmarks/frontier.py --config configs/compare-openmoji.yaml
    python benchmarks/frontier.py --config configs/compare-fmnist.yaml
"""

# ruff: noqa: B023 (every closure below is called at once, by add() or Problem.scores, inside its loop's turn)
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from hashdistill import _io
from hashdistill.codes import PackedCodes, hamming, pack
from hashdistill.config import load_config
from hashdistill.data import load_protocol
from hashdistill.features import feature_name
from hashdistill.index import HammingIndex, VectorFile, search_reranked, write_vectors
from hashdistill.index.rerank import EXPAND, expanded_scores
from hashdistill.metrics import ranking_scores
from hashdistill.run import Run
from hashdistill.shallow import create_hasher, split_features
from hashdistill.tables import provenance, results_table
from hashdistill.train import train

RESULTS = Path(__file__).resolve().parent / "results"
K_SPEED = 100  # k of the timed searches
BLOCK = 64  # queries per block when ranking the whole database


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class Problem:
    """One protocol's labels, families and the ranking metrics of any ordering."""

    def __init__(self, protocol) -> None:
        p = protocol
        self.ql, self.dl, self.topk = p.labels[p.query], p.labels[p.database], p.spec.topk
        self.fam = p.families()

    def scores(self, order_of) -> dict:
        out = ranking_scores(order_of, self.ql, self.dl, self.topk, block=BLOCK, **self.fam)
        return {"map_at_k": out[f"map_at_{self.topk}"], "map_all": out["map_all"], "map_siblings": out.get("map_siblings")}


def hamming_order(q, db):
    return lambda rows: np.argsort(hamming(q[rows], db), axis=1, kind="stable")


def asymmetric_order(h, q, db):
    """Every item ranked as a search by continuous outputs ``h`` ranks them (``index/asymmetric.py``): by <h_q, b>
    (higher first), then the Hamming distance of the packed signs ``q`` to the packed codes ``db``, then position."""
    signs = np.unpackbits(db.array, axis=1).astype(np.float64) * 2 - 1

    def order_of(rows):
        s, d = h[rows].astype(np.float64) @ signs.T, hamming(q[rows], db)
        return np.lexsort((np.broadcast_to(np.arange(len(signs)), s.shape), d, -s), axis=-1)

    return order_of


def reranked_order(first, depth: int, rescore):
    """Top ``depth`` of the ranking ``first`` rescored by ``rescore(rows, candidates)`` (higher first, ties in
    that ranking), then the rest in that ranking."""

    def order_of(rows):
        order = first(rows)
        top = order[:, :depth]
        again = np.argsort(-rescore(rows, top), axis=1, kind="stable")
        return np.concatenate([np.take_along_axis(top, again, 1), order[:, depth:]], axis=1)

    return order_of


def score_order(scores_of):
    return lambda rows: np.argsort(-scores_of(rows), axis=1, kind="stable")


def timed(fn, repeat: int = 2) -> float:
    """Best wall time of ``repeat`` calls (after one warm call)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def replicate(x: np.ndarray, n: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    reps = np.concatenate([x] * (-(-n // len(x))))[:n]
    return (reps + rng.normal(0, noise, reps.shape)).astype(np.float32) if noise else reps


def faiss_bytes(index) -> float:
    return len(faiss.serialize_index(index)) / index.ntotal


def dhd_run(args, bits: int) -> Run:
    cfg = load_config(args.config, [*args.overrides, f"model.bits={bits}", f"name=dhd-{bits}"])
    run_dir = args.runs_dir / cfg.data.protocol / f"dhd-{bits}"
    if not (run_dir / "metrics.json").is_file():
        print(f"training dhd at {bits} bits ...", flush=True)
        train(cfg, run_dir, progress=False)
    return Run.load(run_dir)


@torch.inference_mode()
def head_outputs(run: Run, features: np.ndarray) -> np.ndarray:
    """h = the run's head over frozen features (what the cached-mode run encodes)."""
    run.model.eval()
    x = torch.from_numpy(np.asarray(features, np.float32))
    return torch.cat([run.model.head(x[a : a + 4096]) for a in range(0, len(x), 4096)]).numpy()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path("configs/compare-openmoji.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/frontier"))
    ap.add_argument("--million", type=int, default=1_000_000, help="items of the large timing (0: skip it)")
    ap.add_argument("--depths", default="100,200,500,1000", help="candidates re-ranked (R)")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    ap.add_argument("--replot", type=Path, metavar="JSON", help="only redraw the plots of a results file")
    args = ap.parse_args(argv)
    if args.replot:
        done = json.loads(args.replot.read_text())
        plot(done["rows"], args.replot.with_suffix(""), done["protocol"])
        return 0
    cfg = load_config(args.config, args.overrides)
    m = cfg.model
    spec = feature_name({"backbone": m.backbone, "input_size": m.input_size, "layer": m.layer})
    p = load_protocol(cfg.data.protocol)
    prob = Problem(p)
    F = {s: split_features(p, s, spec) for s in ("train", "query", "database")}
    Fu = {s: unit(f) for s, f in F.items()}
    runs = {bits: dhd_run(args, bits) for bits in (64, 128)}
    H = {bits: {s: head_outputs(r, F[s]) for s in ("train", "query", "database")} for bits, r in runs.items()}
    for bits, r in runs.items():  # the head over the cached features gives the run's own saved codes
        assert np.array_equal(pack(np.where(H[bits]["database"] >= 0, 1, -1)).array, r.codes("database").array)
    rng = np.random.default_rng(0)
    rows: list[dict] = []
    big_n = args.million

    def add(row: dict, search=None, big_search=None) -> None:
        row["qps"] = round(len(p.query) / timed(search), 1) if search else None
        row["qps_1m"] = round(len(p.query) / timed(big_search, 1), 1) if big_search else None
        rows.append({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
        print({k: row[k] for k in ("method", "on", "bytes", "map_all", "map_siblings", "qps", "qps_1m")}, flush=True)

    # ---------------------------------------------------------------- floats and faiss
    for on, vecs in [("features", Fu), *[(f"h{bits}", {s: unit(v) for s, v in H[bits].items()}) for bits in H]]:
        q, db = vecs["query"], vecs["database"]
        fit = np.unique(np.concatenate([vecs["train"], db]), axis=0)  # quantizers learn from the collection itself
        d = db.shape[1]
        t0 = time.perf_counter()
        flat = faiss.IndexFlatIP(d)
        flat.add(db)
        build = time.perf_counter() - t0
        big = None
        if big_n:
            big = faiss.IndexFlatIP(d)
            big.add(unit(replicate(db, big_n, rng, 0.01)))
        add({"method": "float", "on": on, "bytes": 4 * d, "disk_bytes": 0, **prob.scores(score_order(lambda r: q[r] @ db.T)),
             "build_s": build}, lambda: flat.search(q, K_SPEED), big and (lambda: big.search(q, K_SPEED)))  # fmt: skip
        for name, factory in [(f"pq {mm}x8", f"PQ{mm}") for mm in (8, 16)] + [("opq 8x8", "OPQ8,PQ8")]:
            if d % int(name.split()[1].split("x")[0]):
                continue
            t0 = time.perf_counter()
            index = faiss.index_factory(d, factory)
            index.train(fit)
            index.add(db)
            build = time.perf_counter() - t0
            rec = index.sa_decode(index.sa_encode(db))  # ADC's own ranking: L2 to the decoded vectors
            norms = (rec**2).sum(1)
            big = None
            if big_n:
                big = faiss.index_factory(d, factory)
                big.train(fit)
                big.add(unit(replicate(db, big_n, rng, 0.01)))
            add({"method": name.split()[0], "on": on, "bytes": faiss_bytes(index), "code_bytes": int(name.split()[1].split("x")[0]),
                 "disk_bytes": 0, **prob.scores(score_order(lambda r: 2 * q[r] @ rec.T - norms)), "build_s": build},
                lambda: index.search(q, K_SPEED), big and (lambda: big.search(q, K_SPEED)))  # fmt: skip
        if on != "h64":
            continue
        nlist = max(16, int(4 * np.sqrt(len(db))))
        ivf = faiss.index_factory(d, f"IVF{nlist},PQ8")
        t0 = time.perf_counter()
        ivf.train(fit)
        ivf.add(db)
        build = time.perf_counter() - t0
        big = None
        if big_n:
            big = faiss.index_factory(d, "IVF1024,PQ8")
            sample = unit(replicate(db, big_n, rng, 0.01))
            big.train(sample[rng.choice(len(sample), 65536, replace=False)])
            big.add(sample)
        for nprobe in (1, 4, 16, 64):
            ivf.nprobe = nprobe
            if big is not None:
                big.nprobe = nprobe

            def ivf_order(rows, ivf=ivf):
                _, found = ivf.search(q[rows], len(db))
                rest = [np.setdiff1d(np.arange(len(db)), f[f >= 0], assume_unique=True) for f in found]
                return np.stack([np.concatenate([f[f >= 0], r]) for f, r in zip(found, rest)])

            add({"method": f"ivf-pq nprobe {nprobe}", "on": on, "bytes": faiss_bytes(ivf), "code_bytes": 8, "disk_bytes": 0,
                 **prob.scores(ivf_order), "build_s": build},
                lambda: ivf.search(q, K_SPEED), big and (lambda: big.search(q, K_SPEED)))  # fmt: skip

    # ---------------------------------------------------------------- codes
    def hamming_rows(method: str, q_codes, db_codes, bits: int, build: float, h=None, on: str = "features") -> None:
        qp, dbp = pack(q_codes), pack(db_codes)
        index = HammingIndex(bits, "auto")
        index.add(dbp)
        index.warm_up()
        big = None
        if big_n:
            flips = np.packbits(rng.random((big_n, bits)) < 0.02, axis=1)
            big = HammingIndex(bits, "auto")
            big.add(PackedCodes(np.concatenate([dbp.array] * (-(-big_n // len(dbp))))[:big_n] ^ flips))
            big.warm_up()
        held = index.ids.nbytes / len(index) + bits / 8
        add({"method": method, "on": on, "bits": bits, "bytes": held, "code_bytes": bits // 8, "disk_bytes": 0,
             **prob.scores(hamming_order(qp, dbp)), "build_s": build},
            lambda: index.search(qp, K_SPEED), big and (lambda: big.search(qp, K_SPEED)))  # fmt: skip
        if h is None:
            return
        hq, hdb = h["query"], h["database"]
        with tempfile.TemporaryDirectory() as tmp:
            stores = {
                "stored-h": VectorFile(write_vectors(Path(tmp) / "h.hdv", np.arange(len(hdb)), hdb)),
                "stored-features": VectorFile(write_vectors(Path(tmp) / "f.hdv", np.arange(len(hdb)), F["database"])),
            }
            queries = {"stored-h": hq, "stored-features": F["query"]}
            big_h = None
            if big is not None:  # the stored h of the 1M items: the database's, replicated with a little noise
                rep_h = replicate(hdb, big_n, np.random.default_rng(1), 0.01)
                big_h = VectorFile(write_vectors(Path(tmp) / "big-h.hdv", np.arange(big_n), rep_h))
            first = asymmetric_order(hq, qp, dbp)
            add({"method": f"{method} + asymmetric", "on": on, "bits": bits, "bytes": held, "code_bytes": bits // 8,
                 "disk_bytes": 0, **prob.scores(first), "build_s": build},
                lambda: search_reranked(index, hq, K_SPEED, "asymmetric"),
                big and (lambda: search_reranked(big, hq, K_SPEED, "asymmetric")))  # fmt: skip
            for depth in [int(x) for x in args.depths.split(",")]:
                over = max(1, depth // K_SPEED)
                for name, store in stores.items():
                    qv = queries[name]
                    look = store.vectors
                    for n in (0, EXPAND) if name == "stored-h" else (0,):  # (a collection expands h only)
                        rescore = lambda rows, top: expanded_scores(qv[rows], look[top], top >= 0, n)
                        label = f"{method} + {name}" + (f" + expansion {n}" if n else "") + f" R={depth}"
                        add({"method": label, "on": on, "bits": bits, "bytes": held, "code_bytes": bits // 8,
                             "disk_bytes": 2 * store.dim + 8, **prob.scores(reranked_order(first, depth, rescore)),
                             "build_s": build},
                            lambda: search_reranked(index, hq, K_SPEED, "stored", over, store.lookup, qv, n),
                            big_h is not None and name == "stored-h"
                            and (lambda: search_reranked(big, hq, K_SPEED, "stored", over, big_h.lookup, qv, n)))  # fmt: skip

    for method in ("itq", "pcarr"):
        for bits in (64, 128):
            t0 = time.perf_counter()
            hasher = create_hasher(method, n_bits=bits, random_state=0).fit(F["train"])
            build = time.perf_counter() - t0
            hamming_rows(method, hasher.encode(F["query"]), hasher.encode(F["database"]), bits, build)
    for bits, h in H.items():
        hamming_rows("dhd", np.where(h["query"] >= 0, 1, -1), np.where(h["database"] >= 0, 1, -1), bits,
                     runs[bits].metrics.get("train_seconds", 0.0), h, f"h{bits}")  # fmt: skip

    result = {**provenance(__file__, argv), "protocol": p.name, "features": spec, "config": str(args.config),
              "k_speed": K_SPEED, "million": big_n, "rows": rows}  # fmt: skip
    stem = args.out_dir / f"frontier-{p.name}"
    _io.write_json(stem.with_suffix(".json"), result)
    plot(rows, stem, p.name)
    cols = ["method", "on", "bits", "bytes", "code_bytes", "disk_bytes", "map_at_k", "map_all", "map_siblings", "qps",
            "qps_1m", "build_s"]  # fmt: skip
    _io.write_text(stem.with_suffix(".md"), (
        f"# Codes against floats and product quantization on `{p.name}`\n\n"
        f"`{result['command']}` at commit `{result['commit']}` on {result['machine']}. Frozen features `{spec}`,\n"
        f"DHD runs from `{args.config}` at 64 and 128 bits; `on` is what a row indexes (hK: the model's output h).\n"
        f"`bytes`: per item in memory as held (codes and ids; a faiss index serialised); `disk_bytes`: the stored\n"
        f"vectors a re-ranking reads (float16, memory-mapped). `map_at_k`: mAP@{prob.topk}; `map_siblings`: the\n"
        f"instance level. `qps`: k = {K_SPEED}, all {len(p.query)} queries in one call; `qps_1m`: the same at\n"
        f"{big_n:,} items.\n\n" + results_table(rows, cols)
        + f"\nPlots: `{stem.name}-bytes.png`, `{stem.name}-qps.png`.\n"
    ))  # fmt: skip
    print(f"wrote {stem}.json and .md")
    return 0


def plot(rows: list[dict], stem: Path, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"float": "k", "pq": "C1", "opq": "C2", "ivf-pq": "C3", "itq": "C4", "pcarr": "C5", "dhd": "C0"}
    for x, label, fname in [("bytes", "bytes per item in memory", "bytes"), ("qps_1m", "queries per second at 1M", "qps")]:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        shown = set()
        for r in rows:
            if r.get(x) is None:
                continue
            family = r["method"].split(" ")[0]
            kind = "dhd + re-ranking" if "+" in r["method"] else family
            colour = "C9" if "+" in r["method"] else colours.get(family, "C0")
            ax.scatter(r[x], r["map_all"], c=colour, s=18, marker="o" if r["on"] != "features" else "s",
                       label=None if kind in shown else kind)  # fmt: skip
            shown.add(kind)
        ax.legend(fontsize=8, loc="lower left")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("mAP@all")
        ax.set_title(f"{name}: squares on the features, circles on codes or h")
        fig.tight_layout()
        fig.savefig(f"{stem}-{fname}.png", dpi=110)
        plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
