import numpy as np
import pytest
from PIL import Image

from hashdistill.data import ListFileError, read_image_folder, read_list_file, read_unlabelled_folder


@pytest.fixture
def image_tree(tmp_path, fmnist):
    """Real Fashion-MNIST images written as PNG files in class folders."""
    for k, i in enumerate(fmnist.train[:12]):
        cls = fmnist.class_names[fmnist.labels[i]].replace("/", "-")
        d = tmp_path / "imgs" / cls
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(fmnist.images[i]).save(d / f"{k:02d}.png")
    return tmp_path / "imgs"


def _write_list(tmp_path, root, n_classes=10, extra=""):
    lines = []
    for p in sorted(root.rglob("*.png")):
        cols = ["0"] * n_classes
        cols[hash(p.parent.name) % n_classes] = "1"
        lines.append(f"{p.relative_to(root)} {' '.join(cols)}")
    f = tmp_path / "train.txt"
    f.write_text("\n".join(lines) + "\n" + extra)
    return f


def test_list_file_round_trip(tmp_path, image_tree):
    lst = read_list_file(_write_list(tmp_path, image_tree), image_tree, check="open")
    assert len(lst) == 12 and lst.labels.shape == (12, 10)
    assert (lst.labels.sum(1) == 1).all()
    img = lst.load(0)
    assert img.shape == (28, 28, 3) and img.dtype == np.uint8
    assert lst.load(0, "L").shape == (28, 28)


def test_list_file_errors_name_file_and_line(tmp_path, image_tree):
    f = _write_list(tmp_path, image_tree, extra="x.png 0 1\n")
    with pytest.raises(ListFileError, match=r"train\.txt:13: expected 10 label columns, found 2"):
        read_list_file(f, image_tree)
    f = _write_list(tmp_path, image_tree, extra="missing.png " + " ".join("0" * 10) + "\n")
    with pytest.raises(ListFileError, match=r"train\.txt:13: image not found"):
        read_list_file(f, image_tree)
    f = _write_list(tmp_path, image_tree, extra="x.png 0 1 0 0 0 0 0 0 0 2\n")
    with pytest.raises(ListFileError, match=r":13: label columns must be 0 or 1"):
        read_list_file(f, image_tree, check="none")
    (image_tree / "broken.png").write_bytes(b"definitely not a png")
    f = _write_list(tmp_path, image_tree, extra="broken.png " + " ".join("0" * 10) + "\n")
    with pytest.raises(ListFileError, match=r"train\.txt:13: unreadable image"):
        read_list_file(f, image_tree, check="open")
    lst = read_list_file(f, image_tree)  # exists-check passes; loading names the line
    with pytest.raises(ListFileError, match=r"train\.txt:13: unreadable image"):
        lst.load(12)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ListFileError, match="empty list file"):
        read_list_file(empty)
    with pytest.raises(ListFileError, match="list file not found"):
        read_list_file(tmp_path / "nope.txt")


def test_image_folder_and_unlabelled(image_tree, fmnist):
    lst = read_image_folder(image_tree)
    assert lst.class_names == sorted(lst.class_names) and len(lst) == 12
    assert [lst.class_names[c] for c in lst.labels] == [p.parent.name for p in lst.paths]
    u = read_unlabelled_folder(image_tree)
    assert u.labels is None and sorted(u.paths) == u.paths and len(u) == 12
    with pytest.raises(ListFileError, match="not a folder"):
        read_image_folder(image_tree / "nope")
