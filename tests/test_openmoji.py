"""The ``openmoji`` protocol: the source checks, the split rule on the real 17.0.0 metadata, the rendered pool,
and the instance-level metric on a hand-made case."""

import io
import json
import tarfile
from collections import Counter, defaultdict

import numpy as np
import pytest

from hashdistill.codes import PackedCodes
from hashdistill.data import DataNotFoundError, load_protocol
from hashdistill.data.openmoji import METADATA, OpenMojiPackage, find_openmoji
from hashdistill.data.protocols import OPENMOJI_MIN_FAMILIES, split_openmoji
from hashdistill.errors import DataError
from hashdistill.metrics import float_scores, score, sibling_map


@pytest.fixture(scope="module")
def package():
    return find_openmoji(fetch=False)  # `make test` prepared it (npm pack openmoji@17.0.0)


@pytest.fixture(scope="module")
def raw(package):
    return json.loads(package.read(METADATA))


def test_the_split_rule_on_the_real_metadata(package, raw):
    p = split_openmoji(package.emoji())
    # families and classes counted straight from openmoji.json
    base = {e["hexcode"]: e["skintone_base_hexcode"] or e["hexcode"] for e in raw}
    sub = {e["hexcode"]: e["subgroups"] for e in raw}
    families_per_subgroup = Counter(sub[h] for h, b in base.items() if b == h)
    kept = sorted(s for s, n in families_per_subgroup.items() if n >= OPENMOJI_MIN_FAMILIES)
    assert p.class_names == kept and len(kept) == 76
    hexcode = p.extra["hexcode"].tolist()
    assert len(hexcode) == sum(1 for e in raw if sub[base[e["hexcode"]]] in kept) == 4028
    # class = subgroup, and a skin-tone variant keeps its base's class
    assert [kept[c] for c in p.labels] == [sub[h] for h in hexcode] == [sub[base[h]] for h in hexcode]
    family = p.extra["family"]
    assert [hexcode[f] for f in family] == [base[h] for h in hexcode]
    # a base emoji and its variants never reach two of {query, train}; one query per query family
    q_fam, t_fam = set(family[p.query].tolist()), set(family[p.train].tolist())
    assert not q_fam & t_fam and len(q_fam) == len(p.query)
    members = defaultdict(set)
    for i, f in enumerate(family.tolist()):
        members[f].add(i)
    assert all(members[f] <= set(p.train.tolist()) for f in t_fam)  # a training family is trained whole
    # the database is the pool minus the queries, the training images in it
    assert (p.database == np.setdiff1d(np.arange(len(hexcode)), p.query)).all()
    assert np.isin(p.train, p.database).all()
    # the counts: a fifth of each class's families (at least one) as queries, two fifths trained
    for c, name in enumerate(kept):
        n = families_per_subgroup[name]
        assert (p.labels[p.query] == c).sum() == max(1, round(0.2 * n))
        assert len({f for f in t_fam if p.labels[f] == c}) == max(1, round(0.4 * n))
    assert (len(p.query), len(p.train), len(p.database)) == (440, 1690, 3588)
    again = split_openmoji(package.emoji())
    assert all((again.indices(s) == p.indices(s)).all() for s in ("query", "train", "database"))


def test_the_prepared_protocol_is_colour_64px_on_white():
    p = load_protocol("openmoji")
    assert p.images.shape == (4028, 64, 64, 3) and p.images.dtype == np.uint8
    assert (p.images[:, 0, 0] == 255).all()  # the corners are the white background
    x = p.images.astype(int)
    chroma = x.max(-1) - x.min(-1)  # 0 on a grey pixel
    assert ((chroma > 30).mean(axis=(1, 2)) > 0.05).mean() > 0.8  # most emoji are colour, not grey
    tones = np.flatnonzero(p.extra["family"] != np.arange(len(p.images)))  # a skin-tone variant ...
    apart = (p.images[tones] != p.images[p.extra["family"][tones]]).any(axis=(1, 2, 3))
    assert apart.mean() > 0.95  # ... is drawn apart from its base (OpenMoji draws 40 mixed-tone pairs as the base)


