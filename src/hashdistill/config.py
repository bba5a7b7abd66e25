"""A run's configuration: typed, nested sections (docs/config.md).

``data`` (what it trains and is scored on) -> ``model`` (backbone, hash head, code length) -> ``augment``
(the views) -> ``method`` (the loss and its hyper-parameters, validated by the method's own ``Params``)
-> ``optim`` -> ``schedule`` -> ``runtime``. ``load_config(path, ["a.b.c=value", ...])`` reads a YAML file
over the defaults and applies ``--set`` overrides at any depth; every bad key or value fails with one
line naming its full key path (``ConfigError``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)  # fmt: skip

from .data.images import DEFAULT_MAX_PIXELS
from .errors import ConfigError, MethodError
from .registry import BACKBONES, METHODS


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class DataConfig(Section):
    """A benchmark ``protocol``, or your own images: ``train`` (and optionally ``query`` and ``database``), each
    a DHD-format list file (image paths relative to ``root``, default the list file's folder), a
    class-per-folder tree, or an unlabelled folder (unsupervised methods); images are loaded at ``load_size``.
    Without query and database a run trains without evaluation."""

    protocol: str | None = "fmnist-1k"
    """a benchmark protocol (docs/protocols.md); null to train on your own images (data.train)"""
    train: str | None = None
    """your training images: a list file, a class-per-folder tree, or an unlabelled folder"""
    query: str | None = None
    """your query images (with data.database: the run is scored on them)"""
    database: str | None = None
    """your database images (with data.query)"""
    root: str | None = None
    """the folder list-file paths are relative to (null: the list file's folder)"""
    load_size: PositiveInt = 256
    """the side your image files are resized to when read"""
    topk: PositiveInt | None = None
    """the K of mAP@K (null: the protocol's, 1000 for your own images)"""
    limit_train: PositiveInt | None = None
    """only the first N training images (quick experiments, tests)"""
    limit_query: PositiveInt | None = None
    """only the first N queries"""
    limit_database: PositiveInt | None = None
    """only the first N database images"""
    val_fraction: float = Field(0.0, ge=0, lt=1)
    """a validation split carved from the training set (for schedule.select: best)"""
    workers: NonNegativeInt = 0
    """image-loading threads for list files (0: 4)"""
    max_pixels: PositiveInt = DEFAULT_MAX_PIXELS
    """larger images are refused from their header, before decoding (decompression bombs)"""
    allow_outside_root: bool = False
    """let list-file paths be absolute or climb out of the root with '..'"""

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, v: str | None) -> str | None:
        from .data import PROTOCOLS

        if v is not None and v not in PROTOCOLS:
            raise ValueError(f"unknown protocol {v!r}; known: {', '.join(PROTOCOLS)}")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        own = [getattr(self, k) for k in ("train", "query", "database")]
        if self.protocol is None and not self.train:
            raise ValueError("without data.protocol, data.train is needed (a list file or a folder of images)")
        if self.protocol is None and bool(self.query) != bool(self.database):
            raise ValueError("data.query and data.database go together (both, to evaluate; neither, to train only)")
        if self.protocol is not None and any(own):
            raise ValueError("give either data.protocol or your own images (set data.protocol=null to use data.train)")
        return self

    @property
    def source(self) -> str | dict[str, Any]:
        """What names the images (a feature cache's key): the protocol, or the list files."""
        if self.protocol:
            return self.protocol
        return {k: getattr(self, k) for k in ("train", "query", "database", "root", "load_size")}


class MethodParams(Section):
    """Settings every method takes; a method's own ``Params`` (in its module, methods/) subclasses this with its
    hyper-parameters, and the ``method`` section is validated with the class its ``name`` registered.

    ``self_distill`` wraps the method in ``SelfDistilled`` (DHD's Eq. 2 added to its loss, weight
    ``self_distill_weight``; Table 3's "+SdH"); without it a one-view method trains on ``train_view``
    (``teacher``: T_T, or ``student``: T_S, Table 3's "-SdH").
    """

    name: str = ""
    """the method, a name registered in hashdistill.registry.METHODS (docs/algorithms/): dhd, distillhash, dch, csq, adsh, ..."""
    self_distill: bool = False
    """add DHD's self-distillation term (Eq. 2) to the method's loss (Table 3's +SdH)"""
    self_distill_weight: float = Field(0.1, ge=0)
    """the weight of the self-distillation term"""
    train_view: Literal["teacher", "student"] = "teacher"
    """the view a one-view method trains on: teacher (T_T) or student (T_S)"""


def method_params(settings: dict[str, Any] | str) -> MethodParams:
    """Validate a config's ``method`` section (a mapping with ``name``, or just the name) into the method's
    ``Params``; raises ``pydantic.ValidationError`` for a bad value, ``MethodError`` for a bad combination."""
    if isinstance(settings, str):
        settings = {"name": settings}
    if not isinstance(settings, dict):
        raise MethodError("", f"expected a mapping with a name, or a method name, got {settings!r}")
    if "name" not in settings:
        raise MethodError("name", f"missing; known: {', '.join(METHODS.names())}")
    cls = METHODS.get(settings["name"])
    params = cls.Params.model_validate(settings)
    if params.self_distill and cls.views != 1:
        raise MethodError("self_distill", f"{params.name} already trains on two views (its own L_SdH); use a one-view variant")
    if params.train_view != "teacher" and (params.self_distill or cls.views != 1):
        raise MethodError(
            "train_view", "picks the one view of a method trained without self-distillation; with it the loss sees T_T"
        )
    return params


def same_params(a: str, b: str) -> bool:
    """Whether two method names share one parameter class (DHD and its ablations, say)."""
    return METHODS.get(a).Params is METHODS.get(b).Params


class ModelConfig(Section):
    """backbone -> hash head (``feature_norm``; a hidden ReLU layer of ``head_hidden`` units when > 0; Linear, no
    bias -> LayerNorm -> tanh) -> ``bits``. ``mode: cached`` freezes a pretrained backbone and trains the head
    over cached features of many views."""

    bits: PositiveInt = 64
    """code length K, a multiple of 8"""
    backbone: str = "small-cnn"
    """the feature extractor (backbones/: small-cnn, mobilenet_v2, efficientnet_lite0-2, alexnet, resnet50, vit, deit, swin)"""
    pretrained: bool | str = False
    """true (offline package / hub) or a weights file"""
    layer: int | None = None
    """mobilenet_v2: cut after this block (pooled block features)"""
    head_hidden: NonNegativeInt = 0
    """a hidden ReLU layer of this width before the hash layer (0: none)"""
    feature_norm: Literal["none", "batch"] = "none"
    """batch: centre and scale each feature before the head (BatchNorm without affine; when encoding, by the
    average of the training batches' statistics: meant for a frozen backbone); none: the features as they are"""
    proxy_gain: float = Field(1.0, gt=0, le=10)
    """the Xavier gain of the trainable proxies' initial values, where a method has proxies (DHD's official code:
    5/3, tanh's gain)"""
    mode: Literal["end-to-end", "cached"] = "end-to-end"
    """end-to-end trains the backbone; cached freezes a pretrained one over cached features of many views"""
    input_size: PositiveInt = 28
    """the side the views are drawn at"""

    @field_validator("bits")
    @classmethod
    def _bytes(cls, v: int) -> int:
        if v % 8:
            raise ValueError("must be a multiple of 8")
        return v

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        if v not in BACKBONES:
            raise ValueError(f"unknown backbone {v!r}; known: {', '.join(BACKBONES.names())}")
        return v


class AugmentConfig(Section):
    """The view groups (docs/algorithms/dhd.md): the student group T_S and the teacher group T_T (every
    probability x ``s_teacher``), drawn at ``model.input_size`` then centre-cropped by ``crop_ratio``."""

    crop_ratio: float = Field(1.0, gt=0, le=1)
    """the centre crop after augmentation (the paper: 224/256 = 0.875)"""
    crop_scale: tuple[float, float] = (0.08, 1.0)
    """RandomResizedCrop's scale range (kornia's default)"""
    s_teacher: float = Field(0.5, ge=0, le=1)
    """the teacher group T_T's strength: every augmentation probability of T_S times this"""
    views: PositiveInt = 8
    """cached mode: teacher and student views computed per training image"""

    @field_validator("crop_scale")
    @classmethod
    def _scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] <= 1:
            raise ValueError("must be [low, high] with 0 < low <= high <= 1")
        return v


