from __future__ import annotations

import numpy as np
import pytest

from hashdistill.data import load_protocol


@pytest.fixture(scope="session")
def fmnist():
    """The real fmnist-1k protocol (prepared by `make test` from the offline Debian package)."""
    return load_protocol("fmnist-1k")


@pytest.fixture(scope="session")
def small_fmnist(fmnist):
    """A small, real slice of fmnist-1k: 2,000 training images, 300 queries, 3,000 database images (pixels)."""
    rng = np.random.default_rng(1)
    tr = np.sort(rng.choice(fmnist.train, 2000, replace=False))
    q = np.sort(rng.choice(fmnist.query, 300, replace=False))
    db = np.sort(rng.choice(fmnist.database, 3000, replace=False))

    def feats(idx):
        return fmnist.images[idx].reshape(len(idx), -1).astype(np.float32) / 255.0

    return {
        "Xtr": feats(tr), "ytr": fmnist.labels[tr],
        "Xq": feats(q), "yq": fmnist.labels[q],
        "Xdb": feats(db), "ydb": fmnist.labels[db],
    }  # fmt: skip
