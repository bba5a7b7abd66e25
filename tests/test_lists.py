import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from hashdistill.data import ListFileError, read_image_folder, read_list_file, read_unlabelled_folder
from hashdistill.data.images import ImageError
from hashdistill.data.lists import parse_list


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
    with pytest.raises(ImageError, match=r"train\.txt:13: .*broken\.png: not an image"):
        read_list_file(f, image_tree, check="open")
    lst = read_list_file(f, image_tree)  # exists-check passes; loading names the line
    with pytest.raises(ImageError, match=r"train\.txt:13: .*broken\.png: not an image"):
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


def test_paths_with_spaces_unlabelled_lists_and_the_root(tmp_path, image_tree):
    spaced = image_tree / "my photos" / "a b.png"
    spaced.parent.mkdir()
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(spaced)
    f = tmp_path / "l.txt"
    f.write_text("my photos/a b.png 0 1\n  Dress/04.png   1 0 \n")  # read from the right; spacing is free
    lst = read_list_file(f, image_tree)
    assert lst.paths == [spaced, image_tree / "Dress" / "04.png"] and lst.labels.tolist() == [[0, 1], [1, 0]]
    f.write_text("my photos/a b.png\nDress/04.png\n")  # no label columns: unlabelled
    lst = read_list_file(f, image_tree)
    assert lst.labels is None and lst.paths[0] == spaced
    outside = tmp_path / "outside.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(outside)
    for line in ("../outside.png 1", f"{outside} 1", "Dress/../../outside.png 1"):
        f.write_text(f"Dress/04.png 0\n{line}\n")
        with pytest.raises(ListFileError, match=r"l\.txt:2: .* lies outside the image root .*--allow-outside-root"):
            read_list_file(f, image_tree)
        assert read_list_file(f, image_tree, allow_outside_root=True).paths[1].resolve() == outside
    f.write_text("Dress/./04.png 1\n")  # a path that stays inside is fine
    assert len(read_list_file(f, image_tree)) == 1


_name = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"), min_size=1)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
@given(
    names=st.lists(_name.map(str.strip).filter(lambda n: n and n.split()[-1] not in ("0", "1")), min_size=1, max_size=8),
    n_classes=st.integers(0, 6),
    data=st.data(),
)
def test_list_parser_round_trips(names, n_classes, data):
    """Any paths (spaces included) with any 0/1 label rows parse back to themselves."""
    rows = [data.draw(st.lists(st.integers(0, 1), min_size=n_classes, max_size=n_classes)) for _ in names]
    gaps = data.draw(st.lists(st.sampled_from([" ", "\t", "  "]), min_size=len(names), max_size=len(names)))
    lines = [f"{n}{g}{' '.join(map(str, r))}".rstrip() for n, g, r in zip(names, gaps, rows)]
    entries, labels = parse_list(lines, "l.txt")
    assert [e[1] for e in entries] == names
    assert [e[0] for e in entries] == list(range(1, len(names) + 1))
    if n_classes:
        assert labels.tolist() == rows
    else:
        assert labels is None


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(st.lists(st.text(max_size=40), max_size=6))
def test_list_parser_fails_only_with_a_line(lines):
    """Whatever the text, the parser returns entries or raises ListFileError naming the file (and line)."""
    try:
        entries, labels = parse_list(lines, "l.txt")
    except ListFileError as e:
        assert str(e).startswith("l.txt:")
    else:
        assert entries and (labels is None or len(labels) == len(entries))
