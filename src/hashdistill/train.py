"""One trainer for every deep method (docs/architecture.md, "Training").

It owns the loop, the optimiser and schedule (Adam with the backbone at ``optim.backbone_lr_mult`` x lr,
linear warm-up then cosine decay per step), AMP on CUDA, atomic checkpoints after every epoch, resume,
validation and progress. It talks to the method only through its contract (``methods/base.py``): the
declarations say which views and targets a batch carries, and the hooks run the method's own stages.

Its parts live beside it: the view sources (``views.py``: kornia views of images, or cached features of a
frozen backbone), the checkpoint (``checkpoint.py``), the model and its encoding (``model.py``). Building a
``Trainer`` does nothing; ``setup()`` (which ``fit`` calls) loads the data and builds the method, the
views, the model and its optimisation. ``fit`` reads top-down: the method's prepare hook, resume or a fresh
start, then per epoch its hook, one pass over the batches (``_epoch``), and the epoch's log, validation and
checkpoint (``_end_epoch``); ``finish`` encodes and scores.

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
from .checkpoint import Optimisation, Progress, load_checkpoint, save_checkpoint
from .codes import save_codes
from .config import Config, dump_config
from .data.splits import Split, TrainingData, load_training_data
from .distributed import Distributed, shard_order
from .errors import ConfigError
from .features import clean_spec, frozen_features, images_key
from .methods import HashingMethod, TrainingContext, create_method
from .metrics import mean_average_precision
from .model import build_model, encode_images
from .progress import progress_bar
from .views import ImageViews, cached_views


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


class Trainer:
    """Train one run described by a validated ``Config`` into ``run_dir``.

    ``fit()`` runs the whole schedule (``resume=True`` continues from the last checkpoint) and returns the
    metrics; ``step(idx, rng)`` is one optimisation step on the training positions ``idx``. Building one does
    no I/O: ``setup()`` (called by ``fit``, idempotent) loads the data and builds everything else.

    Under torchrun (``dist``, docs/architecture.md "Beyond one process") the model is wrapped in
    ``DistributedDataParallel``; ``optim.batch_size`` is the per-rank batch (global = per-rank x world); rank 0
    alone writes files and runs the method's whole-set hooks, whose state it broadcasts.
    """

    def __init__(self, cfg: Config, run_dir: str | os.PathLike, progress: bool = True, dist: Distributed | None = None) -> None:
        self.cfg, self.run_dir, self.progress = cfg, Path(run_dir), progress
        self.dist = dist or Distributed()
        self.device = self.dist.device(resolve_device(cfg.runtime.device))
        self.features_seconds = 0.0
        self.reports: dict[str, Any] = {}  # what the method's hooks report, added to the metrics
        self._ready = False

    # ---------------------------------------------------------------- set-up
    def setup(self) -> Trainer:
        """Load the data, then build the method, the view transforms and source, the model and its optimisation
        (in this order: the initial weights follow the seed after the cached features are computed)."""
        if self._ready:
            return self
        cfg, seed = self.cfg, self.cfg.runtime.seed
        if cfg.runtime.num_threads:
            torch.set_num_threads(cfg.runtime.num_threads)
        self.data: TrainingData = load_training_data(cfg.data)
        self.teacher_tf, self.student_tf, self.clean_tf = (t.to(self.device) for t in view_transforms(cfg))
        self.method: HashingMethod = create_method(cfg.method, cfg.model.bits, self.data.n_classes, seed).to(self.device)
        if self.data.train.labels is None and (self.method.supervised or cfg.data.val_fraction):
            needs = f"method {cfg.method.name} reads labels" if self.method.supervised else "data.val_fraction needs labels"
            raise ConfigError(
                f"{needs}, but data.train ({cfg.data.train}) is an unlabelled folder: use an unsupervised method "
                "(method=distillhash), or a class-per-folder tree or list file"
            )
        self.val_split, self.fit_split = self._split_validation()
        # the views a batch needs: the teacher's always (the student's instead with train_view: student)
        self.need_student = self.method.views == 2 or cfg.method.train_view == "student"
        n_proxies, dim = (self.data.n_classes if self.method.uses_proxies else 0), None
        if cfg.model.mode == "cached":
            student = self.student_tf if self.need_student else None
            self.source, dim, seconds = cached_views(
                cfg, self.fit_split, self.teacher_tf, student, self.device, self._bars, self.dist
            )
            self.features_seconds += seconds
        else:
            self.source = ImageViews(self.fit_split, self.teacher_tf, self.student_tf, self.device)
        self.new_model = lambda: build_model(cfg, n_proxies, dim).to(self.device)
        by_position = self.method.targets == "positions"
        self.targets = torch.arange(len(self.fit_split)) if by_position else torch.as_tensor(self.fit_split.labels)
        n, batch = len(self.fit_split), cfg.optim.batch_size
        self.anchors = self.method.anchors_per_batch(batch)
        self.steps_per_epoch = (
            len(shard_order(np.arange(n), self.anchors, self.dist)[1])
            if self.dist.active
            else self.method.steps_per_epoch(n, batch)
        )
        self.epochs = max(cfg.schedule.epochs, -(-cfg.schedule.min_steps // self.steps_per_epoch))
        torch.manual_seed(seed)  # the initial weights (backbone, head, proxies) follow the seed
        self.opt = self._optimisation(self.new_model(), self.steps_per_epoch, wrap=True)
        self._ready = True
        return self

    @property
    def model(self) -> torch.nn.Module:
        """The run's model (unwrapped)."""
        return self.opt.model

    @property
    def _amp(self) -> bool:
        return self.device.startswith("cuda") and self.cfg.runtime.amp

    def _split_validation(self) -> tuple[Split | None, Split]:
        train = self.data.train
        n_val = int(round(len(train) * self.cfg.data.val_fraction))
        if not n_val:
            return None, train
        order = np.random.default_rng([self.cfg.runtime.seed, 7]).permutation(len(train))
        return train.subset(np.sort(order[:n_val])), train.subset(np.sort(order[n_val:]))

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

    def _optimisation(self, model: torch.nn.Module, steps_per_epoch: int, wrap: bool = False) -> Optimisation:
        """``model``'s optimiser (Adam, the backbone at ``backbone_lr_mult`` x lr, the proxies at the method's
        ``proxy_lr_mult()`` x lr), per-step schedule (over
        the run's epochs, ``schedule.epochs`` or more for ``min_steps``) and AMP scaler; ``wrap``: in
        ``DistributedDataParallel`` under torchrun."""
        o, sched = self.cfg.optim, self.cfg.schedule
        total = steps_per_epoch * self.epochs
        warmup = min(total, steps_per_epoch * sched.warmup_epochs)
        backbone = [p for p in (model.backbone.parameters() if model.backbone is not None else []) if p.requires_grad]
        mult = self.method.proxy_lr_mult()
        proxies = [model.proxies] if model.proxies is not None and mult != 1 else []  # at 1: in the head's group
        ids = {id(p) for p in backbone + proxies}
        groups = [{"params": [p for p in model.parameters() if id(p) not in ids], "lr": o.lr}]
        if backbone:
            groups.append({"params": backbone, "lr": o.lr * o.backbone_lr_mult})
        if proxies:
            groups.append({"params": proxies, "lr": o.lr * mult})
        optimizer = torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup))
        ddp = model
        if wrap and self.dist.active:
            ddp = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device] if self.device.startswith("cuda") else None
            )
        return Optimisation(model, ddp, optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=self._amp))

    def context(self) -> TrainingContext:
        """What the method's hooks see (``methods.base.TrainingContext``)."""
        self.setup()
        labels = self.fit_split.labels
        return TrainingContext(
            n=len(self.fit_split), labels=labels if self.method.supervised else None, report_labels=labels,
            seed=self.cfg.runtime.seed, run_dir=self.run_dir, frozen_features=lambda spec, desc: self.frozen_features(spec, desc),
            encode=lambda: self.encode_split(self.fit_split, "fit", shard=False), log=self._log,
            train_aside=self.train_aside,
        )  # fmt: skip

    def train_aside(self, positions: np.ndarray, epochs: int, seed: int) -> np.ndarray:
        """A child loop: a fresh model (initial weights from ``seed``) with its own optimisation, trained for the
        first ``epochs`` epochs of the run's schedule on the method's loss, batches from ``positions`` only;
        returns its codes h of the training images. For a hook (rank 0 alone under torchrun): no DDP, no
        checkpoint; the run's own model and optimisation are never touched."""
        torch.manual_seed(seed)
        batch = self.cfg.optim.batch_size
        aside = self._optimisation(self.new_model(), self.method.steps_per_epoch(len(positions), batch))
        for epoch in range(epochs):
            torch.manual_seed(seed * 100_003 + epoch)
            rng = np.random.default_rng([seed, epoch])
            batches = self.method.batches(rng.permutation(positions), batch, rng)
            for idx in progress_bar(batches, enabled=self._bars, desc=f"aside {epoch + 1}/{epochs}"):
                self.step(idx, rng, opt=aside)
        return self.encode_split(self.fit_split, "fit", shard=False, model=aside.model)

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
        """Train (from the last checkpoint when ``resume``), then encode and evaluate; returns the metrics.
        ``callback(epoch, step)`` runs after every step (tests use it to interrupt a run)."""
        self.setup()
        c, d = self.cfg, self.dist
        if d.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            _io.write_text(self.run_dir / "config.yaml", dump_config(c))
        if d.active:
            self._log(f"torchrun: {d.world} processes ({d.backend}), per-rank batch {c.optim.batch_size}, global batch "
                      f"{c.optim.batch_size * d.world}")  # fmt: skip
        ctx = self.context()
        self.reports.update(self._whole_set(lambda: self.method.prepare(ctx)))
        state = self._start(resume)
        for epoch in range(state.epoch, self.epochs):
            self.reports.update(self._whole_set(lambda epoch=epoch: self.method.on_epoch(epoch, ctx)))
            t0 = time.perf_counter()
            sums = self._epoch(epoch, callback)
            state.train_seconds += time.perf_counter() - t0
            self._end_epoch(epoch, sums, state, time.perf_counter() - t0)
        d.barrier()  # rank 0's files are complete before anyone reads them
        if c.schedule.select == "best" and (self.run_dir / "best.pt").is_file():
            self.model.load_state_dict(_io.load_tensors(self.run_dir / "best.pt", self.device))
        return self.finish(state.train_seconds)

    def _start(self, resume: bool) -> Progress:
        """Where the loop starts: the last checkpoint's state when resuming (the log cut to its epochs), else
        epoch 0 with a fresh log."""
        ckpt, log_path = self.run_dir / "checkpoint.pt", self.run_dir / "log.jsonl"
        if resume and self.dist.broadcast(ckpt.is_file()):
            state = load_checkpoint(ckpt, self.device, self.opt, self.method)
            if self.dist.main:
                _truncate_log(log_path, state.epoch)
            return state
        if log_path.exists() and self.dist.main:
            log_path.unlink()
        return Progress()

    def _epoch(self, epoch: int, callback: Callable[[int, int], None] | None) -> dict[str, float]:
        """One pass over the epoch's batches; returns the sums of the loss and its parts over this rank's
        images (key ``"images"``: how many)."""
        c, d, seed = self.cfg, self.dist, self.cfg.runtime.seed
        torch.manual_seed(seed * 100_003 + epoch + 7_919 * d.rank)  # augmentation: a function of (seed, epoch, rank)
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(self.fit_split))  # the same on every rank
        if d.active:  # each rank's own draws (views, neighbours): reproducible for a given world size
            rng = np.random.default_rng([seed, epoch, d.rank])
        mine, weights = shard_order(order, self.anchors, d) if d.active else (order, itertools.repeat(1.0))
        sums: dict[str, float] = {}
        seen = 0
        batches = self.method.batches(mine, c.optim.batch_size, rng)
        bar = progress_bar(
            batches,
            enabled=self._bars,
            announce=False,
            total=self.steps_per_epoch,
            desc=f"epoch {epoch + 1}/{self.epochs}",
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
        return {**sums, "images": seen}

    def _end_epoch(self, epoch: int, sums: dict[str, float], state: Progress, seconds: float) -> None:
        """The epoch's log row (its means over every rank's images), validation and ``best.pt``, the checkpoint."""
        c, d = self.cfg, self.dist
        *totals, seen = d.sum(list(sums.values()))  # "images" is last
        row = {"epoch": epoch + 1, "lr": self.opt.scheduler.get_last_lr()[0], "seconds": round(seconds, 2)}
        row.update({k: v / max(1, seen) for k, v in zip(list(sums)[:-1], totals)})
        if self.val_split is not None:
            row["val_map"] = self.validate()
            if c.schedule.select == "best" and row["val_map"] > state.best:
                state.best = row["val_map"]
                if d.main:
                    _io.atomic_write(self.run_dir / "best.pt", lambda f: torch.save(self.model.state_dict(), f))
        state.epoch = epoch + 1
        if d.main:
            with open(self.run_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            save_checkpoint(self.run_dir / "checkpoint.pt", self.opt, self.method, state)
        self._log(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))

    def step(
        self, idx: np.ndarray, rng: np.random.Generator, weight: float = 1.0, opt: Optimisation | None = None
    ) -> dict[str, float]:
        """One optimisation step on the training positions ``idx`` (of ``opt``, default the run's); returns the
        loss and its parts. ``weight`` scales this rank's loss where the global batch split unevenly
        (``distributed.shard_order``)."""
        opt = opt or self.opt
        opt.model.train()
        on_student = self.method.views == 1 and self.cfg.method.train_view == "student"
        activate = not self.method.uses_logits
        with torch.autocast("cuda", enabled=self._amp):
            x_t, x_s = self.source.views(idx, rng, self.need_student)
            if on_student:  # a one-view method trained on T_S (DHD's Table 3, "-SdH")
                x_t, x_s = x_s, None
            if x_s is not None:  # one pass over both views
                h = opt.ddp(torch.cat([x_t, x_s]), activate)
                h_t, h_s = h[: len(idx)], h[len(idx) :]
            else:
                h_t, h_s = opt.ddp(x_t, activate), None
            y = self.targets[idx].to(self.device)
            parts = self.method(h_t.float(), None if h_s is None else h_s.float(), y, opt.model.proxies)
        opt.optimizer.zero_grad(set_to_none=True)
        opt.scaler.scale(parts["loss"] * weight if weight != 1.0 else parts["loss"]).backward()
        opt.scaler.step(opt.optimizer)
        opt.scaler.update()
        opt.scheduler.step()
        return {k: float(v.detach()) for k, v in parts.items()}

    # ---------------------------------------------------------------- encoding
    @torch.inference_mode()
    def encode_split(self, split: Split, part: str, shard: bool = True, model: torch.nn.Module | None = None) -> np.ndarray:
        """Continuous codes h of a split's clean views through ``model`` (default: the run's); ``shard``: every
        rank takes part (every rank gets them all), else this process alone (a hook on rank 0)."""
        model = model or self.model
        model.eval()
        if shard:
            self.dist.sync_buffers(model)  # one set of BatchNorm statistics: rank 0's
        if self.cfg.model.mode == "cached":
            f = self.frozen_features(clean_spec(self.cfg), part, split, shard)
            chunks = [
                model(torch.from_numpy(np.asarray(f[a : a + 4096], np.float32)).to(self.device)) for a in range(0, len(f), 4096)
            ]
            return torch.cat(chunks).float().cpu().numpy()
        b = self.cfg.runtime.feature_batch
        return encode_images(model, self.clean_tf, split.images, b, dist=self.dist if shard else None)

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
            "encode_seconds": round(encode_seconds, 1), "epochs": self.epochs, "seed": c.runtime.seed,
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
