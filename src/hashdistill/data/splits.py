"""What a run trains and is scored on: train / query / database images and labels, from a protocol or your
own images (a config's ``data`` section)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import DataError
from ..metrics import score
from .lists import ImageList, read_images
from .protocols import load_protocol

if TYPE_CHECKING:
    from ..config import DataConfig

SPLITS = ("train", "query", "database")


def digest(a: np.ndarray) -> str:
    """A short fingerprint of an array (which images a cached feature file describes)."""
    return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()[:12]


@dataclass
class Split:
    images: Any  # numpy uint8 (N, H, W[, C]), or an ImageList read on demand
    labels: np.ndarray | None  # (N,) int or (N, C) multi-hot; None for unlabelled images
    ids: np.ndarray  # identifiers written with codes (pool indices for protocols, positions otherwise)
    files: str | None = None  # for your own images: a fingerprint of the files (``ImageList.fingerprint``)
    family: np.ndarray | None = None  # (N,) instance ids where the protocol has them (``openmoji``: the base emoji)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, idx: np.ndarray) -> Split:
        images = self.images[idx] if isinstance(self.images, np.ndarray) else _SubsetImages(self.images, idx)
        labels = None if self.labels is None else self.labels[idx]
        family = None if self.family is None else self.family[idx]
        return Split(images, labels, self.ids[idx], self.files, family)


class _SubsetImages:
    def __init__(self, base: Any, idx: np.ndarray) -> None:
        self.base, self.idx = base, idx

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: Any) -> np.ndarray:
        return self.base[self.idx[i]]


@dataclass
class TrainingData:
    train: Split
    query: Split | None  # None: a run that trains without evaluation
    database: Split | None
    n_classes: int
    class_names: list[str]
    topk: int

    @property
    def multilabel(self) -> bool:
        return self.train.labels is not None and self.train.labels.ndim == 2

    @property
    def evaluated(self) -> bool:
        """Whether the run has labelled query and database splits to be scored on."""
        return self.query is not None and self.query.labels is not None and self.database.labels is not None

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; known: {', '.join(SPLITS)}")
        split = getattr(self, name)
        if split is None:
            raise DataError(f"this run has no {name} split (its config gives no data.{name})")
        return split

    def score(self, query_codes: Any, db_codes: Any) -> dict[str, float]:
        """The headline metrics of query against database codes (``metrics.score``)."""
        q, db = self.query, self.database
        return score(query_codes, db_codes, q.labels, db.labels, self.topk, query_family=q.family, db_family=db.family)


def take(images: Any, idx: np.ndarray) -> torch.Tensor:
    """A uint8 batch as a tensor: (B, H, W) grey or (B, 3, H, W) colour."""
    x = torch.from_numpy(np.ascontiguousarray(images[idx]))
    return x.permute(0, 3, 1, 2).contiguous() if x.ndim == 4 else x


def _own_split(path: str, data: DataConfig, class_names: list[str] | None) -> Split:
    found = read_images(path, data.root, class_names, allow_outside_root=data.allow_outside_root, max_pixels=data.max_pixels)
    lst: ImageList = found.at_size(data.load_size, data.workers or 4)
    return Split(lst, lst.labels, np.arange(len(lst)), lst.fingerprint())


def load_training_data(data: DataConfig) -> TrainingData:
    """The splits a ``data`` section describes, each cut to its ``limit_*``."""
    if data.protocol:
        p = load_protocol(data.protocol)
        family = p.extra.get("family")
        idx = {s: p.indices(s) for s in SPLITS}
        splits = {s: Split(p.images[i], p.labels[i], i, family=None if family is None else family[i]) for s, i in idx.items()}
        names, topk = p.class_names, p.spec.topk
    else:
        train = _own_split(data.train, data, None)
        names = train.images.class_names if train.labels is not None else []
        splits = {"train": train, "query": None, "database": None}
        for s in ("query", "database"):
            if getattr(data, s):
                splits[s] = _own_split(getattr(data, s), data, names or None)
        topk = 1000
    for s in SPLITS:
        limit = getattr(data, f"limit_{s}")
        if limit and splits[s] is not None:
            splits[s] = splits[s].subset(np.arange(min(limit, len(splits[s]))))
    labels = splits["train"].labels
    n_classes = 0 if labels is None else labels.shape[1] if labels.ndim == 2 else len(names)
    return TrainingData(splits["train"], splits["query"], splits["database"], n_classes, list(names), data.topk or topk)
