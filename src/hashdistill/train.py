"""One trainer for every deep method.

Adam with the backbone at ``backbone_lr_mult`` x lr, weight decay, linear warm-up then cosine decay
per step, seeded per epoch (so ``resume`` continues exactly), AMP on CUDA, a progress bar, a JSONL
log of losses (and validation mAP), and an atomic checkpoint after every epoch. Two sources of
views share it: ``end-to-end`` (kornia views of images through the backbone) and ``cached``
(a frozen backbone's features of V teacher / student views, computed once; see ``features.py``).

A run folder holds ``config.yaml``, ``checkpoint.pt``, ``log.jsonl``, ``metrics.json`` and the
codes of the query and database splits (``codes-query.npz``, ``codes-database.npz``).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from . import _io
from .augment import view_groups
from .backbones import IMAGENET_MEAN, IMAGENET_STD, create_backbone, is_imagenet
from .codes import save_codes
from .config import dump_config
from .datasets import Split, TrainingData, load_training_data, take
from .features import FEATURES_VERSION, FeatureCache, digest, frozen_features, images_key, view_features
from .methods import SelfDistilled, create_method
from .metrics import mean_average_precision
from .model import HashModel


def _device(cfg: dict[str, Any]) -> str:
    if cfg["device"] == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return cfg["device"]


def transforms(cfg: dict[str, Any]) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(teacher, student, clean) view transforms for the run's backbone."""
    norm = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD} if is_imagenet(cfg["backbone"]) else {}
    return view_groups(
        cfg["input_size"], cfg["s_teacher"], crop_ratio=cfg["crop_ratio"], crop_scale=tuple(cfg["crop_scale"]), **norm
    )


