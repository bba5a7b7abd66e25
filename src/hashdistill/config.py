"""Training configuration: YAML files with defaults, ``--set key=value`` overrides, validation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

DEFAULTS: dict[str, Any] = {
    "name": None,  # run name (default: the config file's stem)
    "protocol": "fmnist-1k",  # a benchmark protocol, or null with `data` (list files)
    "data": None,  # {train, query, database: list files, root: image folder, load_size: 256}
    "method": "dhd",  # see hashdistill.methods.METHODS
    "method_params": None,  # a baseline's own hyper-parameters, e.g. {gamma: 20} for dch (defaults cited in its module)
    "sdh": False,  # add self-distillation (L_SdH, weight lambda1) to any method: loss on T_T, student T_S pulled to it
    "train_view": "teacher",  # without SdH, the view group a one-view method trains on: teacher (T_T) or student (T_S)
    "bits": 64,
    "backbone": "small-cnn",
    "pretrained": False,  # true (offline package / hub) or a weights path
    "backbone_layer": None,  # mobilenet_v2: cut after this block (pooled block features)
    "head_hidden": 0,  # a hidden ReLU layer of this width before the hash layer (0: linear hash layer)
    "mode": "end-to-end",  # or "cached": frozen backbone, features of many views cached on disk
    "input_size": 28,
    "crop_ratio": 1.0,  # centre crop after augmentation (the paper: 224/256 = 0.875)
    "crop_scale": [0.08, 1.0],  # RandomResizedCrop scale range (official code: kornia's default)
    "s_teacher": 0.5,  # teacher group = student group with probabilities scaled by s_T
    "views": 8,  # cached mode: teacher and student views computed per training image
    "epochs": 30,
    "batch_size": 128,
    "lr": 3.0e-4,
    "backbone_lr_mult": 0.05,
    "weight_decay": 1.0e-5,
    "warmup_epochs": 1,
    "temperature": 0.2,
    "lambda1": 0.1,
    "lambda2": 0.1,
    "sigma": 0.5,
    "quantize_proxies": False,
    "seed": 0,
    "val_fraction": 0.0,  # carve a validation split from the training set for model selection
    "select": "last",  # or "best" (highest validation mAP; needs val_fraction > 0)
    "eval_topk": None,  # default: the protocol's K (1000)
    "limit_train": None,  # use only the first N of each split (quick experiments, tests)
    "limit_query": None,
    "limit_database": None,
    "num_threads": None,
    "device": "auto",  # auto: cuda when available
    "amp": True,  # mixed precision on CUDA
    "feature_batch": 256,
    "workers": 0,  # DataLoader workers for list-file datasets
    "pairs": None,  # pair-based unsupervised methods (DistillHash): see methods/distillhash.py PAIR_DEFAULTS
}
CHOICES = {"mode": ("end-to-end", "cached"), "select": ("last", "best"), "train_view": ("teacher", "student")}
FLOATS = ("lr", "backbone_lr_mult", "weight_decay", "temperature", "lambda1", "lambda2", "sigma", "s_teacher",
          "val_fraction", "crop_ratio")  # fmt: skip


class ConfigError(ValueError):
    """A bad configuration; the message names the key."""


def parse_value(text: str) -> Any:
    """A ``--set`` value, read as YAML (so numbers, booleans, null and lists work)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Defaults <- YAML file <- ``key=value`` overrides; unknown keys and bad values fail clearly."""
    cfg = dict(DEFAULTS)
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config is a mapping of keys to values")
        cfg.update(loaded)
        cfg["name"] = cfg["name"] or path.stem
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        if "." in key:  # a nested setting: pairs.k=10
            outer, inner = key.split(".", 1)
            if not isinstance(cfg.get(outer) or {}, dict):
                raise ConfigError(f"{outer} is not a mapping: cannot set {key}")
            cfg[outer] = {**(cfg.get(outer) or {}), inner: parse_value(value)}
        else:
            cfg[key] = parse_value(value)
    return validate(cfg)


def validate(cfg: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}")
    for key in FLOATS:  # PyYAML reads 1e-3 (no dot) as a string
        try:
            cfg[key] = float(cfg[key])
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a number, got {cfg[key]!r}") from None
    for key, allowed in CHOICES.items():
        if cfg[key] not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {cfg[key]!r}")
    for key in ("bits", "epochs", "batch_size", "input_size", "views"):
        if not isinstance(cfg[key], int) or cfg[key] <= 0:
            raise ConfigError(f"{key} must be a positive integer, got {cfg[key]!r}")
    if cfg["bits"] % 8:
        raise ConfigError(f"bits must be a multiple of 8, got {cfg['bits']}")
    if not 0 <= float(cfg["val_fraction"]) < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {cfg['val_fraction']}")
    if cfg["select"] == "best" and not cfg["val_fraction"]:
        raise ConfigError("select: best needs val_fraction > 0 (selection never looks at the queries)")
    if cfg["protocol"] is None and not cfg["data"]:
        raise ConfigError("set either protocol or data (list files)")
    if cfg["mode"] == "cached" and cfg["backbone"] == "small-cnn" and not cfg["pretrained"]:
        raise ConfigError("cached mode freezes the backbone: use a pretrained one (small-cnn trains end to end)")
    _validate_method(cfg)
    if str(cfg["method"]).startswith("distillhash"):
        from .methods.distillhash import CALIBRATIONS, PAIR_DEFAULTS

        pairs = cfg["pairs"] or {}
        if not isinstance(pairs, dict):
            raise ConfigError("pairs must be a mapping of pair settings")
        unknown = sorted(set(pairs) - set(PAIR_DEFAULTS))
        if unknown:
            raise ConfigError(f"unknown pairs key(s): {', '.join(unknown)}; known: {', '.join(PAIR_DEFAULTS)}")
        cfg["pairs"] = {**PAIR_DEFAULTS, **pairs}
        size = cfg["pairs"]["input_size"]
        if not all(isinstance(x, int) and x > 0 for x in (size if isinstance(size, list) and size else [size])):
            raise ConfigError(f"pairs.input_size must be a positive integer or a list of them, got {size!r}")
        if not isinstance(cfg["pairs"]["batch_neighbours"], int) or cfg["pairs"]["batch_neighbours"] < 0:
            raise ConfigError(f"pairs.batch_neighbours must be a non-negative integer, got {cfg['pairs']['batch_neighbours']!r}")
        if cfg["pairs"]["batch_neighbours"] >= cfg["batch_size"]:
            raise ConfigError(f"pairs.batch_neighbours must be below batch_size ({cfg['batch_size']})")
        if cfg["pairs"]["calibration"] not in CALIBRATIONS:
            raise ConfigError(f"pairs.calibration must be one of {', '.join(CALIBRATIONS)}, got {cfg['pairs']['calibration']!r}")
        if cfg["method"] != "distillhash-noisy" and not 0 < int(cfg["pairs"]["stage1_epochs"]) < cfg["epochs"]:
            raise ConfigError(f"pairs.stage1_epochs must be between 1 and epochs - 1 ({cfg['epochs'] - 1})")
    cfg["name"] = cfg["name"] or f"{cfg['method']}-{cfg['protocol'] or 'data'}-{cfg['bits']}"
    return cfg


def _validate_method(cfg: dict[str, Any]) -> None:
    from .methods import BASELINES, METHODS, baseline_params

    name = cfg["method"]
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    params = cfg["method_params"] or {}
    if not isinstance(params, dict):
        raise ConfigError("method_params must be a mapping of a baseline's hyper-parameters")
    if params and name not in BASELINES:
        raise ConfigError(f"method_params apply to the baselines ({', '.join(BASELINES)}), not {name}")
    unknown = sorted(set(params) - set(baseline_params(name)))
    if unknown:
        raise ConfigError(f"unknown method_params for {name}: {', '.join(unknown)}; known: {', '.join(baseline_params(name))}")
    if not isinstance(cfg["sdh"], bool):
        raise ConfigError(f"sdh must be true or false, got {cfg['sdh']!r}")
    two_views = name == "dhd"
    if cfg["sdh"] and two_views:
        raise ConfigError("dhd already includes L_SdH: use method dhd-hp-bceq with sdh: true, or drop sdh")
    if cfg["train_view"] != "teacher" and (cfg["sdh"] or two_views):
        raise ConfigError("train_view picks the one view of a method trained without SdH; with SdH the loss sees T_T")


def dump_config(cfg: dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