class OptimConfig(Section):
    """Adam; the backbone's learning rate is ``lr x backbone_lr_mult``."""

    lr: float = Field(3.0e-4, gt=0)
    """Adam's learning rate of the head (and proxies)"""
    backbone_lr_mult: float = Field(0.05, ge=0)
    """the backbone's learning rate is lr times this"""
    weight_decay: float = Field(1.0e-5, ge=0)
    """Adam's weight decay"""
    batch_size: PositiveInt = 128
    """training images per step"""


class ScheduleConfig(Section):
    """Linear warm-up, then cosine decay per step; ``select: best`` keeps the epoch with the best
    validation mAP (needs ``data.val_fraction`` > 0; never looks at the queries)."""

    epochs: PositiveInt = 30
    """training epochs"""
    min_steps: NonNegativeInt = 0
    """at least this many optimisation steps: on a training set too small for them, the run trains
    ceil(min_steps / steps per epoch) epochs instead (0: exactly ``epochs``; under torchrun, steps per process)"""
    warmup_epochs: NonNegativeInt = 1
    """linear learning-rate warm-up before the cosine decay"""
    select: Literal["last", "best"] = "last"
    """the weights kept: the last epoch's, or the best by validation mAP (needs data.val_fraction)"""


class RuntimeConfig(Section):
    seed: int = 0
    """seeds the initial weights, the augmentations and the data order"""
    device: str = "auto"
    """auto (cuda when available), cpu, cuda, cuda:N"""
    amp: bool = True
    """mixed precision on CUDA"""
    num_threads: PositiveInt | None = None
    """CPU threads for torch (null: torch's default)"""
    feature_batch: PositiveInt = 256
    """images per backbone pass when encoding or caching features"""

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return v