def build_model(cfg: dict[str, Any], n_proxies: int, feature_dim: int | None = None) -> HashModel:
    """The trained module: full model end to end, head (+ proxies) over features in cached mode."""
    hidden = cfg.get("head_hidden") or 0
    if cfg["mode"] == "cached":
        return HashModel(cfg["bits"], None, n_proxies=n_proxies, feature_dim=feature_dim, hidden=hidden)
    return HashModel(cfg["bits"], cfg["backbone"], cfg["pretrained"], n_proxies, layer=cfg.get("backbone_layer"), hidden=hidden)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class ImageViews:
    """End-to-end source: augmented teacher / student views of image batches."""

    def __init__(self, split: Split, teacher: nn.Module, student: nn.Module, device: str) -> None:
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
    """Train one run described by a resolved config into ``run_dir``."""

    def __init__(self, cfg: dict[str, Any], run_dir: str | os.PathLike, progress: bool = True) -> None:
        self.cfg, self.run_dir, self.progress = cfg, Path(run_dir), progress
        self.device = _device(cfg)
        if cfg["num_threads"]:
            torch.set_num_threads(int(cfg["num_threads"]))
        self.data: TrainingData = load_training_data(cfg)
        self.teacher_tf, self.student_tf, self.clean_tf = (t.to(self.device) for t in transforms(cfg))
        self.method = create_method(
            cfg["method"], bits=cfg["bits"], n_classes=self.data.n_classes, seed=cfg["seed"],
            method_params=cfg["method_params"], temperature=cfg["temperature"], lambda1=cfg["lambda1"],
            lambda2=cfg["lambda2"], sigma=cfg["sigma"], quantize_proxies=cfg["quantize_proxies"], pairs=cfg["pairs"],
        ).to(self.device)  # fmt: skip
        # what each batch's codes are scored by: the method, or the method + L_SdH (config `sdh`)
        self.criterion = SelfDistilled(self.method, cfg["lambda1"]) if cfg["sdh"] else self.method
        self.features_seconds = 0.0
        self.report: dict[str, Any] = {}  # a pair method's purity report
        self.stage0: dict[str, Any] = {}  # what a method's stage 0 reports (CNNH: its stage-1 residuals)
        # supervised methods see the batch's labels; pair-based unsupervised ones (and CNNH, whose
        # targets are per-image codes) see the batch's positions in the training set
        self.uses_labels = getattr(self.method, "uses_labels", True)
        self.n_proxies = self.data.n_classes if getattr(self.method, "needs_proxies", False) else 0
        self._split_validation()
        if cfg["mode"] == "cached":
            self._prepare_cached()
        else:
            torch.manual_seed(cfg["seed"])  # the initial weights (backbone, head, proxies) follow the seed
            self.model = build_model(cfg, self.n_proxies).to(self.device)
            self.source = ImageViews(self.fit_split, self.teacher_tf, self.student_tf, self.device)
        by_position = not self.uses_labels or getattr(self.method, "by_position", False)
        self.targets = torch.arange(len(self.fit_split)) if by_position else torch.as_tensor(self.fit_split.labels)
        if hasattr(self.method, "setup"):
            self._setup_pairs()
        if hasattr(self.method, "prepare"):  # a method's stage 0 from the training labels (CNNH's target codes)
            self.stage0 = self.method.prepare(self.fit_split.labels)

    # ---------------------------------------------------------------- set-up
    def _split_validation(self) -> None:
        train = self.data.train
        n_val = int(round(len(train) * float(self.cfg["val_fraction"])))
        if n_val:
            order = np.random.default_rng([self.cfg["seed"], 7]).permutation(len(train))
            self.val_split, self.fit_split = train.subset(np.sort(order[:n_val])), train.subset(np.sort(order[n_val:]))
        else:
            self.val_split, self.fit_split = None, train

    def _feature_key(self, part: str, split: Split) -> dict[str, Any]:
        c = self.cfg
        return {
            "version": FEATURES_VERSION,
            "backbone": c["backbone"], "pretrained": str(c["pretrained"]), "input_size": c["input_size"],
            **({"layer": c["backbone_layer"]} if c.get("backbone_layer") is not None else {}),
            "crop_ratio": c["crop_ratio"], "crop_scale": list(c["crop_scale"]), "s_teacher": c["s_teacher"],
            "views": c["views"], "seed": c["seed"], "data": c["protocol"] or c["data"], "part": part,
            "n": len(split), "ids": digest(split.ids),
        }  # fmt: skip

    def _prepare_cached(self) -> None:
        c = self.cfg
        backbone, dim = create_backbone(c["backbone"], c["pretrained"], layer=c["backbone_layer"])
        self.backbone = backbone.to(self.device).eval()
        cache = FeatureCache(self._feature_key("train-views", self.fit_split))
        # student views only for a loss that sees them (or trains on them): each view costs a backbone pass
        student = self.student_tf if getattr(self.criterion, "needs_student", False) or c["train_view"] == "student" else None
        ft, fs = view_features(
            cache, self.backbone, self.fit_split.images, self.teacher_tf, student, c["views"], c["seed"],
            c["feature_batch"], self.device, self.progress,
        )  # fmt: skip
        self.features_seconds += cache.seconds
        self.source = CachedViews(ft, fs, self.device)
        torch.manual_seed(c["seed"])  # after the features: the same weights whether they were cached or computed
        self.model = build_model(c, self.n_proxies, dim).to(self.device)

    def _split_key(self, split: Split) -> dict[str, Any]:
        return images_key(self.cfg["protocol"] or self.cfg["data"], split.ids)

    def clean_features(self, split: Split, part: str) -> np.ndarray:
        """Clean-view backbone features of a split (cached mode), computed once (shared with shallow
        baselines on the same frozen features, see ``features.frozen_features``)."""
        c = self.cfg
        spec = {"backbone": c["backbone"], "pretrained": c["pretrained"], "input_size": c["input_size"],
                "layer": c["backbone_layer"], "crop_ratio": c["crop_ratio"]}  # fmt: skip
        f, seconds = frozen_features(spec, split.images, self._split_key(split), c["feature_batch"], self.device, self.progress, part)
        self.features_seconds += seconds
        return f

    def _setup_pairs(self) -> None:
        """Step 0 of a pair-based method: frozen features of the training images -> initial pairs."""
        c = self.cfg
        spec = c["pairs"]  # validated and completed with the method's defaults by the config
        sizes = spec["input_size"] if isinstance(spec["input_size"], list) else [spec["input_size"]]
        feats = []
        for size in sizes:  # one array per input size (the method combines them)
            f, seconds = frozen_features({**spec, "input_size": int(size)}, self.fit_split.images, self._split_key(self.fit_split),
                                         c["feature_batch"], self.device, self.progress, f"pair features @{size}")  # fmt: skip
            self.features_seconds += seconds
            feats.append(np.asarray(f, np.float32))
        # ground truth feeds the purity report only (never the loss)
        self.report = self.method.setup(feats, self.fit_split.labels, c["seed"])
        self._print_report("initial")

    def _print_report(self, part: str) -> None:
        r = self.report.get(part)
        if r and self.progress:
            tqdm.write(
                f"{part} pairs: {r['pairs']:,} of {r['of_pairs']:,} kept, purity {r['purity']:.3f} "
                f"(similar {r['similar']:,} at {r['similar_purity']:.3f}, dissimilar {r['dissimilar']:,} at "
                f"{r['dissimilar_purity']:.3f})"
            )

    def _maybe_distill(self, epoch: int) -> None:
        """At the end of a pair method's stage 1: freeze the stage-1 codes (saved, so a resume reuses them) and distil."""
        stage1 = getattr(self.method, "stage1_epochs", None)
        if stage1 is None or epoch < stage1 or getattr(self.method, "distilled", False):
            return
        path = self.run_dir / "stage1-h.npy"  # continuous h: the method takes sign(h) or h as its posterior asks
        if path.is_file():
            h = np.load(path)
        else:
            h = self.encode_split(self.fit_split, "fit").astype(np.float32)
            _io.atomic_write(path, lambda f: np.save(f, h))
        self.report = self.method.distill_from(h, self.fit_split.labels, self.cfg["seed"])
        self._print_report("distilled")
        _io.write_json(self.run_dir / "purity.json", self.report)

    def _optimizer(self) -> torch.optim.Optimizer:
        c = self.cfg
        backbone = [p for p in (self.model.backbone.parameters() if self.model.backbone is not None else []) if p.requires_grad]
        ids = {id(p) for p in backbone}
        rest = [p for p in self.model.parameters() if id(p) not in ids]
        groups = [{"params": rest, "lr": c["lr"]}]
        if backbone:
            groups.append({"params": backbone, "lr": c["lr"] * c["backbone_lr_mult"]})
        return torch.optim.Adam(groups, lr=c["lr"], weight_decay=c["weight_decay"])

    # ---------------------------------------------------------------- training
    def fit(self, resume: bool = False, callback: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Train (from the last checkpoint when ``resume``), then encode and evaluate; returns the metrics."""
        c = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _io.write_text(self.run_dir / "config.yaml", dump_config(c))
        opt = self._optimizer()
        n = len(self.fit_split)
        # a pair method may fill each batch with anchors and some of their neighbours (``batch_neighbours``
        # per anchor); an epoch then takes every training image once as an anchor
        neighbours = int(getattr(self.method, "batch_neighbours", 0))
        per_batch = c["batch_size"] // (1 + neighbours)
        steps_per_epoch = math.ceil(n / per_batch)
        total = steps_per_epoch * c["epochs"]
        warmup = min(total, steps_per_epoch * c["warmup_epochs"])
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warmup))
        scaler = torch.amp.GradScaler("cuda", enabled=self.device == "cuda" and c["amp"])
        start, best, train_seconds = 0, -1.0, 0.0
        ckpt = self.run_dir / "checkpoint.pt"
        log_path = self.run_dir / "log.jsonl"
        if resume and ckpt.is_file():
            state = torch.load(ckpt, map_location=self.device, weights_only=False)
            self.model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            start, best, train_seconds = state["epoch"], state.get("best", -1.0), state.get("train_seconds", 0.0)
            _truncate_log(log_path, start)
        elif log_path.exists():
            log_path.unlink()
        if self.report:
            _io.write_json(self.run_dir / "purity.json", self.report)
        for epoch in range(start, c["epochs"]):
            self._maybe_distill(epoch)
            t0 = time.perf_counter()
            torch.manual_seed(c["seed"] * 100_003 + epoch)  # augmentation draws: a function of (seed, epoch)
            rng = np.random.default_rng([c["seed"], epoch])
            order = rng.permutation(n)
            self.model.train()
            sums: dict[str, float] = {}
            bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{c['epochs']}", disable=not self.progress, leave=False)
            for step in bar:
                idx = anchors = order[step * per_batch : (step + 1) * per_batch]
                if neighbours:
                    idx = self.method.with_neighbours(anchors, rng)
                if hasattr(self.method, "set_step"):  # schedules inside a loss (HashNet's continuation)
                    self.method.set_step(epoch * steps_per_epoch + step)
                parts = self._step(idx, self.targets[idx].to(self.device), rng, opt, scaler)
                sched.step()
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v * len(anchors)
                bar.set_postfix(loss=f"{parts['loss']:.4f}")
                if callback is not None:
                    callback(epoch, step)
            train_seconds += time.perf_counter() - t0
            row = {"epoch": epoch + 1, "lr": sched.get_last_lr()[0], "seconds": round(time.perf_counter() - t0, 2)}
            row.update({k: v / n for k, v in sums.items()})
            if self.val_split is not None:
                row["val_map"] = self._validate()
                if c["select"] == "best" and row["val_map"] > best:
                    best = row["val_map"]
                    torch.save(self.model.state_dict(), self.run_dir / "best.pt")
            with open(log_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            if self.progress:
                tqdm.write(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
            state = {
                "model": self.model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "epoch": epoch + 1, "best": best, "train_seconds": train_seconds, "config": c,
            }  # fmt: skip
            _io.atomic_write(ckpt, lambda f: torch.save(state, f))
        if c["select"] == "best" and (self.run_dir / "best.pt").is_file():
            self.model.load_state_dict(torch.load(self.run_dir / "best.pt", map_location=self.device))
        return self.finish(train_seconds)

    def _step(self, idx, y, rng, opt, scaler) -> dict[str, float]:
        need_student = getattr(self.criterion, "needs_student", False)  # one view unless the loss asks for two
        on_student = not need_student and self.cfg["train_view"] == "student"
        activate = not getattr(self.method, "wants_logits", False)
        with torch.autocast("cuda", enabled=self.device == "cuda" and self.cfg["amp"]):
            x_t, x_s = self.source.views(idx, rng, need_student or on_student)
            if on_student:  # a one-view method trained on T_S (DHD's Table 3, "-SdH")
                x_t, x_s = x_s, None
            if x_s is not None:  # one pass over both views
                h = self.model(torch.cat([x_t, x_s]), activate)
                h_t, h_s = h[: len(idx)], h[len(idx) :]
            else:
                h_t, h_s = self.model(x_t, activate), None
            parts = self.criterion(h_t.float(), None if h_s is None else h_s.float(), y, self.model.proxies)
        opt.zero_grad(set_to_none=True)
        scaler.scale(parts["loss"]).backward()
        scaler.step(opt)
        scaler.update()
        return {k: float(v.detach()) for k, v in parts.items()}

    # ---------------------------------------------------------------- encoding
    @torch.inference_mode()
    def encode_split(self, split: Split, part: str) -> np.ndarray:
        """Continuous codes h of a split's clean views."""
        self.model.eval()
        if self.cfg["mode"] == "cached":
            f = self.clean_features(split, part)
            chunks = [self.model(torch.from_numpy(np.asarray(f[a : a + 4096], np.float32)).to(self.device)) for a in range(0, len(f), 4096)]
            return torch.cat(chunks).float().cpu().numpy()
        return encode_images(self.model, self.clean_tf, split.images, self.cfg["feature_batch"])

    def _validate(self) -> float:
        """mAP@K of the validation split against the rest of the training set (never the queries)."""
        q = self.encode_split(self.val_split, "val")
        db = self.encode_split(self.fit_split, "fit")
        return mean_average_precision(q, db, self.val_split.labels, self.fit_split.labels, topk=self.data.topk)

    def finish(self, train_seconds: float) -> dict[str, Any]:
        t0 = time.perf_counter()
        q = self.encode_split(self.data.query, "query")
        db = self.encode_split(self.data.database, "database")
        encode_seconds = time.perf_counter() - t0
        for name, h, split in (("query", q, self.data.query), ("database", db, self.data.database)):
            save_codes(self.run_dir / f"codes-{name}.npz", h, split.ids, split.labels)
        m = self.data.score(q, db)
        metrics = {
            "name": self.cfg["name"], "protocol": self.cfg["protocol"], "method": self.cfg["method"],
            "bits": self.cfg["bits"], "backbone": self.cfg["backbone"], "mode": self.cfg["mode"], **m,
            "train_seconds": round(train_seconds, 1), "features_seconds": round(self.features_seconds, 1),
            "encode_seconds": round(encode_seconds, 1), "epochs": self.cfg["epochs"], "seed": self.cfg["seed"],
        }  # fmt: skip
        if self.report:
            metrics["purity"] = self.report
        metrics.update(self.stage0)
        _io.write_json(self.run_dir / "metrics.json", metrics)
        return metrics


def _truncate_log(path: Path, epochs: int) -> None:
    """Keep the log rows of the epochs a resumed run keeps (drop any from an unfinished epoch)."""
    if path.is_file():
        rows = [r for r in path.read_text().splitlines() if r.strip() and json.loads(r)["epoch"] <= epochs]
        _io.write_text(path, "".join(r + "\n" for r in rows))


def train(cfg: dict[str, Any], run_dir: str | os.PathLike, resume: bool = False, progress: bool = True, **kw: Any) -> dict[str, Any]:
    return Trainer(cfg, run_dir, progress).fit(resume, **kw)


def load_run(run_dir: str | os.PathLike, device: str = "cpu") -> tuple[dict[str, Any], HashModel, nn.Module]:
    """(config, model with its backbone, clean transform) of a trained run, ready to encode images."""
    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoint.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"{run_dir}: no checkpoint.pt (not a trained run folder)")
    state = torch.load(ckpt, map_location=device, weights_only=False)
    cfg = state["config"]
    weights = state["model"]
    if cfg["select"] == "best" and (run_dir / "best.pt").is_file():
        weights = torch.load(run_dir / "best.pt", map_location=device)
    n_proxies = weights["proxies"].shape[0] if "proxies" in weights else 0
    model = HashModel(cfg["bits"], cfg["backbone"], cfg["pretrained"], n_proxies, layer=cfg.get("backbone_layer"),
                      hidden=cfg.get("head_hidden") or 0)  # fmt: skip
    if cfg["mode"] == "cached":  # the checkpoint holds the head (and proxies); the backbone is the frozen one
        model.load_state_dict(weights, strict=False)
    else:
        model.load_state_dict(weights)
    return cfg, model.to(device).eval(), transforms(cfg)[2].to(device)


@torch.inference_mode()
def encode_batch(model: nn.Module, transform: nn.Module, x: torch.Tensor, batch: int = 256) -> np.ndarray:
    """Continuous codes of an in-memory batch of images (uint8 or float in [0, 1]) through ``transform`` and ``model``."""
    device = next(model.parameters()).device
    chunks = [model(transform(x[a : a + batch].to(device))).float().cpu() for a in range(0, len(x), batch)]
    return torch.cat(chunks).numpy()


def encode_images(model: HashModel, clean: nn.Module, images: Any, batch: int = 256, progress: bool = False) -> np.ndarray:
    """Continuous codes of images (uint8 arrays or ``ListImages``, read batch by batch) through a run's model."""
    starts = tqdm(range(0, len(images), batch), disable=not progress, leave=False, desc="encoding")
    return np.concatenate([encode_batch(model, clean, take(images, np.arange(a, min(a + batch, len(images)))), batch) for a in starts])
