from __future__ import annotations

import numpy as np
import pytest

from hashdistill.data import load_protocol


@pytest.fixture(scope="session")
def fmnist():
    """The real fmnist-1k protocol (prepared by `make test` from the offline Debian package)."""
    return load_protocol("fmnist-1k")


@pytest.fixture
def scramble_training_labels(monkeypatch):
    """Call it, and the trainer loads the training labels in a seeded random order from then on: a method that never
    reads a label trains identically (the unsupervised methods' tests)."""
    import hashdistill.train as tr

    real = tr.load_training_data

    def scrambled(c):
        d = real(c)
        d.train.labels = np.random.default_rng(0).permutation(d.train.labels)
        return d

    return lambda: monkeypatch.setattr(tr, "load_training_data", scrambled)


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


SHAPES = ("disc", "hstripes", "vstripes")


def draw_shape(kind: str, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """One RGB image of a shape class on a noisy background, with a random colour, scale and position."""
    from PIL import Image, ImageDraw

    bg = rng.integers(0, 60, 3)
    img = Image.fromarray((bg + rng.integers(0, 30, (size, size, 3))).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    colour = tuple(int(c) for c in rng.integers(120, 256, 3))
    r = int(rng.integers(size // 5, size // 3))
    cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
    if kind == "disc":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        step = int(rng.integers(7, 11))
        for t in range(int(rng.integers(0, step)), size, step):
            draw.rectangle([0, t, size, t + 3] if kind == "hstripes" else [t, 0, t + 3, size], fill=colour)
    return np.asarray(img)


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    """A small folder of generated images, class per folder: train (40 per class), query (6), database (20)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("query", 6), ("database", 20)):
        for kind in SHAPES:
            (root / split / kind).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(draw_shape(kind, rng)).save(root / split / kind / f"{kind}-{i:03d}.png")
    return root


SHAPES_TRAINING = ["data.load_size=32", "model.input_size=32", "model.bits=16", "schedule.epochs=6", "optim.batch_size=40",
                   "optim.lr=1e-3", "optim.backbone_lr_mult=1.0", "augment.crop_scale=[0.8,1.0]", "runtime.num_threads=2"]  # fmt: skip


@pytest.fixture(scope="session")
def shapes_run(shapes, tmp_path_factory):
    """DHD (small CNN, 16 bits) trained through the CLI on the shapes' class-per-folder tree, with query and database."""
    from typer.testing import CliRunner

    from hashdistill.cli import app

    runs = tmp_path_factory.mktemp("runs")
    cfg = runs / "shapes.yaml"
    cfg.write_text(
        f"data: {{protocol: null, train: {shapes}/train, query: {shapes}/query, database: {shapes}/database}}\nmethod: dhd\n"
    )
    sets = [a for s in SHAPES_TRAINING for a in ("--set", s)]
    r = CliRunner().invoke(app, ["train", str(cfg), "--runs-dir", str(runs), "--quiet", *sets])
    assert r.exit_code == 0, r.output
    return runs / "shapes"
