"""What a break-it pass found: messages that named the wrong culprit, a stale feature cache, an int k."""

import re

import numpy as np
import pytest
from typer.testing import CliRunner

from hashdistill import precision_at_k
from hashdistill._io import TensorFileError, load_tensors
from hashdistill.cli import app, main
from hashdistill.data.lists import ListFileError, read_list_file
from hashdistill.features import weights_key


def _error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_precision_at_k_takes_an_int_k_as_well_as_a_sequence():
    q = np.ones((1, 8), np.int8)
    db = np.array([[1] * 8, [1] * 7 + [-1], [-1] * 8], np.int8)
    # ranked by distance: item 0 (relevant), item 1 (not), item 2 (relevant)
    yq, ydb = np.array([0]), np.array([0, 1, 0])
    assert precision_at_k(q, db, yq, ydb, 2) == pytest.approx(0.5)
    assert precision_at_k(q, db, yq, ydb, [1, 3]).tolist() == pytest.approx([1.0, 2 / 3])


def test_a_text_file_as_weights_is_not_called_a_file_of_python_objects(tmp_path):
    text = tmp_path / "weights.pth"
    text.write_text("these are not weights\n")
    with pytest.raises(TensorFileError, match=r"weights.pth: not a PyTorch weights file"):
        load_tensors(text)


def test_a_list_file_whose_label_columns_are_not_0_or_1_names_the_columns(tmp_path):
    from PIL import Image

    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    lst = tmp_path / "list.txt"
    lst.write_text("a.png 0 2\nb.png 1 3\n")
    with pytest.raises(ListFileError, match=r"list.txt:1: label columns must be 0 or 1 \(one column per class\), got 0 2$"):
        read_list_file(lst)


def test_feature_caches_are_keyed_by_the_weights_content_not_their_path(tmp_path):
    w = tmp_path / "w.pth"
    w.write_bytes(b"first weights")
    first = weights_key(str(w))
    w.write_bytes(b"other weights")  # replaced at the same path
    assert weights_key(str(w)) != first and str(w) not in first
    assert weights_key(True) == "True" and weights_key(False) == "False"


def test_encode_into_a_folder_and_a_huge_k_are_named_as_given(shapes_run, tmp_path, capsys):
    code, err = _error(capsys, ["encode", str(shapes_run), "--out", str(tmp_path)])
    assert code == 1 and len(err) == 1 and err[0].startswith(f"hashdistill: error: --out {tmp_path}: a folder")
    index = tmp_path / "db.hdx"
    assert CliRunner().invoke(app, ["index", "build", str(shapes_run), "--out", str(index)]).exit_code == 0
    queries = np.repeat(np.load(shapes_run / "codes-query.npz")["codes"], 50_000, axis=0)
    np.save(tmp_path / "q.npy", queries)
    code, err = _error(capsys, ["search", str(index), "--codes", str(tmp_path / "q.npy"), "-k", "1000000000000"])
    assert code == 1 and len(err) == 1 and err[0].startswith("hashdistill: error: -k 1000000000000 for 900,000 queries")


def test_an_empty_class_folder_in_a_training_tree_is_refused_by_name(tmp_path):
    from PIL import Image

    from hashdistill.data.lists import read_image_folder

    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "cats" / "a.png")
    with pytest.raises(ListFileError, match=r"dogs: class folder without images \(add images or remove the folder\)$"):
        read_image_folder(tmp_path)
    # a query or database tree labelled like the training tree may lack a class
    assert read_image_folder(tmp_path, ["cats", "dogs"]).labels.tolist() == [0]


