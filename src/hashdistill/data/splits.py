"""What a run trains and is scored on: train / query / database images and labels, from a protocol or list
files (a config's ``data`` section)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..metrics import score
from .lists import ImageList, read_list_file
from .protocols import load_protocol

if TYPE_CHECKING:
    from ..config import DataConfig

SPLITS = ("train", "query", "database")


@dataclass
class Split:
    images: Any  # numpy uint8 (N, H, W[, C]), or an ImageList read on demand
    labels: np.ndarray  # (N,) int or (N, C) multi-hot
    ids: np.ndarray  # identifiers written with codes (pool indices for protocols)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> Split:
        images = self.images[idx] if isinstance(self.images, np.ndarray) else _SubsetImages(self.images, idx)
        return Split(images, self.labels[idx], self.ids[idx])


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
    query: Split
    database: Split
    n_classes: int
    class_names: list[str]
    topk: int

    @property
    def multilabel(self) -> bool:
        return self.train.labels.ndim == 2

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; known: {', '.join(SPLITS)}")
        return getattr(self, name)

    def score(self, query_codes: Any, db_codes: Any) -> dict[str, float]:
        """The headline metrics of query against database codes (``metrics.score``)."""
        return score(query_codes, db_codes, self.query.labels, self.database.labels, self.topk)


def take(images: Any, idx: np.ndarray) -> torch.Tensor:
    """A uint8 batch as a tensor: (B, H, W) grey or (B, 3, H, W) colour."""
    x = torch.from_numpy(np.ascontiguousarray(images[idx]))
    return x.permute(0, 3, 1, 2).contiguous() if x.ndim == 4 else x


def load_training_data(data: DataConfig) -> TrainingData:
    """The splits a ``data`` section describes, each cut to its ``limit_*``."""
    if data.protocol:
        p = load_protocol(data.protocol)
        splits = {s: Split(p.images[p.indices(s)], p.labels[p.indices(s)], p.indices(s)) for s in SPLITS}
        names, topk = p.class_names, p.spec.topk
    else:
        splits = {}
        for s in SPLITS:
            lst: ImageList = read_list_file(getattr(data, s), data.root).at_size(data.load_size, data.workers or 4)
            splits[s] = Split(lst, lst.labels, np.arange(len(lst)))
        names, topk = splits["train"].images.class_names, 1000
    for s in SPLITS:
        limit = getattr(data, f"limit_{s}")
        if limit:
            splits[s] = splits[s].subset(np.arange(min(limit, len(splits[s]))))
    labels = splits["train"].labels
    n_classes = labels.shape[1] if labels.ndim == 2 else len(names)
    return TrainingData(splits["train"], splits["query"], splits["database"], n_classes, list(names), data.topk or topk)
