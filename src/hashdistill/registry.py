"""Registries, the way timm registers its models: ``@METHODS.register("dhd")`` above a class in its own module
is all it takes to add a method (likewise ``BACKBONES`` and ``INDEX_BACKENDS``); nothing else names it.

A registry is lazy: importing this module (or ``config``, which looks names up here) imports no method, no
backbone and no torch. The first lookup of a name it does not hold imports every module of the registry's
package once (``hashdistill.methods``, ...), which is where the built-in entries register; an entry defined
anywhere else (a user's module, a test file) registers when that module is imported. An entry carries its
own settings (``register(name, **info)``, read back with ``info(name)``): a backbone its input
normalisation, the smallest input it takes and whether it can be cut at a block.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .errors import ConfigError, MethodError, ModelError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to objects (classes, factories), each with its own settings; ``kind`` names it in errors."""

    def __init__(self, kind: str, package: str, error: Callable[[str], Exception] = ConfigError) -> None:
        self.kind, self.package, self.error = kind, package, error
        self._entries: dict[str, tuple[T, dict[str, Any]]] = {}
        self._loaded = False

    def register(self, name: str, **info: Any) -> Callable[[T], T]:
        """A decorator: ``@REGISTRY.register("name", setting=value)`` above a class or function."""

        def add(obj: T) -> T:
            if name in self._entries and self._entries[name][0] is not obj:
                held = self._entries[name][0]
                raise self.error(f"{self.kind} {name!r} is registered twice ({_where(held)} and {_where(obj)})")
            self._entries[name] = (obj, info)
            return obj

        return add

    def _load(self) -> None:
        """Import every module of the package once: the built-in entries register as they are imported."""
        if self._loaded:
            return
        self._loaded = True
        package = importlib.import_module(self.package)
        for found in pkgutil.walk_packages(package.__path__, f"{self.package}."):
            importlib.import_module(found.name)

    def __contains__(self, name: object) -> bool:
        if name not in self._entries:
            self._load()
        return name in self._entries

    def get(self, name: str) -> T:
        """The entry ``name``; an unknown name lists the known ones."""
        if name not in self:
            raise self.error(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._entries[name][0]

    def info(self, name: str) -> dict[str, Any]:
        """The settings ``name`` was registered with."""
        self.get(name)
        return dict(self._entries[name][1])

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._load()
        return sorted(self._entries)

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


METHODS: Registry[Any] = Registry("method", "hashdistill.methods", lambda message: MethodError("name", message))
"""Deep hashing methods: ``HashingMethod`` subclasses, by a config's ``method.name`` (methods/)."""
BACKBONES: Registry[Any] = Registry("backbone", "hashdistill.backbones", ModelError)
"""Backbone factories ``(pretrained, input_size, layer) -> (module, feature_dim)`` (backbones/)."""
INDEX_BACKENDS: Registry[Any] = Registry("index backend", "hashdistill.index")
"""Where a collection keeps its Hamming index: factories ``(bits, meta) -> index`` (index/)."""
