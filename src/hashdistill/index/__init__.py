"""Exact Hamming search: ``HammingIndex`` (embedded: flat scan, multi-index hashing) and ``MilvusIndex`` (scale-out)."""

from .hamming import INDEX_METHODS, HammingIndex
from .storage import IndexFileError

__all__ = ["HammingIndex", "IndexFileError", "INDEX_METHODS", "MilvusIndex"]


def __getattr__(name: str):
    if name == "MilvusIndex":  # pymilvus is an optional extra: import it only when asked for
        from .milvus import MilvusIndex

        return MilvusIndex
    raise AttributeError(name)
