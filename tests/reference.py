"""Slow, obviously-correct metric loops: the independent implementation the fast metrics are checked against."""

from __future__ import annotations


def _ham(a, b):
    return sum(x != y for x, y in zip(a, b))


def _relevant(qa, db):
    if isinstance(qa, (list, tuple)):
        return any(x and y for x, y in zip(qa, db))
    return qa == db


def ranking(q, db_codes):
    """Database positions sorted by Hamming distance, ties by position."""
    d = [_ham(q, c) for c in db_codes]
    return sorted(range(len(db_codes)), key=lambda i: (d[i], i)), d


def average_precision(q, ql, db_codes, db_labels, topk=None):
    order, _ = ranking(q, db_codes)
    order = order[: topk or len(order)]
    hits, total = 0, 0.0
    for rank, i in enumerate(order, 1):
        if _relevant(ql, db_labels[i]):
            hits += 1
            total += hits / rank
    return total / hits if hits else 0.0


def mean_ap(qc, dc, ql, dl, topk=None):
    return sum(average_precision(q, l, dc, dl, topk) for q, l in zip(qc, ql)) / len(qc)


def precision_radius(q, ql, db_codes, db_labels, r):
    inside = [i for i, c in enumerate(db_codes) if _ham(q, c) <= r]
    if not inside:
        return 0.0
    return sum(_relevant(ql, db_labels[i]) for i in inside) / len(inside)


def recall_radius(q, ql, db_codes, db_labels, r):
    rel = [i for i in range(len(db_codes)) if _relevant(ql, db_labels[i])]
    if not rel:
        return 0.0
    return sum(_ham(q, db_codes[i]) <= r for i in rel) / len(rel)


def precision_top(q, ql, db_codes, db_labels, k):
    order, _ = ranking(q, db_codes)
    k = min(k, len(order))
    return sum(_relevant(ql, db_labels[i]) for i in order[:k]) / k