class Config(Section):
    """A whole run. Build it with ``load_config`` or ``parse_config`` (they validate the method section
    with the method's own parameters)."""

    name: str | None = None
    """the run folder's name (default: the config file's stem)"""
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    augment: AugmentConfig = AugmentConfig()
    method: SerializeAsAny[MethodParams] = MethodParams(name="dhd")
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    @field_validator("name")
    @classmethod
    def _folder_name(cls, v: str | None) -> str | None:
        if v is not None and (not v or v.startswith(".") or "/" in v or "\\" in v):
            raise ValueError("the run folder's name: no '/' or '\\', not empty, not starting with '.'")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.model.mode == "cached" and self.model.backbone == "small-cnn" and not self.model.pretrained:
            raise ValueError("model.mode: cached freezes the backbone: use a pretrained one (small-cnn trains end to end)")
        if self.schedule.select == "best" and not self.data.val_fraction:
            raise ValueError("schedule.select: best needs data.val_fraction > 0 (selection never looks at the queries)")
        METHODS.get(self.method.name).check(self.method, {"epochs": self.schedule.epochs, "batch_size": self.optim.batch_size})
        return self

    @property
    def run_name(self) -> str:
        return self.name or f"{self.method.name}-{self.data.protocol or 'data'}-{self.model.bits}"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def replace(self, overrides: list[str]) -> Config:
        """A validated copy with ``key=value`` overrides applied."""
        return parse_config(apply_overrides(self.to_dict(), overrides))


# ---------------------------------------------------------------------- reading and overriding
def parse_value(text: str) -> Any:
    """A ``--set`` value, read as YAML (so numbers, booleans, null and lists work)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``key.sub.subsub=value`` overrides on a raw (unvalidated) config mapping; returns a new mapping.

    ``method=NAME`` switches the method: its settings are kept when NAME takes the same parameters (DHD
    and its ablations, DistillHash and its ablations), else NAME starts from its defaults.
    """
    raw = _copy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        path = [p.strip() for p in key.split(".")]
        if not sep or not all(path):
            raise ConfigError(f"--set expects key=value or a.b.c=value, got {item!r}")
        value = parse_value(text)
        if path == ["method"] and isinstance(value, str):
            raw["method"] = _switch_method({"name": "dhd", **_method_section(raw.get("method"))}, value)
            continue
        if path[0] == "method":
            raw["method"] = _method_section(raw.get("method"))
        node, model = raw, Config
        for depth, part in enumerate(path[:-1]):
            model = _schema_section(model, part, raw)
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict) or model is None:
                raise ConfigError(f"{'.'.join(path[: depth + 1])} is not a section: cannot set {key}")
            node = child
        node[path[-1]] = value
    return raw


