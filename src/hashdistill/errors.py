"""One error type for everything a user can fix: ``HashdistillError`` and the domain errors under it.

The CLI boundary (``cli.main``) prints a ``HashdistillError`` (and an ``OSError`` on a path the user named) as
one line ``hashdistill: error: …`` with status 1; any other exception is a bug and says so (``internal
error``). Each error's message names the culprit: a file, a list line, a config key, an option. They
subclass ``ValueError`` too, so ``except ValueError`` in a user's code keeps working (as scikit-learn's
``NotFittedError`` does). This module imports nothing: every layer may raise these.
"""

from __future__ import annotations


class HashdistillError(ValueError):
    """Bad input or settings, named in the message; never a bug inside hashdistill or a library it calls."""


class ConfigError(HashdistillError):
    """A bad configuration or option value; the message is one line naming the key path."""


class DataError(HashdistillError):
    """Images, list files, data sources or protocols that cannot be used as given."""


class CodesError(HashdistillError):
    """Codes, labels or index arguments that do not fit together (bits, shapes, k, radius)."""


class ModelError(HashdistillError):
    """A backbone, weights file, run folder or exported model that cannot be used."""


class MethodError(HashdistillError):
    """Bad method settings: ``key`` is the path inside the method's section, ``message`` what is wrong."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"method.{key}: {message}" if key else f"method: {message}")
        self.key, self.message = key, message


class HasherError(HashdistillError):
    """A shallow hasher's parameters or data that do not fit (``shallow/``)."""


class CollectionError(HashdistillError):
    """A folder that is not a usable collection, or a bad request to one; the message names the culprit."""


__all__ = [
    "CodesError",
    "CollectionError",
    "ConfigError",
    "DataError",
    "HashdistillError",
    "HasherError",
    "MethodError",
    "ModelError",
]
