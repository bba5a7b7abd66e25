"""Your own images end to end: train on a folder, put images in a collection, search by an image file; the
collection's item table, durability under SIGKILL, the Milvus backend, ONNX encoding."""

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import SHAPES, SHAPES_TRAINING
from PIL import Image
from typer.testing import CliRunner

from hashdistill.cli import app
from hashdistill.codes import PackedCodes
from hashdistill.collection import Collection, CollectionError
from hashdistill.config import load_config
from hashdistill.run import Run
from hashdistill.train import Trainer, train

runner = CliRunner()
FAST = SHAPES_TRAINING


def test_a_class_folder_trains_and_is_scored(shapes_run):
    m = json.loads((shapes_run / "metrics.json").read_text())
    assert m["evaluated"] and m["map_all"] > 0.9  # three classes: chance is about 0.33
    run = Run.load(shapes_run)
    assert run.data.class_names == list(sorted(SHAPES)) and len(run.data.database) == 60


def test_from_a_folder_to_a_search_by_image_file(shapes, shapes_run, tmp_path):
    """The practitioner's path: collection create --add FOLDER, then search --image FILE."""
    col = tmp_path / "col"
    r = runner.invoke(app, ["collection", "create", str(col), "--run", str(shapes_run), "--add", str(shapes / "database")])
    assert r.exit_code == 0, r.output
    assert "60 items" in r.output
    queries = sorted((shapes / "query").rglob("*.png"))
    r = runner.invoke(app, ["search", str(col), *[a for q in queries for a in ("--image", str(q))], "-k", "5", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    top = [(q.parent.name, res["results"][0]["label"]) for q, res in zip(queries, out["queries"])]
    assert len(top) == 18 and sum(a == b for a, b in top) >= 16  # the nearest item shares the query's shape
    first = out["queries"][0]["results"]
    assert [h["score"] for h in first] == sorted((h["score"] for h in first), reverse=True)  # re-ranked (stored)
    assert all(os.path.isfile(h["source"]) and h["source"].startswith(str(shapes / "database")) for h in first)
    # the same search from Python, and an item's image is read back from its source
    with Collection.open(col) as c:
        hits = c.search(str(queries[0]), k=5)[0]
        assert [(h.id, h.distance) for h in hits] == [(h["id"], h["distance"]) for h in first]
        assert c.image(hits[0].id).shape == (48, 48, 3)
        # each file's thumbnail was written inside the collection when it was added: nothing outside is read
        assert len(list((col / "thumbs").iterdir())) == 60
        thumb = Image.open(io.BytesIO(c.thumbnail(hits[0].id)))
        assert thumb.format == "JPEG" and max(thumb.size) <= 160
        c.remove([hits[0].id])
        assert len(list((col / "thumbs").iterdir())) == 59


def test_the_cli_makes_a_collection_with_features_and_searches_by_them(shapes, shapes_run, tmp_path):
    """``collection create --features`` stores the backbone features; ``search --rerank features`` rescores by
    them, as the library does; a collection made without them says so in one line."""
    col, plain = tmp_path / "f", tmp_path / "p"
    for folder, flags in ((col, ["--features"]), (plain, [])):
        r = runner.invoke(
            app, ["collection", "create", str(folder), "--run", str(shapes_run), "--add", str(shapes / "database"), *flags]
        )
        assert r.exit_code == 0, r.output
    query = sorted((shapes / "query").rglob("*.png"))[0]
    search = ["--image", str(query), "-k", "5", "--rerank", "features", "--oversample", "4", "--json"]
    r = runner.invoke(app, ["search", str(col), *search])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)["queries"][0]["results"]
    with Collection.open(col) as c:
        assert c.feature_dim > 0 and (col / "model" / "model.onnx").is_file() == (c.meta["engine"] == "onnx")
        want = c.search(str(query), k=5, rerank="features", oversample=4)[0]
        stored = c.search(str(query), k=5, oversample=4)[0]
    assert [(h["id"], h["score"]) for h in got] == [(h.id, pytest.approx(h.score, abs=1e-6)) for h in want]
    assert [h.score for h in want] != [h.score for h in stored]  # features, not the stored outputs
    r = subprocess.run([sys.executable, "-m", "hashdistill", "search", str(plain), *search], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        "hashdistill: error: rerank features: this collection stores no features (create it with features=True, "
        "or collection create --features)"
    ]


def test_an_unlabelled_folder_trains_an_unsupervised_method_without_evaluation(shapes, tmp_path):
    base = ["data.protocol=null", f"data.train={shapes}/train/disc", *FAST, "schedule.epochs=3"]
    with pytest.raises(ValueError, match=r"method dhd reads labels, but data.train \(.*disc\) is an unlabelled folder"):
        Trainer(load_config(None, base), tmp_path / "x", progress=False).setup()
    cfg = load_config("configs/own-images-unlabelled.yaml", [*base, "augment.views=2", "method.stage1_epochs=2",
                      "method.pairs.input_size=32", "method.pairs.k=5", "method.pairs.noise_neighbours=4",
                      "optim.batch_size=20"])  # fmt: skip
    m = train(cfg, tmp_path / "u", progress=False)
    assert m["evaluated"] is False and "map_all" not in m and "purity" not in m
    assert "stage1" in torch.load(tmp_path / "u" / "checkpoint.pt", weights_only=True)["method"]["_extra_state"]
    assert not (tmp_path / "u" / "codes-query.npz").exists()
    with pytest.raises(ValueError, match="data.query and data.database go together"):
        load_config(None, [*base, f"data.query={shapes}/query"])


def test_collection_items_ids_and_inputs(shapes_run, shapes, tmp_path):
    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    with Collection.create(tmp_path / "c", shapes_run, engine="torch") as col:
        ids = col.add(arrays)  # arrays are stored inside the collection
        assert ids.tolist() == [1, 2, 3] and len(col) == 3
        stored = [h.source for h in col.get(ids)]
        assert all(s.startswith("collection:images/") and (tmp_path / "c" / s.split(":", 1)[1]).is_file() for s in stored)
        assert np.array_equal(col.image(2), arrays[1])
        assert Image.open(io.BytesIO(col.thumbnail(2))).size == (40, 40)  # a stored image, read from inside
        assert col.remove([2, 99]) == 1 and col.get([2])[0] is None
        assert not (tmp_path / "c" / stored[1].split(":", 1)[1]).exists()  # its stored image went with it
        assert col.add(arrays[:1]).tolist() == [4]  # ids are never reused
        assert col.remove([4]) == 1 and col.add(arrays[:1]).tolist() == [5]  # not even the largest one
        assert col.remove([5]) == 1 and col.add(arrays[:1]).tolist() == [6]
        # codes in, exactly one hit at distance 0 per stored code; radius bounds the distance
        codes = col.encode(arrays[[0, 2]])
        hits = col.search(codes=codes, k=1)
        assert [h[0].distance for h in hits] == [0, 0] and {hits[0][0].id, hits[1][0].id} <= {1, 3, 6}
        assert all(h.distance <= 2 for hs in col.search(codes=codes, k=10, radius=2) for h in hs)
        for bad, message in [
            (PackedCodes(np.zeros((2, 5), np.uint8)), "codes have 40 bits, the collection holds 16-bit codes"),
            (np.zeros((2, 16), np.uint8), "codes: a uint8 array could be packed bytes or 0/1 bits"),
            (np.zeros((2, 8), np.float32), "images are a folder, a list file"),
        ]:
            with pytest.raises(CollectionError, match=message):
                col.add(bad) if np.asarray(bad).dtype == np.float32 else col.search(codes=bad)
        with pytest.raises(CollectionError, match="k must be a positive integer"):
            col.search(codes=codes, k=0)
    with pytest.raises(CollectionError, match="already exists"):
        Collection.create(tmp_path / "c", shapes_run)
    reopened = Collection.open(tmp_path / "c")
    assert len(reopened) == 3 and [h.id for h in reopened.search(codes=codes, k=1)[0]] == [hits[0][0].id]
    assert reopened.remove([6]) == 1 and reopened.add(arrays[:1]).tolist() == [7]  # nor after a reopen
    # an add that fails between writing its image and committing its row leaves a marker; the next open
    # removes the image no row names (and only then lists the rows' sources)
    stored_before = set((tmp_path / "c" / "images").iterdir())
    real_add = reopened.store.add
    reopened.store.add = lambda *a: (_ for _ in ()).throw(OSError("disk full"))
    with pytest.raises(OSError, match="disk full"):
        reopened.add(arrays[2:3] // 2)  # an image not stored yet
    reopened.store.add = real_add
    orphans = set((tmp_path / "c" / "images").iterdir()) - stored_before
    assert len(orphans) == 1 and len(list((tmp_path / "c" / "pending").iterdir())) == 1
    reopened.close()
    Collection.open(tmp_path / "c").close()
    assert set((tmp_path / "c" / "images").iterdir()) == stored_before
    assert not list((tmp_path / "c" / "pending").iterdir())
    (tmp_path / "c" / "items.sqlite").write_bytes(b"not a database at all" * 100)
    for f in (tmp_path / "c").glob("items.sqlite-*"):
        f.unlink()
    with pytest.raises(CollectionError, match=r"items.sqlite: not a readable item table \(file is not a database\)"):
        Collection.open(tmp_path / "c")


DURABILITY = """
import sys, numpy as np
from hashdistill.collection import Collection
col = Collection.open(sys.argv[1])
rng = np.random.default_rng(int(sys.argv[2]))
while True:
    ids = col.add(rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
    print(" ".join(map(str, ids)), flush=True)  # acknowledged
"""


def test_acknowledged_adds_survive_sigkill(shapes_run, tmp_path):
    Collection.create(tmp_path / "d", shapes_run, engine="torch").close()
    acked = []
    for seed in (1, 2):  # two writers, one after the other, each killed mid-stream
        proc = subprocess.Popen(
            [sys.executable, "-c", DURABILITY, str(tmp_path / "d"), str(seed)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(15):
            acked += [int(i) for i in proc.stdout.readline().split()]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with sqlite3.connect(tmp_path / "d" / "items.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Collection.open(tmp_path / "d") as col:
        present = {h.id for h in col.get(acked) if h is not None}
        assert present == set(acked) and len(col) >= len(acked) == 60
        ids, codes = col.store.codes(col.bits // 8)
        assert len(col.index) == len(ids)  # the index is derived from every committed row
        d, found = col.index.search(codes, 1)
        assert (d[:, 0] == 0).all()
        assert col.vectors.lookup(np.array(acked))[1].all()  # and its stored vector (the file written again)
        for s in col.store.sources():  # every committed row's stored image exists, and no file is unnamed
            assert (tmp_path / "d" / s.split(":", 1)[1]).is_file()
        assert len(list((tmp_path / "d" / "images").iterdir())) == len(col.store.sources())


def test_milvus_backend_keeps_the_same_api(shapes_run, shapes, tmp_path):
    pytest.importorskip("pymilvus")
    uri = str(tmp_path / "milvus.db")
    query = str(shapes / "query" / "disc" / "disc-000.png")
    with (
        Collection.create(tmp_path / "m", shapes_run, engine="torch", backend="milvus", uri=uri, features=True) as col,
        Collection.create(tmp_path / "flat", shapes_run, engine="torch", features=True) as flat,
    ):
        ids = col.add(shapes / "database")
        flat.add(shapes / "database")
        first = col.search(query, k=3)[0]
        assert len(ids) == 60 and len(first) == 3 and all(h.label == "disc" for h in first)
        # the stored features re-rank the Milvus backend's candidates as the flat index's (all 60: no ties left)
        by_features = col.search(query, k=5, rerank="features", oversample=12)[0]
        assert [h.id for h in by_features] == [h.id for h in flat.search(query, k=5, rerank="features", oversample=12)[0]]
        assert col.remove(ids[:10]) == 10
    with Collection.open(tmp_path / "m") as col:
        again = col.search(query, k=3)[0]
        assert len(col) == 50 and all(h.label == "disc" and h.id > 10 for h in again)


def test_onnx_export_and_engine_agree_with_torch(shapes_run, shapes, tmp_path):
    pytest.importorskip("onnxruntime")
    r = runner.invoke(app, ["export", str(shapes_run), "--out", str(tmp_path / "m.onnx"), "--verify"])
    assert r.exit_code == 0, r.output
    assert "verified on 18 queries: 0 of 288 bits differ" in r.output
    torch_col = Collection.create(tmp_path / "t", shapes_run, engine="torch")
    onnx_col = Collection.create(tmp_path / "o", shapes_run, engine="onnx")
    assert onnx_col.meta["engine"] == "onnx" and (tmp_path / "o" / "model" / "model.onnx").is_file()
    folder = shapes / "database"
    assert np.array_equal(torch_col.encode(folder), onnx_col.encode(folder))


def test_a_protocol_split_is_added_with_its_outputs_or_by_its_saved_codes(tmp_path):
    """``add_split`` (``collection create --from-split``) encodes the split, so every item's output is stored for
    ``stored`` re-ranking, with the same codes the run saved; ``--saved-codes`` takes those codes alone."""
    cfgfile = tmp_path / "tiny.yaml"
    cfgfile.write_text("schedule: {epochs: 1}\n")
    sets = ["data.limit_train=300", "data.limit_query=20", "data.limit_database=400", "model.bits=16",
            "runtime.num_threads=2"]  # fmt: skip
    r = runner.invoke(
        app, ["train", str(cfgfile), "--runs-dir", str(tmp_path), "--quiet", *[a for s in sets for a in ("--set", s)]]
    )
    assert r.exit_code == 0, r.output
    run = Run.load(tmp_path / "tiny")
    saved = run.codes("database")
    for flag, stored in (([], True), (["--saved-codes"], False)):
        folder = tmp_path / f"c{len(flag)}.hdc"
        r = runner.invoke(app, ["collection", "create", str(folder), "--run", str(run.path), "--from-split", "database", *flag])
        assert r.exit_code == 0, r.output
        with Collection.open(folder) as col:
            ids = np.array([h.id for h in col.items(limit=1000)])
            assert len(ids) == 400 and np.array_equal(col.codes_of(ids).array, saved.array)
            assert col.get([ids[7]])[0].source == f"fmnist-1k:database:{int(run.data.split('database').ids[7])}"
            _, has = col.vectors.lookup(ids)
            assert has.all() == stored and has.any() == stored
            hits = col.search(run.data.split("database").images[7:8], k=3)[0]
            assert hits[0].distance == 0
            if stored:  # the item itself first, its stored output the image's own
                assert hits[0].id == ids[7] and hits[0].score == pytest.approx(1, abs=2e-3)