def parse_config(raw: Any, origin: str = "config") -> Config:
    """A validated ``Config`` from a raw mapping (a YAML file's content with overrides applied)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: a config is a mapping of sections (data, model, method, ...), got {type(raw).__name__}")
    raw = dict(raw)
    section = _method_section(raw.get("method"))
    if isinstance(section, dict):
        section = {"name": "dhd", **section}  # the default method
    try:
        method = method_params(section)
    except MethodError as e:
        raise ConfigError(str(e)) from None
    except ValidationError as e:
        raise ConfigError(_one_line(e, "method", METHODS.get(section["name"]).Params)) from None
    try:
        return Config.model_validate({**raw, "method": method})
    except ValidationError as e:
        raise ConfigError(_one_line(e, "", Config)) from None


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file <- ``key=value`` overrides, validated; the run's name defaults to the file's stem."""
    raw: dict[str, Any] = {}
    origin = "config"
    if path is not None:
        path, origin = Path(path), str(path)
        try:
            loaded = yaml.safe_load(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: a folder, not a config file") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config is a mapping of sections (data, model, method, ...)")
        raw = {"name": path.stem, **loaded}
    cfg = parse_config(apply_overrides(raw, overrides or []), origin)
    return cfg


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


SECTION_HELP = {
    "data": "what the run trains and is scored on", "model": "backbone -> hash head -> bits",
    "augment": "the teacher and student views", "method": "the loss and its hyper-parameters (docs/algorithms/)",
    "optim": "Adam", "schedule": "epochs, warm-up then cosine decay, the weights kept",
    "runtime": "seed, device, threads", "pairs": "DistillHash's pairs: labelled, distilled, batched",
}  # fmt: skip


def explain_config(cfg: Config) -> str:
    """The resolved config as YAML, every key followed by a comment with its help and default (``config show``)."""
    lines: list[str] = []
    _explain(cfg, 0, lines)
    return "\n".join(lines) + "\n"


def _explain(section: BaseModel, depth: int, lines: list[str]) -> None:
    pad, values = "  " * depth, section.model_dump(mode="json")
    for name, field in type(section).model_fields.items():
        value = getattr(section, name)
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:  # {' '.join(SECTION_HELP.get(name, field.description or '').split())}")
            _explain(value, depth + 1, lines)
            continue
        note = " ".join((field.description or "").split())  # a docstring over several lines: one comment line
        if not field.is_required() and name != "name":
            note += f" (default {_inline(field.get_default(call_default_factory=True))})"
        lines.append(f"{pad}{name}: {_inline(values[name])}" + (f"  # {note.strip()}" if note.strip() else ""))


def _inline(value: Any) -> str:
    """A value as one line of YAML flow style."""
    value = list(value) if isinstance(value, tuple) else value
    return yaml.safe_dump([value], default_flow_style=True, width=10**6).strip()[1:-1]


# ---------------------------------------------------------------------- helpers
def _copy(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_copy(v) for v in x]
    return x


def _method_names() -> tuple[str, ...]:
    return tuple(METHODS.names())


def _switch_method(old: dict[str, Any], name: str) -> dict[str, Any]:
    """The method section after ``method=NAME``: the old settings when NAME takes the same parameters, else
    NAME's defaults; settings the old method did not know (typos) stay, for the validation to name them."""
    names = _method_names()
    if old["name"] not in names or name not in names or same_params(old["name"], name):
        return {**old, "name": name}
    known = METHODS.get(old["name"]).Params.model_fields
    return {**{k: v for k, v in old.items() if k not in known}, "name": name}


def _method_section(section: Any) -> Any:
    """``method: NAME`` is short for ``method: {name: NAME}``."""
    if section is None:
        return {}
    return {"name": section} if isinstance(section, str) else section


