"""A collection's encoder: the run's model copied into ``model/`` (config and weights, so ``Run.load`` opens it)
and, where ONNX Runtime is installed, exported to ``model/model.onnx`` and checked against torch on a probe
batch; opened as an ``encoders.OnnxEncoder`` (no torch) or ``TorchEncoder``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import _io
from ..encoders import OnnxEncoder, TorchEncoder
from ..errors import CollectionError

ENGINES = ("auto", "onnx", "torch")
FEATURES_TOLERANCE = 1e-3  # the largest difference of the two engines' features, relative to their largest value


def write_model(run: Any, folder: Path, engine: str, features: bool = False) -> str:
    """Copy ``run``'s model into ``folder`` (``engine``: onnx, torch, or auto: ONNX where onnxruntime is
    installed and the export agrees with torch; ``features``: the export gives the backbone features too);
    returns the engine chosen."""
    import torch

    from ..config import dump_config

    folder.mkdir(parents=True, exist_ok=True)
    _io.write_text(folder / "config.yaml", dump_config(run.config))
    state = {"model": run.model.state_dict()}
    _io.atomic_write(folder / "checkpoint.pt", lambda f: torch.save(state, f))
    if engine in ("auto", "onnx") and _onnx_available(engine == "onnx"):
        return _export_checked(run, folder / "model.onnx", engine == "onnx", features)
    return "torch"


def open_encoder(folder: Path, engine: str, load_size: int | None) -> Any:
    """The encoder of a collection's ``model/`` folder."""
    if engine == "onnx":
        return OnnxEncoder(folder / "model.onnx", load_size)
    from ..run import Run

    return TorchEncoder(Run.load(folder))


def _onnx_available(required: bool) -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        if required:
            raise CollectionError('engine onnx needs onnx and onnxruntime: pip install "hashdistill[onnx]"') from None
        return False
    return True


def _export_checked(run: Any, path: Path, required: bool, features: bool) -> str:
    """Export to ONNX and check the signs (and the features, within ``FEATURES_TOLERANCE`` of their largest
    value) on a fixed batch of images; ``torch`` where they differ."""
    from ..export import export_onnx, verify_onnx

    export_onnx(run.model, run.clean, path, features)
    side = run.load_size or run.clean.pre
    probe = np.random.default_rng(0).integers(0, 256, (16, side, side, 3), dtype=np.uint8)
    check = verify_onnx(run, path, probe)
    drift = check.get("features_relative_difference", 0.0)
    if check["sign_mismatches"] or drift > FEATURES_TOLERANCE:
        if required:
            raise CollectionError(f"the ONNX export differs from torch in {check['sign_mismatches']} bits of a probe batch "
                                  f"(features by {drift:.1e} of their largest value)")  # fmt: skip
        path.unlink()
        return "torch"
    return "onnx"