def test_a_run_config_missing_a_shape_key_names_the_key(shapes_run, tmp_path):
    import shutil

    import yaml

    from hashdistill.run import Run, RunError

    run = tmp_path / "run"
    shutil.copytree(shapes_run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    del cfg["model"]["bits"]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(RunError, match=r"config.yaml: model.bits is missing \(it decides the weights' shapes"):
        Run.load(run)


def test_off_a_terminal_a_long_stage_prints_its_start_end_and_at_most_a_line_per_30_s():
    import io

    from hashdistill.progress import LineProgress

    now = [100.0]
    out = io.StringIO()
    bar = LineProgress(range(50), desc="teacher view 1/8", unit="images", stream=out, clock=lambda: now[0])
    for _ in bar:
        now[0] += 2.0  # 50 items, 2 s each: 100 s in all, projected from the first item
    lines = out.getvalue().splitlines()
    assert lines[0] == "teacher view 1/8: started 2 s ago, 50 images"
    assert lines[-1] == "teacher view 1/8: done, 50 images in 100.0 s"
    ticks = lines[1:-1]  # one every 30 s: at 30, 60 and 90 s
    assert ticks == ["teacher view 1/8: 15/50 images, 30 s", "teacher view 1/8: 30/50 images, 60 s",
                     "teacher view 1/8: 45/50 images, 90 s"]  # fmt: skip
    short = io.StringIO()  # a short stage (one query's encoding, 0.3 s) says nothing
    for _ in LineProgress(range(3), desc="encoding", stream=short, clock=lambda: now[0]):
        now[0] += 0.1
    assert short.getvalue() == ""
    failed = io.StringIO()  # a stage that fails on its first step prints nothing; later, never claims it is done
    bar = LineProgress(total=4, desc="encoding", stream=failed, clock=lambda: now[0])
    assert failed.getvalue() == ""
    now[0] += 20.0
    bar.update(1)
    assert failed.getvalue().splitlines() == ["encoding: started 20 s ago, 4 it"]


def test_train_into_a_file_says_what_it_is_doing(shapes, tmp_path, monkeypatch, capsys):
    """Off a terminal (stderr captured), feature extraction announces each view's start and end with counts and
    seconds, each epoch ends with its line, no bar is drawn, and stdout holds only the metrics. (Every stage
    counts as long here: on this small tree each takes well under the 10 s that makes a stage long.)"""
    import json

    from hashdistill import progress

    monkeypatch.setattr(progress, "LONG_S", 0.0)
    monkeypatch.setenv("HASHDISTILL_DATA", str(tmp_path / "home"))  # a fresh feature cache: features are computed
    cfg = tmp_path / "shapes.yaml"
    cfg.write_text(f"data: {{protocol: null, train: {shapes}/train, query: {shapes}/query, database: {shapes}/database}}\n")
    sets = ["model.mode=cached", "model.backbone=mobilenet_v2", "model.pretrained=true", "model.input_size=32",
            "data.load_size=32", "augment.views=2", "schedule.epochs=2", "model.bits=16", "runtime.num_threads=2"]  # fmt: skip
    assert main(["train", str(cfg), "--runs-dir", str(tmp_path / "runs"), *[a for s in sets for a in ("--set", s)]]) == 0
    out, log = capsys.readouterr()
    assert json.loads(out)["bits"] == 16
    n = sum(1 for _ in (shapes / "train").rglob("*.png"))
    for view in ("teacher view 1/2", "teacher view 2/2", "student view 1/2", "student view 2/2"):
        assert f"{view}: started, {n:,} images\n" in log, log
        assert re.search(rf"{view}: done, {n:,} images in \d+\.\d s\n", log), log
    assert re.search(r"^epoch 2 lr \S+ seconds ", log, re.M) and "\r" not in log and "it/s" not in log, log
    monkeypatch.setattr(progress, "LONG_S", 10.0)  # as shipped: this small run's stages are short, and quiet
    monkeypatch.setenv("HASHDISTILL_DATA", str(tmp_path / "home2"))  # (computed again, not read from the cache)
    assert main(["train", str(cfg), "--runs-dir", str(tmp_path / "again"), *[a for s in sets for a in ("--set", s)]]) == 0
    assert "view" not in capsys.readouterr().err


def test_the_offline_weights_hint_names_the_config_key(monkeypatch):
    """Without the offline weight packages, the hint says how to give weights in the config (model.pretrained)."""
    from hashdistill import backbones
    from hashdistill.backbones import weights

    monkeypatch.setattr(weights, "find_in_package", lambda *a: None)
    monkeypatch.setattr(weights, "package_file", lambda *a: None)
    for name in ("efficientnet_lite0", "mobilenet_v2"):
        with pytest.raises(ValueError, match=r"or set model\.pretrained=/path/to/") as e:
            backbones.create_backbone(name, True, input_size=32)
        assert "pretrained='" not in str(e.value)
