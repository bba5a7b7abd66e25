"""The HTTP service and its page (``hashdistill serve DIR``); docs/service.md."""

from .app import Limits, create_app

__all__ = ["Limits", "create_app"]
