"""Metadata on items, filtered search (both strategies against brute force), pages: the collection's facade."""

import numpy as np
import pytest

from hashdistill.codes import hamming, pack, unpack
from hashdistill.collection import Collection, CollectionError
from hashdistill.run import Run

SHOPS = ["a", "b", "c", "d", "e"]


def make_filled(shapes_run, folder):
    """A collection of the shapes run's 60 database codes, each also 30 times with 1-2 bits flipped (1,860 items,
    16 bits: many ties), with a shop, a price and a flag as metadata; some items removed, so ids have gaps."""
    run = Run.load(shapes_run)
    real = unpack(run.codes("database"))  # (60, 16) in -1 / +1
    rng = np.random.default_rng(0)
    reps = np.repeat(real, 31, axis=0)
    flips = rng.random(reps.shape) < 0.08
    flips[::31] = False
    codes = np.where(flips, -reps, reps).astype(np.int8)
    n = len(codes)
    shapes = run.data.class_names
    db_labels = np.repeat(run.data.split("database").labels, 31)
    meta = [
        {"shop": SHOPS[i % 5] if i % 7 else SHOPS[0], "price": int(rng.integers(0, 100)), "sale": bool(i % 3 == 0)}
        for i in range(n)
    ]
    meta[5] = None  # an item without metadata
    col = Collection.create(folder, shapes_run, engine="torch")
    ids = col.add_codes(codes, [f"x:{i}" for i in range(n)], [shapes[j] for j in db_labels], metadata=meta)
    gone = ids[rng.choice(n, 60, replace=False)]
    col.remove(gone)
    keep = ~np.isin(ids, gone)
    return col, ids[keep], codes[keep], [shapes[j] for j in db_labels[keep]], [m for m, k in zip(meta, keep) if k]


@pytest.fixture(scope="module")
def filled(shapes_run, tmp_path_factory):
    out = make_filled(shapes_run, tmp_path_factory.mktemp("f") / "col")
    yield out
    out[0].close()


def brute(q, codes, ids, allowed, k, radius=None):
    """The k nearest allowed items by (distance, id), computed here from all the codes."""
    d = hamming(pack(q), pack(codes))
    out = []
    for row in d:
        hits = sorted((int(row[j]), int(ids[j])) for j in np.flatnonzero(allowed) if radius is None or row[j] <= radius)
        out.append([(i, dd) for dd, i in hits[:k]])
    return out


FILTERS = [
    ({"label": "disc"}, lambda lab, m: lab == "disc"),  # a third of the items: broad
    ({"meta.shop": {"in": ["b", "c"]}}, lambda lab, m: m is not None and m["shop"] in ("b", "c")),
    ({"meta.price": 7}, lambda lab, m: m is not None and m["price"] == 7),  # about 1 %: selective
    ({"meta.sale": True, "label": "hstripes"}, lambda lab, m: lab == "hstripes" and m is not None and m["sale"]),
    ({"meta.shop": "zzz"}, lambda lab, m: False),  # allows nothing
    ({"meta.shop": {"in": ["a", "b", "c", "d", "e"]}}, lambda lab, m: m is not None),  # nearly all
]


@pytest.mark.parametrize("strategy", ["mask", "scan", "auto"])
@pytest.mark.parametrize("spec,rule", FILTERS)
def test_filtered_search_equals_brute_force(filled, spec, rule, strategy):
    col, ids, codes, labels, meta = filled
    allowed = np.array([rule(lab, m) for lab, m in zip(labels, meta)])
    assert allowed.any() == (spec != {"meta.shop": "zzz"})  # the filters allow what they were written to
    q = codes[::97][:12]
    for k, radius in [(1, None), (10, None), (200, None), (50, 2)]:
        got = col.search_codes(q, k, radius, where=spec, strategy=strategy)
        want = brute(q, codes, ids, allowed, k, radius)
        assert [[(h.id, h.distance) for h in hits] for hits in got] == want, (spec, k, radius)
        for hits in got:
            assert all(rule(h.label, h.meta) for h in hits)


