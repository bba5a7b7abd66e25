"""``MilvusIndex``: the ``HammingIndex`` interface over Milvus (BINARY_VECTOR, HAMMING metric).

Embedded for tests and single machines with Milvus Lite (``uri`` is a local ``.db`` file; Milvus Lite
2.5 offers BIN_FLAT only); the same code scales out against a Milvus server or cluster:

    MilvusIndex("http://milvus-host:19530", "products", bits=64, token="user:password")

Install with ``pip install "hashdistill[milvus]"`` (pins milvus-lite 2.5.1 and pymilvus 2.5: Milvus
Lite 3.x dropped binary vectors). Distances are exact Hamming distances; the order of codes *tied*
at the same distance is Milvus's, not insertion order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..codes import PackedCodes, pack, to_numpy
from ..errors import CodesError
from ..registry import INDEX_BACKENDS
from . import storage

ID_FIELD, CODE_FIELD = "id", "code"
MAX_LIMIT = 16384  # Milvus's cap on results per query


class MilvusIndex:
    """Exact Hamming search in a Milvus collection (created on first use with a BIN_FLAT index)."""

    def __init__(
        self,
        uri: str,
        collection: str,
        bits: int,
        *,
        token: str = "",
        index_type: str = "BIN_FLAT",
        drop_existing: bool = False,
        batch_size: int = 10_000,
    ) -> None:
        try:
            from pymilvus import DataType, MilvusClient
        except ImportError:  # pragma: no cover - depends on the extra
            raise ImportError('MilvusIndex needs pymilvus: pip install "hashdistill[milvus]"') from None
        if bits <= 0 or bits % 8:
            raise CodesError(f"bits must be a positive multiple of 8, got {bits}")
        self.uri, self.collection, self.bits, self.batch_size = uri, collection, bits, batch_size
        self.client = MilvusClient(uri=uri, token=token)
        if drop_existing and self.client.has_collection(collection):
            self.client.drop_collection(collection)
        if self.client.has_collection(collection):
            dim = next(f for f in self.client.describe_collection(collection)["fields"] if f["name"] == CODE_FIELD)
            have = int(dim["params"]["dim"])
            if have != bits:
                raise CodesError(f"collection {collection!r} holds {have}-bit codes, not {bits}")
        else:
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field(ID_FIELD, DataType.INT64, is_primary=True)
            schema.add_field(CODE_FIELD, DataType.BINARY_VECTOR, dim=bits)
            params = self.client.prepare_index_params()
            params.add_index(field_name=CODE_FIELD, index_type=index_type, metric_type="HAMMING")
            self.client.create_collection(collection, schema=schema, index_params=params, consistency_level="Strong")
        self.client.load_collection(collection)

    def __repr__(self) -> str:
        return f"MilvusIndex(uri={self.uri!r}, collection={self.collection!r}, bits={self.bits})"

    @property
    def ntotal(self) -> int:
        res = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def __len__(self) -> int:
        return self.ntotal

    def warm_up(self) -> None:
        """Nothing to load ahead: Milvus Lite holds its index in its own process."""

    def add(self, codes: Any, ids: Any = None) -> None:
        """Insert codes; ``ids`` default to consecutive integers after the largest id present."""
        packed = pack(codes, self.bits, holder="the collection").array
        if ids is None:
            start = self._max_id() + 1
            ids = np.arange(start, start + len(packed))
        ids = np.asarray(to_numpy(ids), dtype=np.int64).reshape(-1)
        if len(ids) != len(packed):
            raise CodesError(f"{len(packed)} codes but {len(ids)} ids")
        for a in range(0, len(packed), self.batch_size):
            rows = [
                {ID_FIELD: int(i), CODE_FIELD: c.tobytes()}
                for i, c in zip(ids[a : a + self.batch_size], packed[a : a + self.batch_size])
            ]
            self.client.insert(self.collection, rows)

    def _max_id(self) -> int:
        if self.ntotal == 0:
            return -1
        ids = self._all_ids()
        return int(ids.max())

    def _all_ids(self) -> np.ndarray:
        rows = self.client.query(self.collection, filter=f"{ID_FIELD} >= {-(2**63)}", output_fields=[ID_FIELD])
        return np.array([r[ID_FIELD] for r in rows], np.int64)

    def _search(self, queries: Any, limit: int, params: dict) -> list[list[dict]]:
        packed = pack(queries, self.bits, holder="the collection").array
        return self.client.search(
            self.collection,
            data=[q.tobytes() for q in packed],
            anns_field=CODE_FIELD,
            limit=limit,
            search_params={"metric_type": "HAMMING", "params": params},
            output_fields=[ID_FIELD],
        )

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(distances int32 (nq, k), ids int64 (nq, k)); -1 where fewer than k codes exist."""
        if not 0 < k <= MAX_LIMIT:
            raise CodesError(f"k must be in 1..{MAX_LIMIT} for Milvus, got {k}")
        hits = self._search(queries, k, {})
        d = np.full((len(hits), k), -1, np.int32)
        ids = np.full((len(hits), k), -1, np.int64)
        for i, row in enumerate(hits):
            for j, h in enumerate(row):
                d[i, j], ids[i, j] = int(round(h["distance"])), h["id"]
        return d, ids

    def range_search(self, queries: Any, radius: int, limit: int = MAX_LIMIT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """faiss's (lims, distances, ids) for codes within ``radius``, at most ``limit`` per query."""
        # Milvus's range search keeps range_filter <= distance < radius for HAMMING
        hits = self._search(queries, limit, {"radius": radius + 1, "range_filter": 0})
        lims = np.zeros(len(hits) + 1, np.int64)
        d, ids = [], []
        for i, row in enumerate(hits):
            row = sorted(row, key=lambda h: (h["distance"], h["id"]))
            d += [int(round(h["distance"])) for h in row]
            ids += [h["id"] for h in row]
            lims[i + 1] = lims[i] + len(row)
        return lims, np.array(d, np.int32), np.array(ids, np.int64)

    def remove(self, ids: Any) -> int:
        ids = [int(i) for i in np.asarray(to_numpy(ids)).reshape(-1)]
        before = self.ntotal
        if ids:
            self.client.delete(self.collection, ids=ids)
        return before - self.ntotal

    def save(self, path: str | os.PathLike) -> Path:
        """Export the collection to a ``HammingIndex`` file (Milvus itself persists the collection)."""
        rows = self.client.query(self.collection, filter=f"{ID_FIELD} >= {-(2**63)}", output_fields=[ID_FIELD, CODE_FIELD])
        rows.sort(key=lambda r: r[ID_FIELD])
        packed = np.array([np.frombuffer(_as_bytes(r[CODE_FIELD]), np.uint8) for r in rows], np.uint8)
        packed = packed.reshape(len(rows), self.bits // 8)
        ids = np.array([r[ID_FIELD] for r in rows], np.int64)
        header = {
            "bits": self.bits,
            "method": "flat",
            "m": None,
            "n": len(ids),
            "next_id": int(ids.max()) + 1 if len(ids) else 0,
        }
        return storage.write_index(path, header, packed, ids)

    @classmethod
    def load(cls, path: str | os.PathLike, uri: str, collection: str, **kw: Any) -> MilvusIndex:
        """Create (or fill) a collection from a ``HammingIndex`` file."""
        header, packed, ids = storage.read_index(path)
        index = cls(uri, collection, header["bits"], **kw)
        index.add(packed, ids)
        return index


def _as_bytes(v: Any) -> bytes:
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if isinstance(v, list) and v and isinstance(v[0], (bytes, bytearray)):
        return bytes(v[0])
    return bytes(v)


@INDEX_BACKENDS.register("milvus", uri=True)
def milvus_backend(bits: int, options: dict[str, Any], ids: np.ndarray, codes: PackedCodes) -> MilvusIndex:
    """A collection's index in Milvus (``options``: ``uri``, a Milvus Lite file or a server, and
    ``milvus_collection``); one out of step with the item table (a crash between the commit and Milvus) is
    dropped and replayed from it."""
    index = MilvusIndex(options["uri"], options["milvus_collection"], bits)
    if len(index) != len(ids):
        index = MilvusIndex(options["uri"], options["milvus_collection"], bits, drop_existing=True)
        if len(ids):
            index.add(codes, ids)
    return index
