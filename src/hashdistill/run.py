"""``Run``: a trained run folder, loaded once (docs/architecture.md, "Runs").

Everything that reads a run goes through it: the CLI's ``encode`` / ``evaluate`` / ``report``, the
robustness suite and the report. It reads ``config.yaml`` (the validated config) and ``checkpoint.pt``
with ``weights_only=True``, so opening someone else's run folder never runs their code.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ._io import load_tensors
from .augment import view_transforms
from .codes import PackedCodes, load_codes, pack
from .config import Config, ConfigError, parse_config
from .data.lists import read_images
from .data.splits import Split, TrainingData, load_training_data
from .distributed import Distributed
from .errors import ModelError
from .model import HashModel, build_model, encode_images

SHAPE_KEYS = (("model", "bits"), ("model", "backbone"), ("model", "head_hidden"), ("model", "mode"), ("model", "layer"))


class RunError(ModelError):
    """A folder that is not a readable trained run; the message names the file."""


class Run:
    """A trained run: its config, model, clean transform, codes and metrics.

    >>> run = Run.load("runs/demo")
    >>> h = run.encode(images)                    # continuous codes in [-1, 1]^K of uint8 images (N, H, W[, C])
    >>> codes = run.codes("database")             # packed binary codes, as saved by training
    >>> run.metrics["map_at_1000"]
    """

    def __init__(self, path: Path, config: Config, model: HashModel, device: str = "cpu") -> None:
        self.path, self.config, self.model, self.device = Path(path), config, model, device
        self._codes: dict[str, np.ndarray] = {}
        self._h: dict[str, np.ndarray] = {}

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> Run:
        """Open a run folder written by ``hashdistill train``; the weights of the selected epoch."""
        path = Path(path)
        if not path.is_dir():
            raise RunError(f"{path}: no such run folder")
        cfg_path, ckpt = path / "config.yaml", path / "checkpoint.pt"
        for f in (cfg_path, ckpt):
            if not f.is_file():
                raise RunError(f"{path}: no {f.name} (not a trained run folder)")
        try:
            raw = yaml.safe_load(cfg_path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError) as e:
            raise RunError(f"{cfg_path}: unreadable config ({str(e).splitlines()[0]})") from None
        missing = [s for s in ("data", "model", "method") if not isinstance(raw, dict) or s not in raw]
        if missing:
            raise RunError(f"{cfg_path}: not a run's config (no {', '.join(missing)}; training writes every section)")
        for section, key in SHAPE_KEYS:  # a default would build weights of another shape and blame the checkpoint
            if not isinstance(raw.get(section), dict) or key not in raw[section]:
                raise RunError(f"{cfg_path}: {section}.{key} is missing (it decides the weights' shapes; training "
                               "writes every key)")  # fmt: skip
        try:
            config = parse_config(raw, str(cfg_path))
        except ConfigError as e:
            raise RunError(f"{cfg_path}: {e}") from None
        best = path / "best.pt"
        use_best = config.schedule.select == "best" and best.is_file()
        weights = load_tensors(best if use_best else ckpt)
        if not use_best:
            weights = weights.get("model") if isinstance(weights, dict) else None
        if not isinstance(weights, dict):
            raise RunError(f"{ckpt}: no model weights")
        proxies = weights.get("proxies")
        model = build_model(config, proxies.shape[0] if isinstance(proxies, torch.Tensor) else 0)
        try:  # cached mode: the checkpoint holds the head (and proxies); the backbone is the frozen one
            keys = model.load_state_dict(weights, strict=config.model.mode != "cached")
        except RuntimeError as e:  # torch's first line is a heading; the second says what differs
            lines = [x.strip() for x in str(e).splitlines() if x.strip()]
            detail = (lines[1] if len(lines) > 1 else lines[0] if lines else "")[:160]
            raise RunError(f"{ckpt}: the weights do not fit the run's config ({detail})") from None
        # a cached run's head comes whole from its checkpoint, and nothing in it goes unused (feature_norm's statistics)
        for what, names in (("missing", [k for k in keys.missing_keys if not k.startswith("backbone.")]),
                            ("unexpected", keys.unexpected_keys)):  # fmt: skip
            if names:
                raise RunError(f"{ckpt}: the weights do not fit the run's config ({what} {', '.join(names[:3])})")
        return cls(path, config, model.to(device).eval(), device)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def bits(self) -> int:
        return self.config.model.bits

    @property
    def load_size(self) -> int | None:
        """The side image files are read at before the clean view, as the run's own images were: a protocol's
        images at their own size, files named in ``data`` at ``data.load_size``."""
        return None if self.config.data.protocol else self.config.data.load_size

    @cached_property
    def clean(self) -> torch.nn.Module:
        """The clean-view transform (resize, crop, normalise) images go through before the model."""
        return view_transforms(self.config)[2].to(self.device)

    @cached_property
    def data(self) -> TrainingData:
        """The run's own train / query / database splits."""
        return load_training_data(self.config.data)

    @cached_property
    def metrics(self) -> dict[str, Any]:
        """``metrics.json`` as training wrote it (empty when missing)."""
        return self._json("metrics.json")

    @cached_property
    def purity(self) -> dict[str, Any]:
        """``purity.json``, DistillHash's pair report with its curve (empty for other methods)."""
        return self._json("purity.json")

    def _json(self, name: str) -> dict[str, Any]:
        path = self.path / name
        if not path.is_file():
            return {}
        try:
            out = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RunError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(out, dict):
            raise RunError(f"{path}: expected a JSON object")
        return out

    @property
    def proxies(self) -> torch.Tensor | None:
        return None if self.model.proxies is None else self.model.proxies.detach()

    def encode(
        self, images: Any, batch: int | None = None, progress: bool = False, dist: Distributed | None = None,
        features: bool = False,
    ) -> np.ndarray:  # fmt: skip
        """Continuous codes h in [-1, 1]^K (float32, sign = the binary code) of images: a uint8 array
        (N, H, W) or (N, H, W, C), or an ``ImageList``; with ``features``, rows [h | f], f the backbone's
        features (``HashModel.with_features``). Under torchrun (``dist``) the ranks share the batches and each
        gets every code."""
        batch = batch or self.config.runtime.feature_batch
        return encode_images(self.model, self.clean, images, batch, progress, dist, features)

    def h(self, split: str) -> np.ndarray:
        """Continuous codes of one of the run's splits, encoded once."""
        if split not in self._h:
            self._h[split] = self.encode(self.data.split(split).images)
        return self._h[split]

    def codes(self, split: str) -> PackedCodes:
        """The codes of one of the run's splits: the saved ones when they match the split, else encoded."""
        if split not in self._codes:
            s = self.data.split(split)
            saved = self.path / f"codes-{split}.npz"
            codes, ids, _ = load_codes(saved, self.bits) if saved.is_file() else (None, None, None)
            if codes is None or ids is None or not np.array_equal(ids, s.ids):
                codes = pack(self.encode(s.images))
            self._codes[split] = codes
        return self._codes[split]

    def split_images(self, split: str) -> tuple[Any, np.ndarray, np.ndarray | None]:
        """(images, ids, labels) of one of the run's splits (train, query, database)."""
        s: Split = self.data.split(split)
        return s.images, s.ids, s.labels

    def read_images(
        self, path: str | os.PathLike, allow_outside_root: bool = False, max_pixels: int | None = None
    ) -> tuple[Any, np.ndarray, np.ndarray | None]:
        """(images, positions, labels or ``None``) of your files: an image file, a folder of images, or a list
        file (labelled or not), read as the run's own images were (``load_size``; ``data.max_pixels`` unless
        ``max_pixels``)."""
        limit = max_pixels or self.config.data.max_pixels
        lst = read_images(path, allow_outside_root=allow_outside_root, max_pixels=limit)
        # colour reaches a grey-trained small CNN as it does in training (the CNN averages the channels)
        return lst.at_size(self.load_size), np.arange(len(lst)), lst.labels
