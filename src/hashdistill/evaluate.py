"""Run a protocol end to end: fit a hasher, encode query and database, score with the protocol's metrics."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from .data.protocols import Protocol
from .metrics import evaluate_retrieval
from .shallow import create_hasher


def protocol_metrics(protocol: Protocol, query_codes: Any, db_codes: Any, **kw: Any) -> dict[str, float]:
    """The protocol's headline metrics (mAP@K, mAP@all and, for single-label protocols, P@H<=2)."""
    out = evaluate_retrieval(
        query_codes,
        db_codes,
        protocol.labels[protocol.query],
        protocol.labels[protocol.database],
        topks=(protocol.spec.topk, None),
        radius=2,
        **kw,
    )
    return {k: v for k, v in out.items() if k in protocol.spec.metrics}


def split_features(protocol: Protocol, split: str, features: str = "pixels") -> np.ndarray:
    """A split's features: ``pixels``, or a frozen backbone's (``mobilenet_v2@64/14``; cached, and the
    same files a cached-mode run or DistillHash reads for the same images)."""
    if features == "pixels":
        return protocol.features(split, "pixels")
    from .features import frozen_features, images_key, parse_feature_spec

    idx = protocol.indices(split)
    f, _ = frozen_features(parse_feature_spec(features), protocol.images[idx], images_key(protocol.name, idx), desc=f"{split} features")
    return np.asarray(f, np.float32)


def run_shallow(
    protocol: Protocol, method: str, bits: int, features: str = "pixels", seed: int = 0
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Fit a shallow hasher on the protocol's training split; return (result row, query codes, database codes)."""
    hasher = create_hasher(method, n_bits=bits, random_state=seed)
    t0 = time.perf_counter()
    hasher.fit(split_features(protocol, "train", features), protocol.labels[protocol.train])
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    q = hasher.encode(split_features(protocol, "query", features))
    db = hasher.encode(split_features(protocol, "database", features))
    encode_seconds = time.perf_counter() - t0
    row = {
        "method": method,
        "bits": bits,
        "features": features,
        "seed": seed,
        **protocol_metrics(protocol, q, db),
        "train_seconds": round(train_seconds, 3),
        "encode_seconds": round(encode_seconds, 3),
        "params": {k: v for k, v in hasher.get_params().items() if k not in ("n_bits", "random_state")},
    }
    return row, q, db


def evaluate_run(run_dir: str | Path, protocol: str | None = None) -> dict[str, Any]:
    """Metrics of a trained run: on its own query / database splits by default (from its saved codes),
    or on another protocol's (encoding that protocol's images with the run's model)."""
    import yaml

    from .codes import load_codes
    from .datasets import load_training_data
    from .train import encode_images, load_run

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{run_dir}: no config.yaml (not a run folder)")
    cfg = yaml.safe_load(cfg_path.read_text())
    if protocol is not None and protocol != cfg["protocol"]:
        cfg = {**cfg, "protocol": protocol, "data": None, "limit_query": None, "limit_database": None, "eval_topk": None}
    data = load_training_data(cfg)
    codes, model = [], None
    for split, name in ((data.query, "query"), (data.database, "database")):
        saved = run_dir / f"codes-{name}.npz"
        c = None
        if saved.is_file():
            c, ids, _ = load_codes(saved)
            c = c if np.array_equal(ids, split.ids) else None
        if c is None:
            if model is None:
                _, model, clean = load_run(run_dir)
            c = encode_images(model, clean, split.images)
        codes.append(c)
    return {"run": run_dir.name, "protocol": cfg["protocol"], "bits": cfg["bits"], **data.score(*codes)}


def git_commit(path: str | Path = ".") -> str:
    """The current commit (with ``-dirty`` for uncommitted changes), or ``unknown`` outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=path, capture_output=True, text=True
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def results_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A Markdown table of result rows (missing values shown as -)."""

    def fmt(column: str, v: Any) -> str:
        if isinstance(v, float):
            if column.endswith(("_seconds", "_mb")):
                return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
            return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
        return "-" if v is None else str(v)

    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(fmt(c, r.get(c)) for c in columns) + " |\n" for r in rows)
