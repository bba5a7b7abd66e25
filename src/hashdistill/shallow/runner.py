"""A shallow hasher on a protocol end to end: fit on the training split, encode query and database, score."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..data.protocols import Protocol
from ..metrics import float_scores, score
from .hashers import create_hasher


def split_features(protocol: Protocol, split: str, features: str = "pixels") -> np.ndarray:
    """A split's features: ``pixels``, or a frozen backbone's (``mobilenet_v2@64/14``; cached, and the
    same files a cached-mode run or DistillHash reads for the same images)."""
    if features == "pixels":
        return protocol.features(split, "pixels")
    from ..features import frozen_features, images_key, parse_feature_spec

    idx = protocol.indices(split)
    f, _ = frozen_features(
        parse_feature_spec(features), protocol.images[idx], images_key(protocol.name, idx), desc=f"{split} features"
    )
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
    labels = protocol.labels
    row = {
        "method": method,
        "bits": bits,
        "features": features,
        "seed": seed,
        **score(q, db, labels[protocol.query], labels[protocol.database], protocol.spec.topk, **protocol.families()),
        "train_seconds": round(train_seconds, 3),
        "encode_seconds": round(encode_seconds, 3),
        "params": {k: v for k, v in hasher.get_params().items() if k not in ("n_bits", "random_state")},
    }
    return row, q, db


FLOAT_METHOD = "float-cosine"


def run_float(protocol: Protocol, features: str) -> dict[str, Any]:
    """The frozen float features themselves, ranked by cosine similarity (no training): the row a hashing
    method has to beat. Its ``bits`` are what one float32 vector costs (32 x its dimension)."""
    t0 = time.perf_counter()
    q, db = split_features(protocol, "query", features), split_features(protocol, "database", features)
    labels = protocol.labels
    scores = float_scores(q, db, labels[protocol.query], labels[protocol.database], protocol.spec.topk, **protocol.families())
    return {
        "method": FLOAT_METHOD,
        "bits": 32 * q.shape[1],
        "features": features,
        "seed": 0,
        **scores,
        "train_seconds": 0.0,
        "encode_seconds": round(time.perf_counter() - t0, 3),
    }
