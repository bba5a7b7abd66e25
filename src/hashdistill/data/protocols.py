"""The fixed benchmark protocols (docs/protocols.md): ``fmnist-1k``, ``mnist-1k``, ``fmnist-outfits``, ``openmoji``.

Every split is drawn with ``numpy.random.default_rng(0)`` in a fixed order, so the indices are the
same on every machine. A prepared protocol is one ``.npz`` under ``<data_home>/protocols/`` holding
the image pool, its labels and the query / train / database indices into that pool.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._io import save_npz
from ..errors import DataError
from .openmoji import Emoji, find_openmoji
from .outfits import make_outfits
from .sources import ImageSource, data_home, load_fashion_mnist, load_mnist

FORMAT_VERSION = 1
SEED = 0
OPENMOJI_SIZE = 64  # pixels a side
OPENMOJI_MIN_FAMILIES = 10  # a subgroup with fewer base emoji is left out


@dataclass(frozen=True)
class ProtocolSpec:
    name: str
    source: str
    description: str
    topk: int = 1000  # the K of the headline mAP@K
    metrics: tuple[str, ...] = ("map_at_1000", "map_all", "p_at_h2")


PROTOCOLS: dict[str, ProtocolSpec] = {
    "fmnist-1k": ProtocolSpec(
        "fmnist-1k",
        "fashion-mnist",
        "Fashion-MNIST 70,000: 1,000 test-file queries (100/class), 5,000 train-file training images "
        "(500/class), database = the other 69,000",
    ),
    "mnist-1k": ProtocolSpec(
        "mnist-1k",
        "mnist",
        "MNIST 70,000: 1,000 test-file queries (100/class), 5,000 train-file training images "
        "(500/class), database = the other 69,000",
    ),
    "fmnist-outfits": ProtocolSpec(
        "fmnist-outfits",
        "fashion-mnist",
        "multi-label 2x2 mosaics of Fashion-MNIST items: 1,000 test-file query mosaics, 5,000 train and "
        "20,000 database mosaics of train-file items",
        metrics=("map_at_1000", "map_all"),
    ),
    "openmoji": ProtocolSpec(
        "openmoji",
        "openmoji",
        "OpenMoji 17.0.0 colour emoji at 64x64, class = subgroup (the 76 with at least 10 base emoji); per "
        "class a fifth of the base emoji give one query each (a random skin tone; its other tones stay in the "
        "database), two fifths are the training images with all their tones, database = the pool minus the queries",
        topk=100,
        metrics=("map_at_100", "map_all", "p_at_h2", "map_siblings"),
    ),
}
SPLITS = ("query", "train", "database")


@dataclass
class Protocol:
    """An image pool with labels and the indices of its query, train and database splits."""

    name: str
    images: np.ndarray  # (N, H, W) grey or (N, H, W, 3) colour, uint8
    labels: np.ndarray  # (N,) int64 class vector, or (N, C) uint8 multi-hot
    query: np.ndarray
    train: np.ndarray
    database: np.ndarray
    class_names: list[str]
    source: str = ""
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def spec(self) -> ProtocolSpec:
        return PROTOCOLS[self.name]

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2

    def indices(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, split)

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of one split."""
        idx = self.indices(split)
        return self.images[idx], self.labels[idx]

    def features(self, split: str, kind: str = "pixels") -> np.ndarray:
        """Flat features of one split; ``pixels`` is the image scaled to [0, 1] as float32."""
        if kind != "pixels":
            raise DataError(f"unknown features {kind!r}; this protocol offers: pixels")
        x = self.images[self.indices(split)]
        return x.reshape(len(x), -1).astype(np.float32) / 255.0

    def families(self) -> dict[str, np.ndarray]:
        """The query's and the database's families where the protocol has them (``metrics.score``'s instance
        level, as ``query_family`` and ``db_family``); empty where it has none."""
        family = self.extra.get("family")
        return {} if family is None else {"query_family": family[self.query], "db_family": family[self.database]}

    def class_counts(self, split: str) -> np.ndarray:
        y = self.labels[self.indices(split)]
        return y.sum(axis=0) if self.multilabel else np.bincount(y, minlength=len(self.class_names))

    def info(self) -> dict:
        return {
            "name": self.name,
            "description": self.spec.description,
            "source": self.source,
            "image_shape": list(self.images.shape[1:]),
            "pool": int(len(self.images)),
            "multilabel": self.multilabel,
            "classes": self.class_names,
            "metrics": list(self.spec.metrics),
            **{s: int(len(self.indices(s))) for s in SPLITS},
            **{f"{s}_class_counts": self.class_counts(s).tolist() for s in SPLITS},
        }


def _per_class(labels: np.ndarray, n_per_class: int, rng: np.random.Generator) -> np.ndarray:
    picks = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < n_per_class:
            raise DataError(f"class {c} has {len(members)} images, fewer than the {n_per_class} the protocol needs")
        picks.append(rng.choice(members, n_per_class, replace=False))
    return np.sort(np.concatenate(picks))


def split_1k(source: ImageSource, seed: int = SEED) -> Protocol:
    """The ``*-1k`` rule: pool = train file then test file; queries 100/class from the test file,
    training images 500/class from the train file, database = the pool minus the queries."""
    rng = np.random.default_rng(seed)
    n_train_file = len(source.train_labels)
    images = np.concatenate([source.train_images, source.test_images])
    labels = np.concatenate([source.train_labels, source.test_labels])
    query = _per_class(source.test_labels, 100, rng) + n_train_file
    train = _per_class(source.train_labels, 500, rng)
    database = np.setdiff1d(np.arange(len(labels)), query)
    return Protocol("", images, labels, query, train, database, source.class_names, source.location)


