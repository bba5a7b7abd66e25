"""Which score should re-rank by the stored outputs h? The cosine a collection uses (``stored``) against the inner
product with the item's h kept at its length (its confidence: tanh outputs near +-1 are long) and the cosine of
centred outputs (h minus the mean h of the run's training images), and the cosine with query expansion
(``index/rerank.py``'s ``expanded_scores``: the query plus its n best candidates, n = 1, 2, 3; the collection's
``expand``), beside faiss PQ 8x8 of the unit h (``frontier.py``'s strongest rival at 8 bytes), with and without
the same expansion, and OPQ 8x8, on DHD runs of ``frontier.py``.

For each run (a cached-mode DHD run: its head over the protocol's frozen features gives h): the items ranked by
Hamming distance and by the asymmetric score <h_q, b> (``index/asymmetric.py``: the order a search by continuous
outputs ranks by), and that order's top R rescored by cos(h_q, h), <h_q / |h_q|, h> or cos(h_q - m, h - m) (h as
float16), the rest in the asymmetric order, at R = 100, 1000 and every item (``all``: the ranking a search for
the whole database returns). Class mAP@K, mAP@all and the instance mAP where the protocol has families. Writes
``benchmarks/results/rerank-scores.{json,md}``, with the means over the runs of each protocol.

    python benchmarks/rerank_scores.py runs/frontier-l2/openmoji/dhd-64 runs/frontier-seed1/openmoji/dhd-64 ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import faiss
import numpy as np

from hashdistill import _io
from hashdistill.codes import pack
from hashdistill.data import load_protocol
from hashdistill.features import feature_name
from hashdistill.index.rerank import expanded_scores
from hashdistill.run import Run
from hashdistill.shallow import split_features
from hashdistill.tables import provenance, results_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from frontier import Problem, asymmetric_order, hamming_order, head_outputs, reranked_order, score_order, unit

RESULTS = Path(__file__).resolve().parent / "results"
DEPTHS = (100, 1000, None)  # None: every item
EXPANSIONS = (1, 2, 3)  # query expansion's n


def reconstructed(factory: str, fit: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``x`` as a faiss index ``factory`` trained on ``fit`` codes it: encoded, then decoded (what its L2 ranks)."""
    index = faiss.index_factory(x.shape[1], factory)
    index.train(fit)
    return index.sa_decode(index.sa_encode(x))


def rows_of(path: Path) -> list[dict]:
    run = Run.load(path)
    m, p = run.config.model, load_protocol(run.config.data.protocol)
    spec = feature_name({"backbone": m.backbone, "input_size": m.input_size, "layer": m.layer})
    prob = Problem(p)
    H = {s: head_outputs(run, split_features(p, s, spec)) for s in ("train", "query", "database")}
    hq, hdb = H["query"], H["database"]
    qp, dbp = pack(np.where(hq >= 0, 1, -1)), pack(np.where(hdb >= 0, 1, -1))
    base = {"run": str(path), "protocol": p.name, "seed": run.config.runtime.seed, "lambda2": run.config.method.lambda2}
    first = asymmetric_order(hq, qp, dbp)
    out = [{**base, "score": "hamming", "R": None, **prob.scores(hamming_order(qp, dbp))},
           {**base, "score": "asymmetric", "R": None, **prob.scores(first)}]  # fmt: skip
    fit = np.unique(np.concatenate([unit(H["train"]), unit(hdb)]), axis=0)  # as frontier.py trains its PQ
    qu = unit(hq)

    def by_reconstruction(rec: np.ndarray, label: str, q: np.ndarray) -> dict:  # faiss's L2 ranking of unit q
        norms = (rec**2).sum(1)
        return {**base, "score": label, "R": None, **prob.scores(score_order(lambda r: 2 * q[r] @ rec.T - norms))}

    rec = reconstructed("PQ8", fit, unit(hdb))
    out.append(by_reconstruction(rec, "faiss pq 8x8 of unit h", qu))
    # the same expansion on PQ: the query plus its 2 best by PQ's score, each reconstruction weighted by its cosine
    top = np.argsort(-(2 * qu @ rec.T - (rec**2).sum(1)), axis=1, kind="stable")[:, :2]
    near = unit(rec)[top]
    qe = unit(qu + np.einsum("qn,qnd->qd", np.einsum("qd,qnd->qn", qu, near).clip(0), near))
    out.append(by_reconstruction(rec, "faiss pq 8x8 of unit h + expansion 2", qe))
    out.append(by_reconstruction(reconstructed("OPQ8,PQ8", fit, unit(hdb)), "faiss opq 8x8 of unit h", qu))
    mean = H["train"].mean(0)
    stored = {  # score name: (the query's vector, the stored one)
        "cosine": (qu, unit(hdb)),
        "inner product": (qu, hdb),
        "centred cosine": (unit(hq - mean), unit(hdb - mean)),
    }
    for name, (vq, v) in stored.items():
        v = v.astype(np.float16).astype(np.float32)
        for depth in DEPTHS:
            order = reranked_order(first, depth or len(hdb), lambda r, t, vq=vq, v=v: np.einsum("qd,qrd->qr", vq[r], v[t]))
            out.append({**base, "score": name, "R": depth or "all", **prob.scores(order)})
    v = unit(hdb).astype(np.float16).astype(np.float32)
    for n in EXPANSIONS:
        for depth in DEPTHS:
            rescore = lambda r, t, n=n: expanded_scores(qu[r], v[t], t >= 0, n)
            order = reranked_order(first, depth or len(hdb), rescore)
            out.append({**base, "score": f"cosine + expansion {n}", "R": depth or "all", **prob.scores(order)})
    for row in out:
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items() if k != "run"}, flush=True)
    return out


def means(rows: list[dict]) -> list[dict]:
    """One row per (protocol, score, R): the mean of each metric over the runs (seeds) that have it."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["protocol"], r["score"], r["R"]), []).append(r)
    out = []
    for (protocol, score, depth), rs in groups.items():
        row = {"protocol": protocol, "runs": len(rs), "score": score, "R": depth}
        for m in ("map_at_k", "map_all", "map_siblings"):
            vals = [r[m] for r in rs if r.get(m) is not None]
            row[m] = round(float(np.mean(vals)), 4) if vals else None
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", help="DHD run folders (cached mode), as frontier.py trains them")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    rows = [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for path in args.runs for r in rows_of(path)]
    result = {**provenance(__file__, argv), "rows": rows}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    _io.write_json(args.out_dir / "rerank-scores.json", result)
    cols = ["protocol", "seed", "lambda2", "score", "R", "map_at_k", "map_all", "map_siblings"]
    _io.write_text(args.out_dir / "rerank-scores.md", (
        "# Re-ranking by stored h: cosine, inner product, centred cosine, query expansion\n\n"
        f"`{result['command']}` at commit `{result['commit']}` on {result['machine']}. `R`: the top R by the "
        "asymmetric score <h_q, b> rescored, the rest in that order (`all`: every item); `map_at_k`: the protocol's mAP@K; "
        "`map_siblings`: the instance level.\n\n## Means over the runs of each protocol\n\n"
        + results_table(means(rows), ["protocol", "runs", *cols[3:]]) + "\n## Each run\n\n" + results_table(rows, cols)
    ))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
