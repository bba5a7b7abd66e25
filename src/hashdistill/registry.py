"""Registries, the way timm registers its models: ``@METHODS.register("dhd")`` above a class in its own module
is all it takes to add a method (likewise ``BACKBONES`` and ``INDEX_BACKENDS``); nothing else names it.

A registry is lazy: it reads which names its package's modules register from their source (a
``SYMBOL.register("literal name", ...)`` call, decorator or not) without importing them, so listing names and
checking one (what validating a config's ``method.name`` or ``model.backbone`` does) imports no method, no
backbone and no torch. Looking an entry up imports the one module that registers it. An entry defined anywhere
else (a user's module, a test file) registers when that module is imported. An entry carries its own settings
(``register(name, **info)``, read back with ``info(name)``): a backbone its input normalisation and whether
it can be cut at a block.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from .errors import ConfigError, MethodError, ModelError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to objects (classes, factories), each with its own settings; ``kind`` names it in errors, and
    ``symbol`` is the name the package's modules call it by (``METHODS``), which is how its source is read."""

    def __init__(self, kind: str, package: str, symbol: str, error: Callable[[str], Exception] = ConfigError) -> None:
        self.kind, self.package, self.symbol, self.error = kind, package, symbol, error
        self._entries: dict[str, tuple[T, dict[str, Any]]] = {}
        self._declared: dict[str, str] | None = None  # name -> the module of the package that registers it

    def register(self, name: str, **info: Any) -> Callable[[T], T]:
        """A decorator: ``@REGISTRY.register("name", setting=value)`` above a class or function."""

        def add(obj: T) -> T:
            if name in self._entries and self._entries[name][0] is not obj:
                held = self._entries[name][0]
                raise self.error(f"{self.kind} {name!r} is registered twice ({_where(held)} and {_where(obj)})")
            self._entries[name] = (obj, info)
            return obj

        return add

    def declared(self) -> dict[str, str]:
        """The names the package's modules register, each with its module, read from their source (not imported):
        a line that starts ``SYMBOL.register("name"`` or ``@SYMBOL.register("name"``."""
        if self._declared is None:
            spec = importlib.util.find_spec(self.package)
            root = Path(next(iter(spec.submodule_search_locations)))
            pattern = re.compile(rf"^[ \t]*@?{self.symbol}\.register\(\s*[\"']([^\"']+)[\"']", re.MULTILINE)
            found: dict[str, str] = {}
            for path in sorted(root.rglob("*.py")):
                parts = path.relative_to(root).with_suffix("").parts
                module = ".".join((self.package, *parts[:-1], *([] if parts[-1] == "__init__" else parts[-1:])))
                for name in pattern.findall(path.read_text(encoding="utf-8")):
                    found[name] = module
            self._declared = found
        return self._declared

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self.declared()

    def get(self, name: str) -> T:
        """The entry ``name`` (importing the module that registers it); an unknown name lists the known ones."""
        if name not in self._entries and name in self.declared():
            importlib.import_module(self.declared()[name])
        if name not in self._entries:
            raise self.error(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._entries[name][0]

    def info(self, name: str) -> dict[str, Any]:
        """The settings ``name`` was registered with."""
        self.get(name)
        return dict(self._entries[name][1])

    def names(self) -> list[str]:
        """Every name, sorted: those the package declares and those registered from elsewhere."""
        return sorted(set(self._entries) | set(self.declared()))

    def remove(self, name: str) -> None:
        """Forget ``name`` (a test's own entry, after the test)."""
        self._entries.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __getitem__(self, name: str) -> T:
        return self.get(name)


def _where(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


METHODS: Registry[Any] = Registry("method", "hashdistill.methods", "METHODS", lambda message: MethodError("name", message))
"""Deep hashing methods: ``HashingMethod`` subclasses, by a config's ``method.name`` (methods/)."""
BACKBONES: Registry[Any] = Registry("backbone", "hashdistill.backbones", "BACKBONES", ModelError)
"""Backbone factories ``(pretrained, input_size, layer) -> (module, feature_dim)`` (backbones/)."""
INDEX_BACKENDS: Registry[Any] = Registry("index backend", "hashdistill.index", "INDEX_BACKENDS")
"""Where a collection keeps its Hamming index: factories ``(bits, meta) -> index`` (index/)."""