def test_a_cached_filter_follows_adds_removals_and_updates(shapes_run, tmp_path):
    col, ids, codes, labels, meta = make_filled(shapes_run, tmp_path / "col")
    q = codes[:3]
    broad, none_yet = {"label": "disc"}, {"meta.shop": "new"}
    for spec in (broad, none_yet):  # both filters cached before the writes
        col.search_codes(q, 5, where=spec, strategy="mask")
    assert col.search_codes(q, 5, where=none_yet)[0] == []
    new = col.add_codes(codes[:2], ["x:new1", "x:new2"], ["disc", "hstripes"], metadata={"shop": "new"})
    gone = [int(i) for i, lab in zip(ids, labels) if lab == "disc"][::50][:5]
    assert col.remove(gone) == 5
    all_ids, all_codes = np.concatenate([ids, new]), np.concatenate([codes, codes[:2]])
    all_labels = [*labels, "disc", "hstripes"]
    disc = np.array([lab == "disc" and i not in gone for i, lab in zip(all_ids, all_labels)])
    for strategy in ("mask", "scan"):
        got = col.search_codes(q, 300, where=broad, strategy=strategy)
        assert [[(h.id, h.distance) for h in hits] for hits in got] == brute(q, all_codes, all_ids, disc, 300)
    assert [h.id for h in col.search_codes(q, 5, where=none_yet)[0]] == [int(new[0]), int(new[1])]
    col.update(int(new[0]), {"shop": "old"})
    assert [h.id for h in col.search_codes(q, 5, where=none_yet)[0]] == [int(new[1])]
    assert col.remove(new) == 2
    assert col.search_codes(q, 5, where=none_yet)[0] == []
    col.close()


def test_metadata_updates_merge_and_null_removes(filled):
    col, ids, *_ = filled
    item = int(ids[10])
    before = col.get([item])[0].meta
    after = col.update(item, {"price": None, "colour": "red"}).meta
    assert "price" not in after and after["colour"] == "red" and after["shop"] == before["shop"]
    with pytest.raises(CollectionError, match="no item 999999"):
        col.update(999999, {"a": 1})


@pytest.mark.parametrize(
    "meta,match",
    [
        ([[1, 2]], r"metadata\[0\]: a JSON object"),
        ([{}, {}], "a list of 1; got 2 objects"),
        ({"bad key": 1}, "key 'bad key'"),
        ({"a": {"nested": 1}}, r"metadata\.a: a string, number"),
        ({"a": "x" * 5000}, "bytes as JSON, at most 4,096"),
        ({f"k{i}": i for i in range(33)}, "33 keys, at most 32"),
        ({"a": float("nan")}, r"metadata\.a"),
    ],
)
def test_bad_metadata_is_refused_naming_the_key(filled, meta, match):
    col, _, codes, *_ = filled
    n = len(col)
    with pytest.raises(CollectionError, match=match):
        col.add_codes(codes[:1], ["x:bad"], metadata=meta)
    assert len(col) == n  # nothing half written


@pytest.mark.parametrize(
    "spec,match",
    [
        ({"colour": "red"}, "unknown field 'colour'"),
        ({"meta.a": {"eq": 1}}, r"filter\.meta\.a: a value, or"),
        ({"meta.a": {"in": []}}, "1 to 256 values"),
        ({"label": 3}, "each value must be a string"),
        ({"meta.a b": 1}, "unknown field"),
        ("label=circle", "a JSON object"),
    ],
)
def test_bad_filters_are_refused(filled, spec, match):
    col, _, codes, *_ = filled
    with pytest.raises(CollectionError, match=match):
        col.search_codes(codes[:1], 5, where=spec)


def test_pages_walk_every_item_once_in_id_order(filled):
    col, ids, *_ = filled
    seen, after = [], 0
    while page := col.items(after=after, limit=137):
        seen += [h.id for h in page]
        after = page[-1].id
    assert seen == sorted(ids.tolist())
    assert col.items(after=int(ids[-1])) == []
    for bad in (0, 1001, "5"):
        with pytest.raises(CollectionError, match="limit must be in 1..1000"):
            col.items(limit=bad)


def test_rows_read_by_searches_follow_updates_and_removals(shapes_run, tmp_path):
    """The item rows a search returns are cached in memory: an update or a removal shows at once, here and
    after reopening (SQLite stays the source of truth)."""
    col, ids, codes, _, meta = make_filled(shapes_run, tmp_path / "col")
    first = col.search_codes(codes[:1], 3)[0]  # read (and cached) now
    item = first[0].id
    before = col.get([item])[0].meta
    assert before == meta[list(ids).index(item)]
    col.update(item, {"shop": "z", "colour": "red"})
    want = {**(before or {}), "shop": "z", "colour": "red"}
    assert col.search_codes(codes[:1], 3)[0][0].meta == want and col.get([item])[0].meta == want
    assert col.remove([item]) == 1
    assert col.get([item]) == [None] and item not in [h.id for h in col.search_codes(codes[:1], 3)[0]]
    col.close()
    with Collection.open(tmp_path / "col") as again:
        assert again.get([item]) == [None] and again.get([first[1].id])[0].meta == meta[list(ids).index(first[1].id)]


def test_codes_of_more_ids_than_sqlite_binds_at_once(filled):
    """The item table returns the codes of any number of ids, in their order (chunked under SQLite's limit)."""
    col, ids, codes, _, _ = filled
    want = pack(codes).array
    order = np.random.default_rng(3).permutation(len(ids))  # 1,800 ids, shuffled
    got = col.store.codes_of(ids[order].tolist(), col.bits // 8).array
    assert len(ids) > 900 and np.array_equal(got, want[order])
