"""Exact Hamming search: ``HammingIndex`` (embedded: flat scan, multi-index hashing) and ``MilvusIndex``
(scale-out); re-ranking of its candidates (``rerank.py``) by the query's continuous output against the stored
bits, or against stored float vectors (``vectors.py``)."""

from .hamming import INDEX_METHODS, HammingIndex
from .rerank import RERANK, search_reranked
from .storage import IndexFileError
from .vectors import VectorFile, VectorFileError, write_vectors

__all__ = ["HammingIndex", "IndexFileError", "INDEX_METHODS", "MilvusIndex", "RERANK", "VectorFile", "VectorFileError",
           "search_reranked", "write_vectors"]  # fmt: skip


def __getattr__(name: str):
    if name == "MilvusIndex":  # pymilvus is an optional extra: import it only when asked for
        from .milvus import MilvusIndex

        return MilvusIndex
    raise AttributeError(name)
