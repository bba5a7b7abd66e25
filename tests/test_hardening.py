"""What a break-it pass found: messages that named the wrong culprit, a stale feature cache, an int k."""

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
