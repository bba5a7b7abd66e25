"""One trainer for every deep method (docs/architecture.md, "Training").

It owns the loop, the optimiser and schedule (Adam with the backbone at ``optim.backbone_lr_mult`` x lr,
linear warm-up then cosine decay per step), AMP on CUDA, atomic checkpoints after every epoch, resume,
validation and progress. It talks to the method only through its contract (``methods/base.py``): the
declarations say which views and targets a batch carries, and the hooks run the method's own stages.

Two sources of views: ``end-to-end`` (kornia views of images through the backbone) and ``cached`` (a
frozen backbone's features of V teacher / student views, computed once; ``features.py``).

A run folder holds ``config.yaml``, ``checkpoint.pt`` (tensors and numbers only), ``log.jsonl``,
``metrics.json`` and the codes of the query and database splits (``codes-query.npz``,
``codes-database.npz``); ``hashdistill.Run`` loads it.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from . import _io
from .augment import view_transforms
from .backbones import create_backbone
from .codes import save_codes
from .config import Config, dump_config
from .data.splits import Split, TrainingData, digest, load_training_data, take
from .distributed import Distributed, shard_order
from .errors import ConfigError
from .features import FEATURES_VERSION, FeatureCache, frozen_features, images_key, view_features, weights_key
from .methods import HashingMethod, TrainingContext, create_method
from .metrics import mean_average_precision
from .model import build_model, encode_images
from .progress import progress_bar


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; any other name as given."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class ImageViews:
    """End-to-end source: augmented teacher / student views of image batches."""

    def __init__(self, split: Split, teacher: torch.nn.Module, student: torch.nn.Module, device: str) -> None:
        self.split, self.teacher, self.student, self.device = split, teacher, student, device

    def views(self, idx: np.ndarray, rng: np.random.Generator, need_student: bool):
        x = take(self.split.images, idx).to(self.device)
        return self.teacher(x), (self.student(x) if need_student else None)


class CachedViews:
    """Cached source: per image, one of its V teacher and V student feature views, drawn at random."""

    def __init__(self, teacher: np.ndarray, student: np.ndarray | None, device: str) -> None:
        self.teacher, self.student, self.device = teacher, student, device

    def views(self, idx: np.ndarray, rng: np.random.Generator, need_student: bool):
        v = self.teacher.shape[1]
        vt, vs = rng.integers(0, v, len(idx)), rng.integers(0, v, len(idx))
        ft = torch.from_numpy(np.asarray(self.teacher[idx, vt], np.float32)).to(self.device)
        fs = torch.from_numpy(np.asarray(self.student[idx, vs], np.float32)).to(self.device) if need_student else None
        return ft, fs


class Trainer:
    """Train one run described by a validated ``Config`` into ``run_dir``.

    ``fit()`` runs the whole schedule (``resume=True`` continues from the last checkpoint) and returns the
    metrics; ``step(idx, rng)`` is one optimisation step on the training positions ``idx``.

    Under torchrun (``dist``, docs/architecture.md "Beyond one process") the model is wrapped in
    ``DistributedDataParallel``; ``optim.batch_size`` is the per-rank batch (global = per-rank x world); rank 0
    alone writes files and runs the method's whole-set hooks, whose state it broadcasts.
    """

    def __init__(self, cfg: Config, run_dir: str | os.PathLike, progress: bool = True, dist: Distributed | None = None) -> None:
        self.cfg, self.run_dir, self.progress = cfg, Path(run_dir), progress
        self.dist = dist or Distributed()
        self.device = self.dist.device(resolve_device(cfg.runtime.device))
        if cfg.runtime.num_threads:
            torch.set_num_threads(cfg.runtime.num_threads)
        self.data: TrainingData = load_training_data(cfg.data)
        self.teacher_tf, self.student_tf, self.clean_tf = (t.to(self.device) for t in view_transforms(cfg))
        seed = cfg.runtime.seed
        self.method: HashingMethod = create_method(cfg.method, cfg.model.bits, self.data.n_classes, seed).to(self.device)
        if self.data.train.labels is None and (self.method.supervised or cfg.data.val_fraction):
            needs = f"method {cfg.method.name} reads labels" if self.method.supervised else "data.val_fraction needs labels"
            raise ConfigError(
                f"{needs}, but data.train ({cfg.data.train}) is an unlabelled folder: use an unsupervised method "
                "(method=distillhash), or a class-per-folder tree or list file"
            )
        self.features_seconds = 0.0
        self.reports: dict[str, Any] = {}  # what the method's hooks report, added to the metrics
        self.val_split, self.fit_split = self._split_validation()
        # the views a batch needs: the teacher's always (the student's instead with train_view: student)
        self.need_student = self.method.views == 2 or cfg.method.train_view == "student"
        n_proxies = self.data.n_classes if self.method.uses_proxies else 0
        if cfg.model.mode == "cached":
            dim = self._prepare_cached()
            self.new_model = lambda: build_model(cfg, n_proxies, dim).to(self.device)
        else:
            self.new_model = lambda: build_model(cfg, n_proxies).to(self.device)
            self.source = ImageViews(self.fit_split, self.teacher_tf, self.student_tf, self.device)
        torch.manual_seed(seed)  # the initial weights (backbone, head, proxies) follow the seed
        self.model = self.new_model()
        self.ddp = self.model
        if self.dist.active:
            ids = [self.device] if self.device.startswith("cuda") else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        by_position = self.method.targets == "positions"
        self.targets = torch.arange(len(self.fit_split)) if by_position else torch.as_tensor(self.fit_split.labels)
        o = cfg.optim
        n = len(self.fit_split)
        self.anchors = self.method.anchors_per_batch(o.batch_size)
        self.steps_per_epoch = (
            len(shard_order(np.arange(n), self.anchors, self.dist)[1])
            if self.dist.active
            else self.method.steps_per_epoch(n, o.batch_size)
        )
        self.optimizer, self.scheduler, self.scaler = self._optimisation(self.steps_per_epoch)

    @property
    def _amp(self) -> bool:
        return self.device.startswith("cuda") and self.cfg.runtime.amp

    # ---------------------------------------------------------------- set-up
    def _split_validation(self) -> tuple[Split | None, Split]:
        train = self.data.train
        n_val = int(round(len(train) * self.cfg.data.val_fraction))
        if not n_val:
            return None, train
        order = np.random.default_rng([self.cfg.runtime.seed, 7]).permutation(len(train))
        return train.subset(np.sort(order[:n_val])), train.subset(np.sort(order[n_val:]))

    def _feature_key(self, part: str, split: Split) -> dict[str, Any]:
        m, a = self.cfg.model, self.cfg.augment
        return {
            "version": FEATURES_VERSION,
            "backbone": m.backbone, "pretrained": weights_key(m.pretrained), "input_size": m.input_size,
            **({"layer": m.layer} if m.layer is not None else {}),
            "crop_ratio": a.crop_ratio, "crop_scale": list(a.crop_scale), "s_teacher": a.s_teacher,
            "views": a.views, "seed": self.cfg.runtime.seed, "data": self.cfg.data.source, "part": part,
            "n": len(split), "ids": digest(split.ids), **({"files": split.files} if split.files else {}),
        }  # fmt: skip

    def _prepare_cached(self) -> int:
        """Frozen-backbone features of the training views (computed once); returns their width (the head's input)."""
        c = self.cfg
        backbone, dim = create_backbone(
            c.model.backbone, c.model.pretrained, layer=c.model.layer, input_size=c.model.input_size
        )
        self.backbone = backbone.to(self.device).eval()
        cache = FeatureCache(self._feature_key("train-views", self.fit_split))
        # student views only for a loss that sees them (or trains on them): each view costs a backbone pass
        ft, fs = view_features(
            cache, self.backbone, self.fit_split.images, self.teacher_tf, self.student_tf if self.need_student else None,
            c.augment.views, c.runtime.seed, c.runtime.feature_batch, self.device, self._bars, self.dist,
        )  # fmt: skip
        self.features_seconds += cache.seconds
        self.source = CachedViews(ft, fs, self.device)
        return dim

    def frozen_features(self, spec: dict[str, Any], desc: str, split: Split | None = None, shard: bool = False) -> np.ndarray:
        """Clean-view features of a split (default: the training images) from a frozen backbone ``spec``,
        computed once and shared with the shallow baselines on the same images (``features.frozen_features``);
        ``shard``: every rank takes part (not from a hook, which runs on rank 0 alone)."""
        split = self.fit_split if split is None else split
        key = images_key(self.cfg.data.source, split.ids, split.files)
        b, d = self.cfg.runtime.feature_batch, self.dist if shard else None
        f, seconds = frozen_features(spec, split.images, key, b, self.device, self._bars, desc, d)
        self.features_seconds += seconds
        return f

    def _optimisation(self, steps_per_epoch: int) -> tuple[torch.optim.Optimizer, Any, torch.amp.GradScaler]:
        """The optimiser, the schedule (per step, over ``schedule.epochs``) and the AMP scaler of ``self.model``."""
        total = steps_per_epoch * self.cfg.schedule.epochs
        warmup = min(total, steps_per_epoch * self.cfg.schedule.warmup_epochs)
        optimizer = self._optimizer()
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup))
        return optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=self._amp)

    def _optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        backbone = [p for p in (self.model.backbone.parameters() if self.model.backbone is not None else []) if p.requires_grad]
        ids = {id(p) for p in backbone}
        rest = [p for p in self.model.parameters() if id(p) not in ids]
        groups = [{"params": rest, "lr": o.lr}]
        if backbone:
            groups.append({"params": backbone, "lr": o.lr * o.backbone_lr_mult})
        return torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)

    def context(self) -> TrainingContext:
        """What the method's hooks see (``methods.base.TrainingContext``)."""
        labels = self.fit_split.labels
        return TrainingContext(
            n=len(self.fit_split), labels=labels if self.method.supervised else None, report_labels=labels,
            seed=self.cfg.runtime.seed, run_dir=self.run_dir, frozen_features=lambda spec, desc: self.frozen_features(spec, desc),
            encode=lambda: self.encode_split(self.fit_split, "fit", shard=False), log=self._log,
            train_aside=self.train_aside,
        )  # fmt: skip

    def train_aside(self, positions: np.ndarray, epochs: int, seed: int) -> np.ndarray:
        """A fresh model (initial weights from ``seed``) trained for the first ``epochs`` epochs of the run's
        schedule on the method's loss, batches from ``positions`` only; returns its codes h of the training images.
        For a hook (rank 0 alone under torchrun): no DDP, no checkpoint; the run's own model is put back after."""
        kept = self.model, self.ddp, self.optimizer, self.scheduler, self.scaler
        try:
            torch.manual_seed(seed)
            self.model = self.ddp = self.new_model()
            batch = self.cfg.optim.batch_size
            self.optimizer, self.scheduler, self.scaler = self._optimisation(self.method.steps_per_epoch(len(positions), batch))
            for epoch in range(epochs):
                torch.manual_seed(seed * 100_003 + epoch)
                rng = np.random.default_rng([seed, epoch])
                batches = self.method.batches(rng.permutation(positions), batch, rng)
                for idx in progress_bar(batches, enabled=self._bars, desc=f"aside {epoch + 1}/{epochs}"):
                    self.step(idx, rng)
            return self.encode_split(self.fit_split, "fit", shard=False)
        finally:
            self.model, self.ddp, self.optimizer, self.scheduler, self.scaler = kept

    @property
    def _bars(self) -> bool:
        return self.progress and self.dist.main

    def _log(self, text: str) -> None:
        if self._bars:
            tqdm.write(text, file=sys.stderr)  # stdout is for results (train prints its metrics as JSON)

    def _whole_set(self, hook: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run a method hook (``prepare`` / ``on_epoch``): on rank 0 alone under torchrun, which then sends the
        state it changed (the method's ``shared`` attributes) and its report to the other ranks."""
        if not self.dist.active:
            return hook()
        before = self.method.shared_state()
        reports = hook() if self.dist.main else {}
        after = self.method.shared_state()
        if self.dist.broadcast(any(after[k] is not before[k] for k in after)):
            state = self.dist.broadcast(after if self.dist.main else None)
            if not self.dist.main:
                self.method.load_shared_state(state)
        return self.dist.broadcast(reports)

    # ---------------------------------------------------------------- training
    def fit(self, resume: bool = False, callback: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Train (from the last checkpoint when ``resume``), then encode and evaluate; returns the metrics."""
        c, d = self.cfg, self.dist
        if d.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            _io.write_text(self.run_dir / "config.yaml", dump_config(c))
        if d.active:
            self._log(f"torchrun: {d.world} processes ({d.backend}), per-rank batch {c.optim.batch_size}, global batch "
                      f"{c.optim.batch_size * d.world}")  # fmt: skip
        ctx = self.context()
        self.reports.update(self._whole_set(lambda: self.method.prepare(ctx)))
        start, best, train_seconds = 0, -1.0, 0.0
        ckpt, log_path = self.run_dir / "checkpoint.pt", self.run_dir / "log.jsonl"
        if resume and d.broadcast(ckpt.is_file()):
            state = _io.load_tensors(ckpt, self.device)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state.get("scaler", {}))
            if "method" in state:  # the method's own state (ADSH's V, DSDH's B, DistillHash's stage-1 outputs, ...)
                self.method.load_state_dict(state["method"])
            start, best, train_seconds = int(state["epoch"]), float(state["best"]), float(state["train_seconds"])
            if d.main:
                _truncate_log(log_path, start)
        elif log_path.exists() and d.main:
            log_path.unlink()
        seed, epochs, n = c.runtime.seed, c.schedule.epochs, len(self.fit_split)
        for epoch in range(start, epochs):
            self.reports.update(self._whole_set(lambda epoch=epoch: self.method.on_epoch(epoch, ctx)))
            t0 = time.perf_counter()
            torch.manual_seed(seed * 100_003 + epoch + 7_919 * d.rank)  # augmentation: a function of (seed, epoch, rank)
            rng = np.random.default_rng([seed, epoch])
            order = rng.permutation(n)  # the same on every rank
            if d.active:  # each rank's own draws (views, neighbours): reproducible for a given world size
                rng = np.random.default_rng([seed, epoch, d.rank])
            mine, weights = shard_order(order, self.anchors, d) if d.active else (order, itertools.repeat(1.0))
            sums: dict[str, float] = {}
            seen = 0
            batches = self.method.batches(mine, c.optim.batch_size, rng)
            bar = progress_bar(
                batches, enabled=self._bars, announce=False, total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{epochs}"
            )  # its end is the epoch's log line
            for step, (idx, weight) in enumerate(zip(bar, weights)):
                self.method.on_step(epoch * self.steps_per_epoch + step)
                parts = self.step(idx, rng, weight)
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v * len(idx)
                seen += len(idx)
                bar.set_postfix(loss=f"{parts['loss']:.4f}")
                if callback is not None:
                    callback(epoch, step)
            train_seconds += time.perf_counter() - t0
            *totals, seen = d.sum([*sums.values(), seen])  # the epoch's means over every rank's images
            row = {"epoch": epoch + 1, "lr": self.scheduler.get_last_lr()[0], "seconds": round(time.perf_counter() - t0, 2)}
            row.update({k: v / max(1, seen) for k, v in zip(sums, totals)})
            if self.val_split is not None:
                row["val_map"] = self.validate()
                if c.schedule.select == "best" and row["val_map"] > best:
                    best = row["val_map"]
                    if d.main:
                        _io.atomic_write(self.run_dir / "best.pt", lambda f: torch.save(self.model.state_dict(), f))
            if d.main:
                with open(log_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                state = {
                    "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                    "method": self.method.state_dict(), "epoch": epoch + 1, "best": best,
                    "train_seconds": train_seconds,
                }  # fmt: skip
                _io.atomic_write(ckpt, lambda f, state=state: torch.save(state, f))
            self._log(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
        d.barrier()  # rank 0's files are complete before anyone reads them
        if c.schedule.select == "best" and (self.run_dir / "best.pt").is_file():
            self.model.load_state_dict(_io.load_tensors(self.run_dir / "best.pt", self.device))
        return self.finish(train_seconds)

    def step(self, idx: np.ndarray, rng: np.random.Generator, weight: float = 1.0) -> dict[str, float]:
        """One optimisation step on the training positions ``idx``; returns the loss and its parts. ``weight``
        scales this rank's loss where the global batch split unevenly (``distributed.shard_order``)."""
        self.model.train()
        on_student = self.method.views == 1 and self.cfg.method.train_view == "student"
        activate = not self.method.uses_logits
        with torch.autocast("cuda", enabled=self._amp):
            x_t, x_s = self.source.views(idx, rng, self.need_student)
            if on_student:  # a one-view method trained on T_S (DHD's Table 3, "-SdH")
                x_t, x_s = x_s, None
            if x_s is not None:  # one pass over both views
                h = self.ddp(torch.cat([x_t, x_s]), activate)
                h_t, h_s = h[: len(idx)], h[len(idx) :]
            else:
                h_t, h_s = self.ddp(x_t, activate), None
            y = self.targets[idx].to(self.device)
            parts = self.method(h_t.float(), None if h_s is None else h_s.float(), y, self.model.proxies)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(parts["loss"] * weight if weight != 1.0 else parts["loss"]).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {k: float(v.detach()) for k, v in parts.items()}

    # ---------------------------------------------------------------- encoding
    @torch.inference_mode()
    def encode_split(self, split: Split, part: str, shard: bool = True) -> np.ndarray:
        """Continuous codes h of a split's clean views; ``shard``: every rank takes part (every rank gets them
        all), else this process alone (a hook on rank 0)."""
        self.model.eval()
        if shard:
            self.dist.sync_buffers(self.model)  # one set of BatchNorm statistics: rank 0's
        if self.cfg.model.mode == "cached":
            m = self.cfg.model
            spec = {"backbone": m.backbone, "pretrained": m.pretrained, "input_size": m.input_size, "layer": m.layer,
                    "crop_ratio": self.cfg.augment.crop_ratio}  # fmt: skip
            f = self.frozen_features(spec, part, split, shard)
            chunks = [
                self.model(torch.from_numpy(np.asarray(f[a : a + 4096], np.float32)).to(self.device))
                for a in range(0, len(f), 4096)
            ]
            return torch.cat(chunks).float().cpu().numpy()
        b = self.cfg.runtime.feature_batch
        return encode_images(self.model, self.clean_tf, split.images, b, dist=self.dist if shard else None)

    def validate(self) -> float:
        """mAP@K of the validation split against the rest of the training set (never the queries)."""
        q = self.encode_split(self.val_split, "val")
        db = self.encode_split(self.fit_split, "fit")
        return mean_average_precision(q, db, self.val_split.labels, self.fit_split.labels, topk=self.data.topk)

    def finish(self, train_seconds: float) -> dict[str, Any]:
        """Encode the query and database splits (where given; under torchrun every rank encodes a share), save
        their codes, score them when both are labelled, and write ``metrics.json`` (rank 0); every rank returns
        the metrics."""
        c, data, d = self.cfg, self.data, self.dist
        t0 = time.perf_counter()
        codes = {}
        for name in ("query", "database"):
            split = getattr(data, name)
            if split is not None:
                codes[name] = self.encode_split(split, name)
                if d.main:
                    save_codes(self.run_dir / f"codes-{name}.npz", codes[name], split.ids, split.labels)
        encode_seconds = time.perf_counter() - t0
        if not d.main:
            return d.broadcast(None)
        if data.evaluated:
            scores = data.score(codes["query"], codes["database"])
        else:
            scores = {}
            self._log("no labelled data.query / data.database: trained without evaluation")
        metrics = {
            "name": c.run_name, "protocol": c.data.protocol, "method": c.method.name, "bits": c.model.bits,
            "backbone": c.model.backbone, "mode": c.model.mode, **scores, "evaluated": data.evaluated,
            "train_seconds": round(train_seconds, 1), "features_seconds": round(self.features_seconds, 1),
            "encode_seconds": round(encode_seconds, 1), "epochs": c.schedule.epochs, "seed": c.runtime.seed,
            **({"world_size": d.world, "global_batch": c.optim.batch_size * d.world} if d.active else {}),
            **self.reports,
        }  # fmt: skip
        _io.write_json(self.run_dir / "metrics.json", metrics)
        return d.broadcast(metrics)


def _truncate_log(path: Path, epochs: int) -> None:
    """Keep the log rows of the epochs a resumed run keeps (drop any from an unfinished epoch)."""
    if path.is_file():
        rows = [r for r in path.read_text().splitlines() if r.strip() and json.loads(r)["epoch"] <= epochs]
        _io.write_text(path, "".join(r + "\n" for r in rows))


def train(cfg: Config, run_dir: str | os.PathLike, resume: bool = False, progress: bool = True, **kw: Any) -> dict[str, Any]:
    """Train a run into ``run_dir`` and return its metrics (``Trainer(cfg, run_dir).fit(resume)``), as one process
    or as one of torchrun's. A run that fails before its first checkpoint leaves no folder behind; a later
    failure leaves one ``--resume`` continues."""
    dist = Distributed.from_env(resolve_device(cfg.runtime.device))
    try:
        keep = (lambda d: (d / "checkpoint.pt").is_file()) if dist.main else (lambda d: True)
        with _io.removed_on_failure(run_dir, keep=keep):
            return Trainer(cfg, run_dir, progress, dist).fit(resume, **kw)
    finally:
        dist.close()
