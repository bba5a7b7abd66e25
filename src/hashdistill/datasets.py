"""What a training run sees: train / query / database images and labels, from a protocol or list files."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from .data import ImageList, load_protocol, read_list_file, read_unlabelled_folder
from .data.lists import IMAGE_EXTENSIONS
from .metrics import evaluate_retrieval


class ListImages:
    """Images of a list file, loaded on demand (threaded) and resized to ``size`` x ``size`` RGB."""

    def __init__(self, images: ImageList, size: int = 256, workers: int = 4) -> None:
        self.list, self.size, self.workers = images, size, max(1, workers)

    def __len__(self) -> int:
        return len(self.list)

    def _one(self, i: int) -> np.ndarray:
        img = Image.fromarray(self.list.load(int(i)))
        return np.asarray(img.resize((self.size, self.size), Image.BILINEAR))

    def __getitem__(self, idx: Any) -> np.ndarray:
        idx = np.atleast_1d(np.asarray(idx))
        with ThreadPoolExecutor(self.workers) as pool:
            return np.stack(list(pool.map(self._one, idx)))


@dataclass
class Split:
    images: Any  # numpy uint8 (N, H, W[, C]) or ListImages
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

    def score(self, query_codes: Any, db_codes: Any) -> dict[str, float]:
        """mAP@topk, mAP@all and (single-label data) P@H<=2 of query against database codes."""
        m = evaluate_retrieval(query_codes, db_codes, self.query.labels, self.database.labels, topks=(self.topk, None))
        if self.multilabel:
            m.pop("p_at_h2")
        return m


def take(images: Any, idx: np.ndarray) -> torch.Tensor:
    """A uint8 batch as a tensor: (B, H, W) grey or (B, 3, H, W) colour."""
    x = torch.from_numpy(np.ascontiguousarray(images[idx]))
    return x.permute(0, 3, 1, 2).contiguous() if x.ndim == 4 else x


def load_training_data(cfg: dict[str, Any]) -> TrainingData:
    if cfg["protocol"]:
        p = load_protocol(cfg["protocol"])
        splits = {s: Split(p.images[p.indices(s)], p.labels[p.indices(s)], p.indices(s)) for s in ("train", "query", "database")}
        names, topk = p.class_names, p.spec.topk
    else:
        d = cfg["data"]
        missing = [k for k in ("train", "query", "database") if k not in d]
        if missing:
            raise ValueError(f"data needs list files for: {', '.join(missing)}")
        splits = {}
        for s in ("train", "query", "database"):
            lst = read_list_file(d[s], d.get("root"))
            splits[s] = Split(ListImages(lst, d.get("load_size", 256), cfg["workers"] or 4), lst.labels, np.arange(len(lst)))
        names = splits["train"].images.list.class_names
        topk = d.get("topk", 1000)
    for s, key in (("train", "limit_train"), ("query", "limit_query"), ("database", "limit_database")):
        if cfg[key]:
            splits[s] = splits[s].subset(np.arange(min(int(cfg[key]), len(splits[s]))))
    labels = splits["train"].labels
    n_classes = labels.shape[1] if labels.ndim == 2 else len(names)
    return TrainingData(splits["train"], splits["query"], splits["database"], n_classes, list(names), cfg["eval_topk"] or topk)


def images_to_encode(source: str, cfg: dict[str, Any]) -> tuple[Any, np.ndarray, np.ndarray | None]:
    """(images, ids, labels) to encode with a run: a split of its data, or an image / folder / list file."""
    from pathlib import Path

    if source in ("query", "database", "train"):
        split = getattr(load_training_data(cfg), source)
        return split.images, split.ids, split.labels
    path = Path(source)
    if path.is_dir():
        lst = read_unlabelled_folder(path)
    elif path.suffix.lower() in IMAGE_EXTENSIONS:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such image")
        lst = ImageList([path], None, [], [str(path)])
    elif path.is_file():
        lst = read_list_file(path)
    else:
        raise ValueError(f"{source}: not a split (query, database, train), an image, a folder or a list file")
    # load at the side the clean view is drawn at (before its centre crop), as training saw them; colour
    # reaches a grey-trained small CNN as it does in training (the CNN averages the channels)
    images = ListImages(lst, max(cfg["input_size"], round(cfg["input_size"] / cfg["crop_ratio"])))
    return images, np.arange(len(lst)), lst.labels
