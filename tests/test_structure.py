"""The structure a newcomer relies on: one error type at the CLI boundary, layers that point down, a lean search
path, and extensions (a backbone, an index backend) that are one decorator each."""

import pytest

from hashdistill import errors
from hashdistill.cli import main


def test_every_domain_error_is_a_hashdistill_error_and_still_a_value_error():
    from hashdistill._io import TensorFileError
    from hashdistill.codes import CodesFileError
    from hashdistill.data.images import ImageError
    from hashdistill.data.lists import ListFileError
    from hashdistill.data.sources import DataNotFoundError
    from hashdistill.index import IndexFileError
    from hashdistill.run import RunError

    for cls in (TensorFileError, CodesFileError, ImageError, ListFileError, DataNotFoundError, IndexFileError, RunError,
                errors.ConfigError, errors.MethodError, errors.CollectionError, errors.CodesError, errors.HasherError):  # fmt: skip
        assert issubclass(cls, errors.HashdistillError) and issubclass(cls, ValueError), cls


def test_a_value_error_from_inside_is_a_bug_not_the_users_fault(monkeypatch, capsys, tmp_path):
    """A ValueError that is not a HashdistillError (numpy, torch, our own bug) is reported as an internal error;
    a domain error from the same place is the user's one line."""
    from hashdistill import cli

    def broken(*a, **k):
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setattr(cli, "load_protocol", broken)
    assert main(["data", "info", "fmnist-1k"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hashdistill: error: internal error (ValueError: operands could not be broadcast") and "report" in err

    def refused(*a, **k):
        raise errors.DataError("fmnist-1k: damaged protocol file")

    monkeypatch.setattr(cli, "load_protocol", refused)
    assert main(["data", "info", "fmnist-1k"]) == 1
    assert capsys.readouterr().err == "hashdistill: error: fmnist-1k: damaged protocol file\n"


# The layers, lowest first (docs/architecture.md, "Layers"): a module may import from its own layer and the ones
# below, never from one above, at the top of the file or inside a function. A layer is a group of peers; a
# package's __init__ sits above its modules ("backbones.*": every module of the package).
LAYERS = [
    ["errors", "_version"],
    ["_io", "progress", "labels", "hub", "tables", "plots", "_torchvision", "distributed", "registry"],
    ["codes"],
    ["metrics"],
    ["index.prefix", "index.storage", "index.kernels", "index.vectors", "index.asymmetric"],
    ["index.mih"],
    ["index.hamming", "index.milvus", "index.rerank"],
    ["index"],
    ["data.images", "data.outfits", "data.sources"],
    ["data.lists", "data.openmoji", "data.protocols"],
    ["data"],
    ["config"],
    ["data.splits"],
    ["backbones"],
    ["backbones.*"],
    ["augment", "deform"],
    ["features"],
    ["views"],
    ["model"],
    ["methods.base", "methods.targets"],
    ["methods.*"],
    ["methods"],
    ["checkpoint"],
    ["train"],
    ["run", "encoders"],
    ["export", "evaluate", "robustness"],
    ["shallow.hashers"],
    ["shallow.runner"],
    ["shallow"],
    ["collection.metadata"],
    ["collection.store"],
    ["collection.filtered"],
    ["collection.files", "collection.inputs", "collection.engine", "collection.snapshot", "collection.vectors"],
    ["collection"],
    ["serve.batcher", "serve.token", "serve.metrics"],
    ["serve.app"],
    ["serve"],
    ["report"],
    ["cli"],
    ["__main__", ""],
]


def _layer_of(module: str) -> int:
    for i, layer in enumerate(LAYERS):  # an exact name first, then a package's wildcard
        if module in layer:
            return i
    for i, layer in enumerate(LAYERS):
        if any(p.endswith(".*") and module.startswith(p[:-1]) for p in layer):
            return i
    raise AssertionError(f"hashdistill.{module} is in no layer: add it to LAYERS and docs/architecture.md")


def _imports(path, module: str) -> list[tuple[str, int]]:
    """The hashdistill modules ``module`` imports (relative or absolute, anywhere in the file), with line numbers."""
    import ast

    tree, found = ast.parse(path.read_text()), []
    parts = [p for p in module.split(".") if p]
    package = parts if path.name == "__init__.py" else parts[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "hashdistill":
                target = node.module.removeprefix("hashdistill").lstrip(".")
            else:
                continue
            names = [a.name for a in node.names]
            subs = [f"{target}.{n}".lstrip(".") for n in names]  # `from . import x` names a module x
            found += [(s, node.lineno) for s in subs if _is_module(s)] or [(target, node.lineno)]
        elif isinstance(node, ast.Import):
            found += [(a.name.removeprefix("hashdistill").lstrip("."), node.lineno) for a in node.names
                      if a.name.split(".")[0] == "hashdistill"]  # fmt: skip
    return found


def _is_module(name: str) -> bool:
    from pathlib import Path

    root = Path("src/hashdistill") / name.replace(".", "/")
    return root.with_suffix(".py").is_file() or (root / "__init__.py").is_file()


def test_no_module_imports_from_a_layer_above_its_own():
    from pathlib import Path

    root = Path("src/hashdistill")
    upward = []
    for path in sorted(root.rglob("*.py")):
        module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix("__init__").rstrip(".")
        mine = _layer_of(module)
        for target, line in _imports(path, module):
            if _layer_of(target) > mine:
                upward.append(
                    f"{path}:{line}: {module or 'hashdistill'} (layer {mine}) imports {target} (layer {_layer_of(target)})"
                )
    assert not upward, "\n".join(upward)


def _fresh(code: str) -> str:
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_reading_a_config_module_and_naming_registries_loads_no_torch():
    """``import hashdistill.config`` (and the registries, the errors, the CLI module) loads no torch; the
    registries resolve lazily, on the first lookup."""
    code = ("import sys, hashdistill.config, hashdistill.registry, hashdistill.errors, hashdistill.cli, hashdistill.collection; "
            "print(sorted(m for m in ('torch', 'kornia', 'scipy', 'numba', 'timm') if m in sys.modules))")  # fmt: skip
    assert _fresh(code) == "[]"


def test_registries_name_and_check_entries_without_importing_them():
    """The names come from the modules' source: listing them, checking a config's backbone and refusing an
    unknown method load no torch; a lookup imports the one module that registers the name."""
    code = ("import sys; from hashdistill.registry import METHODS, BACKBONES; from hashdistill.config import load_config\n"
            "names = (len(METHODS.names()), 'dhd' in METHODS, 'mobilenet_v2' in BACKBONES, 'nope' in BACKBONES)\n"
            "try:\n    load_config(None, ['method=nope', 'model.backbone=mobilenet_v2'])\n"
            "except ValueError as e:\n    names += (str(e).split(';')[0],)\n"
            "print(names, 'torch' in sys.modules)\n"
            "METHODS.get('dsh'); print(sorted(set(METHODS.declared().values()) & set(sys.modules)))")  # fmt: skip
    first, second = _fresh(code).splitlines()
    assert first == "(25, True, True, False, \"method.name: unknown method 'nope'\") False"
    assert second == "['hashdistill.methods.dhd', 'hashdistill.methods.dsh']"  # (dhd: its L_SdH, for SelfDistilled)


def test_every_entry_a_package_registers_is_declared_in_its_source():
    """After importing every module, the registries hold no package entry their source scan missed (a name built
    at run time would be invisible to ``names()`` and unknown to a config)."""
    import importlib
    import pkgutil

    from hashdistill.registry import BACKBONES, INDEX_BACKENDS, METHODS

    for registry in (METHODS, BACKBONES, INDEX_BACKENDS):
        package = importlib.import_module(registry.package)
        for found in pkgutil.walk_packages(package.__path__, f"{registry.package}."):
            importlib.import_module(found.name)
        ours = {n for n, (obj, _) in registry._entries.items() if obj.__module__.startswith(registry.package)}
        assert ours == set(registry.declared()) and len(ours) >= 2, registry.kind


def test_a_collection_encoding_with_onnx_searches_by_image_without_torch(shapes_run, shapes, tmp_path):
    from hashdistill.collection import Collection

    with Collection.create(tmp_path / "c.hdc", shapes_run) as col:
        assert col.meta["engine"] == "onnx"
        col.add(shapes / "database")
    query = shapes / "query" / "disc" / "disc-000.png"
    code = (f"import sys; from hashdistill.cli import main; code = main(['search', {str(tmp_path / 'c.hdc')!r}, '--image', "
            f"{str(query)!r}, '-k', '3', '--json']); print(code, sorted(m for m in ('torch', 'numba', 'scipy') if m in sys.modules))")  # fmt: skip
    out = _fresh(code).splitlines()
    assert out[-1] == "0 []", out


def test_a_backbone_and_an_index_backend_defined_in_a_test_are_used_by_name(shapes_run, shapes, tmp_path):
    """One decorator each, no other edit: the config validates the backbone's name, ``create_backbone`` builds it
    with the settings its entry carries, the view transforms take its normalisation; a collection keeps its
    index in the backend named at creation and reopens with it."""
    import numpy as np
    import torch

    from hashdistill.augment import view_transforms
    from hashdistill.backbones import create_backbone
    from hashdistill.codes import PackedCodes
    from hashdistill.collection import Collection
    from hashdistill.config import load_config
    from hashdistill.index import HammingIndex
    from hashdistill.registry import BACKBONES, INDEX_BACKENDS

    @BACKBONES.register("mean-pool-test", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), blocks=None)
    def mean_pool(pretrained, input_size=None, layer=None):
        return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten()), 48

    opened = []

    @INDEX_BACKENDS.register("counting-test", uri=False)
    def counting(bits, options, ids, codes):
        opened.append(len(ids))
        index = HammingIndex(bits, "flat")
        if len(ids):
            index.add(codes, ids)
        return index

    try:
        cfg = load_config(None, ["model.backbone=mean-pool-test", "model.input_size=32"])
        net, dim = create_backbone("mean-pool-test", input_size=32)
        assert dim == 48 and net(torch.zeros(2, 3, 32, 32)).shape == (2, 48)
        clean = view_transforms(cfg)[2]
        assert torch.allclose(clean.mean.flatten(), torch.tensor([0.5] * 3))
        with pytest.raises(errors.ModelError, match="layer= is supported for mobilenet_v2 only, not 'mean-pool-test'"):
            create_backbone("mean-pool-test", layer=3)
        with Collection.create(tmp_path / "c.hdc", shapes_run, backend="counting-test") as col:
            col.add(shapes / "database" / "disc")
            assert (
                col.stats()["backend"] == "counting-test"
                and len(col.search(codes=PackedCodes(np.zeros((1, 2), np.uint8)), k=3)[0]) == 3
            )
        Collection.open(tmp_path / "c.hdc").close()
        assert opened == [0, 20]  # created empty, reopened from its 20 items
        with pytest.raises(errors.CollectionError, match="backend must be one of .*counting-test.*flat, milvus, got 'nope'"):
            Collection.create(tmp_path / "d.hdc", shapes_run, backend="nope")
    finally:
        BACKBONES.remove("mean-pool-test")
        INDEX_BACKENDS.remove("counting-test")