def split_outfits(source: ImageSource, seed: int = SEED) -> Protocol:
    """``fmnist-outfits``: query mosaics from the test file, then train and database mosaics from the train file."""
    rng = np.random.default_rng(seed)
    parts = [
        make_outfits(source.test_images, source.test_labels, 1000, rng),
        make_outfits(source.train_images, source.train_labels, 5000, rng),
        make_outfits(source.train_images, source.train_labels, 20000, rng),
    ]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    items = np.concatenate([p[2] for p in parts])
    idx = np.arange(len(images))
    return Protocol(
        "", images, labels, idx[:1000], idx[1000:6000], idx[6000:], source.class_names, source.location,
        extra={"items": items},
    )  # fmt: skip


def split_openmoji(emoji: list[Emoji], seed: int = SEED) -> Protocol:
    """The ``openmoji`` rule on the package's metadata (images left empty; :func:`make_protocol` renders them).

    A family is a base emoji and its skin-tone variants; its class is the base's subgroup, and only subgroups
    of at least ``OPENMOJI_MIN_FAMILIES`` families are kept. Per class (sorted by name) the families, in
    metadata order, are permuted: the first fifth (at least one) are query families, each giving one member
    drawn at random as a query while its other members stay in the database; the next two fifths (at least
    one) are training families, all members in the training split. The database is the pool minus the
    queries. ``extra["family"]`` is each image's family (the pool index of its base), ``extra["hexcode"]``
    its OpenMoji hexcode.
    """
    rng = np.random.default_rng(seed)
    families: dict[str, list[Emoji]] = {}
    for e in emoji:
        families.setdefault(e.base, []).append(e)
    subgroup = {e.hexcode: e.subgroup for e in emoji}
    by_class: dict[str, list[str]] = {}
    for base in families:
        by_class.setdefault(subgroup[base], []).append(base)
    classes = sorted(c for c, fams in by_class.items() if len(fams) >= OPENMOJI_MIN_FAMILIES)
    kept = {b for c in classes for b in by_class[c]}
    pool = [e for e in emoji if e.base in kept]
    position = {e.hexcode: i for i, e in enumerate(pool)}
    label = {c: i for i, c in enumerate(classes)}
    query, train = [], []
    for c in classes:
        fams = by_class[c]
        order = rng.permutation(len(fams))
        n_query, n_train = max(1, round(0.2 * len(fams))), max(1, round(0.4 * len(fams)))
        for f in order[:n_query]:
            members = families[fams[f]]
            query.append(position[members[rng.integers(len(members))].hexcode])
        train += [position[e.hexcode] for f in order[n_query : n_query + n_train] for e in families[fams[f]]]
    query, train = np.sort(np.array(query, np.int64)), np.sort(np.array(train, np.int64))
    database = np.setdiff1d(np.arange(len(pool)), query)
    return Protocol(
        "openmoji",
        np.zeros((len(pool), 0, 0, 3), np.uint8),
        np.array([label[subgroup[e.base]] for e in pool], np.int64),
        query,
        train,
        database,
        classes,
        extra={
            "family": np.array([position[e.base] for e in pool], np.int64),
            "hexcode": np.array([e.hexcode for e in pool]),
        },
    )


def make_protocol(name: str, root: str | os.PathLike | None = None) -> Protocol:
    """Build a protocol from its source data (no caching)."""
    spec = _spec(name)
    if spec.source == "openmoji":
        package = find_openmoji(root)
        p = split_openmoji(package.emoji())
        p.images = package.render([str(h) for h in p.extra["hexcode"]], OPENMOJI_SIZE)
        p.source = str(package.path)
        return p
    source = (load_fashion_mnist if spec.source == "fashion-mnist" else load_mnist)(root)
    p = split_outfits(source) if name == "fmnist-outfits" else split_1k(source)
    p.name = name
    return p


def protocol_path(name: str) -> Path:
    return data_home() / "protocols" / f"{name}.npz"


def prepare_protocol(name: str, root: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Build a protocol and save it (atomically) under the data home; returns its path."""
    path = protocol_path(name)
    if path.is_file() and not force:
        try:
            load_protocol(name)
            return path
        except ValueError:
            pass  # an old or damaged file: rebuild it
    p = make_protocol(name, root)
    save_npz(
        path,
        format_version=np.array(FORMAT_VERSION),
        name=np.array(name),
        source=np.array(p.source),
        class_names=np.array(p.class_names),
        images=p.images,
        labels=p.labels,
        query=p.query,
        train=p.train,
        database=p.database,
        **{f"extra_{k}": v for k, v in p.extra.items()},
    )
    return path


def load_protocol(name: str, prepare: bool = True) -> Protocol:
    """Load a prepared protocol (preparing it first when missing and ``prepare`` is true)."""
    _spec(name)
    path = protocol_path(name)
    if not path.is_file():
        if not prepare:
            raise FileNotFoundError(f"protocol {name} is not prepared: run `hashdistill data prepare {name}`")
        prepare_protocol(name)
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["format_version"]) != FORMAT_VERSION or str(z["name"]) != name:
                raise DataError(f"{path}: prepared by another version; run `hashdistill data prepare {name} --force`")
            return Protocol(
                name,
                z["images"],
                z["labels"],
                z["query"],
                z["train"],
                z["database"],
                [str(c) for c in z["class_names"]],
                str(z["source"]),
                {k[6:]: z[k] for k in z.files if k.startswith("extra_")},
            )
    except (OSError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: damaged protocol file ({e}); run `hashdistill data prepare {name} --force`") from None


def _spec(name: str) -> ProtocolSpec:
    if name not in PROTOCOLS:
        raise DataError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]
