"""The HTTP service and its page (``hashdistill serve DIR``); docs/service.md. ``create_app`` and ``Limits``
import FastAPI on first use (an optional extra); ``token`` does not."""

from typing import Any

__all__ = ["Limits", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module 'hashdistill.serve' has no attribute {name!r}")
