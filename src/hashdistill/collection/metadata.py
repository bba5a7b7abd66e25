"""Item metadata and search filters (docs/service.md, "Metadata and filters").

Metadata is a flat JSON object per item: at most ``MAX_KEYS`` keys (letters, digits, ``_`` and ``-``, up to
64 characters), each value a string, number, boolean or null, the whole at most ``MAX_BYTES`` as JSON. It is
kept as JSON text in the item table.

A filter says which items a search may return: an object whose keys are ``label`` or ``meta.<key>`` and whose
values are one value (equality) or ``{"in": [values]}`` (membership); several keys must all hold::

    {"label": "Shirt"}
    {"meta.shop": {"in": ["a", "b"]}, "label": "Shirt"}

``Where.sql`` turns it into a SQL condition on the item table (values always bound as parameters, never
spliced into the text).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from ..errors import CollectionError

MAX_KEYS = 32
MAX_BYTES = 4096
MAX_IN = 256  # values in one ``{"in": [...]}``
KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
Scalar = str | int | float | bool | None


def check_metadata(meta: Any, what: str = "metadata") -> str | None:
    """``meta`` as the JSON text the item table keeps (None for no metadata), or ``CollectionError`` naming
    ``what`` and the culprit key."""
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise CollectionError(f"{what}: a JSON object of key: value, got {type(meta).__name__}")
    if len(meta) > MAX_KEYS:
        raise CollectionError(f"{what}: {len(meta)} keys, at most {MAX_KEYS}")
    for key, value in meta.items():
        if not isinstance(key, str) or not KEY.fullmatch(key):
            raise CollectionError(f"{what}: key {key!r} must be 1-64 letters, digits, '_' or '-'")
        if not _scalar(value, allow_null=True):
            raise CollectionError(f"{what}.{key}: a string, number, boolean or null, got {type(value).__name__}")
    text = json.dumps(meta, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    if len(text.encode()) > MAX_BYTES:
        raise CollectionError(f"{what}: {len(text.encode()):,} bytes as JSON, at most {MAX_BYTES:,}")
    return text if meta else None


def merge_metadata(old: dict | None, patch: dict, what: str = "metadata") -> str | None:
    """``old`` with ``patch`` applied as a JSON merge patch (RFC 7396, one level): a key set to null is removed."""
    check_metadata(patch, what)
    merged = {**(old or {}), **patch}
    return check_metadata({k: v for k, v in merged.items() if v is not None}, what)


def _scalar(value: Any, allow_null: bool = False) -> bool:
    if value is None:
        return allow_null
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | int | bool) and not (isinstance(value, int) and not -(2**63) <= value < 2**63)


@dataclass(frozen=True)
class Where:
    """A parsed filter: ``terms`` are (field, allowed values), the field ``label`` or ``meta.<key>``."""

    terms: tuple[tuple[str, tuple[Scalar, ...]], ...]

    @classmethod
    def parse(cls, spec: Any, what: str = "filter") -> Where | None:
        """A filter from its JSON form (see the module docstring); None or ``{}`` is no filter."""
        if spec is None or isinstance(spec, Where):
            return spec
        if not isinstance(spec, dict):
            raise CollectionError(f'{what}: a JSON object such as {{"label": "Shirt"}}, got {type(spec).__name__}')
        if len(spec) > MAX_KEYS + 1:
            raise CollectionError(f"{what}: {len(spec)} conditions, at most {MAX_KEYS + 1}")
        terms = []
        for field, cond in sorted(spec.items()):
            if field != "label" and not (isinstance(field, str) and field.startswith("meta.") and KEY.fullmatch(field[5:])):
                raise CollectionError(f"{what}: unknown field {field!r} (label, or meta.<key>)")
            if isinstance(cond, dict):
                if set(cond) != {"in"} or not isinstance(cond["in"], list):
                    raise CollectionError(f'{what}.{field}: a value, or {{"in": [values]}}')
                values = cond["in"]
                if not 0 < len(values) <= MAX_IN:
                    raise CollectionError(f"{what}.{field}.in: 1 to {MAX_IN} values, got {len(values)}")
            else:
                values = [cond]
            for v in values:
                if not _scalar(v) or (field == "label" and not isinstance(v, str)):
                    kind = "a string" if field == "label" else "a string, number or boolean"
                    raise CollectionError(f"{what}.{field}: each value must be {kind}, got {v!r}"[:200])
            terms.append((field, tuple(values)))
        return cls(tuple(terms)) if terms else None

    def sql(self) -> tuple[str, list[Any]]:
        """A condition on the item table and its parameters."""
        parts, params = [], []
        for field, values in self.terms:
            column = "label" if field == "label" else "json_extract(meta, ?)"
            if field != "label":
                params.append(f'$."{field[5:]}"')
            parts.append(f"{column} IN ({','.join('?' * len(values))})")
            params.extend(values)
        return " AND ".join(parts), params

    def key(self) -> str:
        """A canonical text of the filter (equal filters, equal keys)."""
        return json.dumps(self.terms)