def _schema_section(model: type[BaseModel] | None, name: str, raw: dict[str, Any]) -> type[BaseModel] | None:
    """The section model a ``--set`` path steps into: ``None`` where the schema has a plain value there
    (an unknown name passes through, for the validation to name it with the known keys)."""
    if model is Config and name == "method":
        method = {"name": "dhd", **raw.get("method", {})}
        return METHODS.get(method["name"]).Params if method["name"] in _method_names() else MethodParams
    if model is None or name not in model.model_fields:
        return BaseModel
    return _section(model, name)


def _section(model: type[BaseModel] | None, name: str) -> type[BaseModel] | None:
    """The section model that field ``name`` of ``model`` holds (``None`` for a plain value)."""
    field = model.model_fields[name] if model is not None else None
    ann = getattr(field, "annotation", None)
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _key(loc: tuple, prefix: str, root: type[BaseModel], unknown: bool) -> tuple[str, type[BaseModel] | None]:
    """A pydantic error location as a key path (field names and list positions; union-member tags dropped),
    and the section holding the last field."""
    names, model = [prefix] if prefix else [], root
    for i, part in enumerate(loc):
        if isinstance(part, int):
            names.append(f"[{part}]")
        elif model is not None and part in model.model_fields:
            names.append(str(part))
            model = _section(model, str(part))
        elif unknown and i == len(loc) - 1:
            names.append(str(part))  # the unknown key itself
    return ".".join(names).replace(".[", "["), model


def _one_line(e: ValidationError, prefix: str, root: type[BaseModel]) -> str:
    """The first error of a validation as one line: the full key path, what is wrong, what was given."""
    errors = e.errors()
    err = max(errors, key=lambda x: len(x["loc"]))  # of a union's branches, the one that got furthest
    unknown = err["type"] == "extra_forbidden"
    key, model = _key(err["loc"], prefix, root, unknown)
    others = {k for x in errors if not key.startswith(k := _key(x["loc"], prefix, root, x["type"] == "extra_forbidden")[0])}
    more = f" (and {len(others)} more)" if others else ""
    if unknown:
        hint = f" (now {OLD_KEYS[key]})" if key in OLD_KEYS else ""
        known = ", ".join(model.model_fields) if model is not None else ""
        return f"unknown key {key}{hint}; known: {known}{more}"
    msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if not key:
        return msg + more
    if err["type"] == "missing":
        return f"{key}: missing{more}"
    given = err.get("input")
    said = isinstance(given, str) and repr(given) in msg  # a message that quotes the value already
    shown = "" if isinstance(given, dict) or said else f", got {given!r}"
    return f"{key}: {msg}{shown}{more}"


# where the keys of the flat configs of hashdistill 0.1 live now (for a helpful error)
OLD_KEYS = {
    "protocol": "data.protocol", "limit_train": "data.limit_train", "limit_query": "data.limit_query",
    "limit_database": "data.limit_database", "val_fraction": "data.val_fraction", "eval_topk": "data.topk",
    "workers": "data.workers", "bits": "model.bits", "backbone": "model.backbone", "pretrained": "model.pretrained",
    "backbone_layer": "model.layer", "head_hidden": "model.head_hidden", "mode": "model.mode",
    "input_size": "model.input_size", "crop_ratio": "augment.crop_ratio", "crop_scale": "augment.crop_scale",
    "s_teacher": "augment.s_teacher", "views": "augment.views", "method_params": "method",
    "sdh": "method.self_distill", "train_view": "method.train_view", "temperature": "method.temperature",
    "lambda1": "method.lambda1", "lambda2": "method.lambda2", "sigma": "method.sigma",
    "quantize_proxies": "method.quantize_proxies", "pairs": "method.pairs", "lr": "optim.lr",
    "backbone_lr_mult": "optim.backbone_lr_mult", "weight_decay": "optim.weight_decay",
    "batch_size": "optim.batch_size", "epochs": "schedule.epochs", "warmup_epochs": "schedule.warmup_epochs",
    "select": "schedule.select", "seed": "runtime.seed", "device": "runtime.device", "amp": "runtime.amp",
    "num_threads": "runtime.num_threads", "feature_batch": "runtime.feature_batch",
}  # fmt: skip