def test_sibling_map_ranks_by_family_on_a_hand_made_case():
    # 8-bit codes: the database holds families 0, 0, 1, 2; queries of family 0, 1 and 3 (no sibling)
    db = PackedCodes(np.array([[0b00000000], [0b11110000], [0b00000001], [0b00000011]], np.uint8))
    q = PackedCodes(np.array([[0b00000000], [0b00000011], [0b11111111]], np.uint8))
    db_family, q_family = np.array([0, 0, 1, 2]), np.array([0, 1, 3])
    # query 0: distances 0, 4, 1, 2 -> family-0 items (ids 0, 1) at ranks 1 and 4: AP = (1/1 + 2/4) / 2
    # query 1: distances 2, 6, 1, 0 -> its one sibling (id 2) at rank 2: AP = 1/2; query 2 has none: left out
    want = ((1 + 2 / 4) / 2 + 1 / 2) / 2
    assert sibling_map(q, db, q_family, db_family) == pytest.approx(want)
    assert sibling_map(q[[2]], db, q_family[[2]], db_family) is None
    out = score(q, db, np.array([0, 0, 0]), np.array([0, 1, 0, 1]), 4, query_family=q_family, db_family=db_family)
    assert out["map_siblings"] == pytest.approx(want) and "map_siblings" not in score(q, db, [0, 0, 0], [0, 1, 0, 1], 4)


def test_a_wrong_source_is_named_in_one_line(tmp_path, monkeypatch, package):
    fake = tmp_path / "openmoji-17.0.0.tgz"
    with tarfile.open(fake, "w:gz") as tar:
        data = json.dumps([]).encode()
        info = tarfile.TarInfo("package/data/openmoji.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError, match=r"openmoji-17\.0\.0\.tgz: not the npm tarball of openmoji@17\.0\.0"):
        OpenMojiPackage(fake)
    with pytest.raises(DataNotFoundError, match="no data/openmoji.json"):
        OpenMojiPackage(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "openmoji.json").write_text("[]")
    with pytest.raises(DataError, match="is not OpenMoji 17.0.0's"):
        OpenMojiPackage(tmp_path).emoji()
    # no tarball anywhere and no npm: the line names the offline option
    monkeypatch.setenv("HASHDISTILL_DATA", str(tmp_path / "home"))
    monkeypatch.delenv("HASHDISTILL_OPENMOJI", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(DataNotFoundError, match=r"npm pack openmoji@17\.0\.0.*--root"):
        find_openmoji()
    # the unpacked folder renders the same pixels as the tarball
    folder = tmp_path / "unpacked"
    for name in (METADATA, "color/svg/1F600.svg", "color/svg/1F44D-1F3FD.svg"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(package.read(name))
    hexcodes = ["1F600", "1F44D-1F3FD"]
    assert (OpenMojiPackage(folder).render(hexcodes) == package.render(hexcodes)).all()
    with pytest.raises(DataError, match="color/svg/1F601.svg is missing"):
        OpenMojiPackage(folder).render(["1F601"])


def test_float_scores_rank_by_cosine_on_a_hand_made_case():
    # cosine to query [1, 0]: db 0 (0.6), db 1 (1.0, any length), db 2 (-1), db 3 (0.8)
    db = np.array([[3.0, 4.0], [5.0, 0.0], [-1.0, 0.0], [4.0, 3.0]])
    q = np.array([[1.0, 0.0]])
    # order 1, 3, 0, 2; relevant (label 1): db 0 and db 2 at ranks 3 and 4 -> AP = (1/3 + 2/4) / 2
    out = float_scores(q, db, [1], [1, 0, 1, 0], 2, query_family=[7], db_family=[0, 7, 0, 0])
    assert out["map_all"] == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert out["map_at_2"] == 0.0  # nothing relevant in the top 2
    assert out["map_siblings"] == pytest.approx(1.0)  # its one sibling (db 1) ranks first


def test_ranking_scores_of_the_hamming_order_equal_the_code_metrics(fmnist):
    """Any ranking scores as ``score`` does: given the Hamming order itself, the same mAP@K and mAP@all."""
    from hashdistill.codes import hamming, pack
    from hashdistill.metrics import mean_average_precision, ranking_scores

    rng = np.random.default_rng(0)
    q, db = pack(rng.choice([-1, 1], (40, 16))), pack(rng.choice([-1, 1], (500, 16)))
    ql, dl = fmnist.labels[fmnist.query[:40]], fmnist.labels[fmnist.database[:500]]
    d = hamming(q, db)
    got = ranking_scores(lambda rows: np.argsort(d[rows], axis=1, kind="stable"), ql, dl, 100, block=7)
    assert got["map_at_100"] == pytest.approx(mean_average_precision(q, db, ql, dl, 100))
    assert got["map_all"] == pytest.approx(mean_average_precision(q, db, ql, dl))
