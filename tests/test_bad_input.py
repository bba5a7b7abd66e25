"""Every class of bad input, through the CLI: exit status 1 (2 for usage), exactly one non-blank line on stderr
starting ``hashdistill: error:``, the culprit named, no traceback, and nothing left behind (issue 15)."""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hashdistill.cli import main


class Payload:
    """A pickle that would create a file when unpickled: the attack a downloaded run folder could carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def bad(tmp_path_factory, shapes, shapes_run):
    """A folder of bad inputs of every kind, next to a good run, index and collection to aim them at."""
    from hashdistill.collection import Collection

    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    ok = shapes / "query" / "disc" / "disc-000.png"
    png = ok.read_bytes()
    (d / "text.png").write_text("hello, not an image\n")
    (d / "empty.png").write_bytes(b"")
    (d / "cut.png").write_bytes(png[: len(png) // 2])
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(buf, "JPEG")
    (d / "cut.jpg").write_bytes(buf.getvalue()[:500])
    Image.new("1", (20000, 20000)).save(d / "bomb.png")  # 400 M pixels in 48 kB
    (d / "folder.png").mkdir()
    (d / "list-bad-image.txt").write_text(f"{ok.name} 1\ntext.png 0\n")
    (d / "list-outside.txt").write_text(f"{ok.name} 1\n../../x.png 0\n")
    shutil.copy(ok, d / ok.name)
    (d / "list-columns.txt").write_text(f"{ok.name} 0 1\n{ok.name} 0 1\n{ok.name} 0 7\n")
    (d / "list-binary.txt").write_bytes(png)
    (d / "list-empty.txt").write_text("\n\n")

    # runs: copies of a good run, each broken one way
    def run(name: str, **files: bytes | str) -> Path:
        r = d / "runs" / name
        shutil.copytree(shapes_run, r)
        for fname, content in files.items():
            target = r / fname.replace("_", ".", 1) if "_" in fname else r / fname
            target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
        return r

    ckpt = (shapes_run / "checkpoint.pt").read_bytes()
    run("truncated", checkpoint_pt=ckpt[: len(ckpt) // 3])
    run("empty", checkpoint_pt=b"")
    run("text", checkpoint_pt="hello\n")
    payload = io.BytesIO()
    torch.save({"model": Payload(d / "PWNED")}, payload)
    run("payload", checkpoint_pt=payload.getvalue())
    run("rawpickle", checkpoint_pt=pickle.dumps({"model": Payload(d / "PWNED")}))
    run("cfglist", config_yaml="- a\n- b\n")
    run("cfgmissing", config_yaml="name: x\n")
    run("cfgyaml", config_yaml="model: {bits: 16\n")
    run("cfgbytes", config_yaml=b"model:\n  bits: \xff\xfe\n")
    cfg = (shapes_run / "config.yaml").read_text()
    run("cfgbits", config_yaml=cfg.replace("bits: 16", "bits: 32"))
    run("metrics", metrics_json="{not json")
    (d / "runs" / "nothing").mkdir()

    with gzip.open(d / "mnist.pkl.gz", "wb") as f:  # an MNIST pickle that would run code
        pickle.dump(Payload(d / "PWNED"), f)

    # weights files for model.pretrained
    torch.save({"model": Payload(d / "PWNED")}, d / "payload.pt")
    torch.save({"fc.weight": torch.zeros(3, 3)}, d / "other.pt")

    # codes
    h = rng.standard_normal((5, 16)).astype(np.float32)
    x = h.copy()
    x[0, 0] = np.nan
    np.save(d / "nan.npy", x)
    x = h.copy()
    x[1, 3] = np.inf
    np.save(d / "inf.npy", x)
    np.save(d / "str.npy", np.array([["a"] * 16] * 5))
    np.save(d / "01.npy", (h > 0).astype(np.int64))
    np.save(d / "u01.npy", (h > 0).astype(np.uint8))
    np.savez(d / "ids-count.npz", codes=np.packbits(h > 0, axis=1), bits=16, ids=np.arange(3))
    np.savez(d / "ids-nan.npz", codes=np.packbits(h > 0, axis=1), ids=np.array([0, 1, np.nan, 3, 4]))
    np.savez(d / "object.npz", codes=np.array([object()] * 5, dtype=object))
    np.savez(d / "3d.npz", codes=np.zeros((2, 2, 2), np.uint8))
    np.savez(d / "12bits.npz", codes=np.sign(rng.standard_normal((5, 12))))
    np.savez(d / "none.npz", codes=np.zeros((0, 2), np.uint8))
    np.savez(d / "32bits.npz", codes=np.packbits(rng.standard_normal((5, 32)) > 0, axis=1), bits=32)
    np.savez(d / "32bits-bare.npz", codes=np.packbits(rng.standard_normal((5, 32)) > 0, axis=1))  # no length
    np.savez(d / "nocodes.npz", vectors=h)
    (d / "text.npz").write_text("not a zip\n")
    np.save(d / "good.npy", h)

    # index files
    main(["index", "build", str(shapes_run), "--out", str(d / "db.hidx")])
    data = (d / "db.hidx").read_bytes()
    prefix = struct.Struct("<8sII")
    _, _, head_len = prefix.unpack_from(data)
    header = json.loads(data[16 : 16 + head_len])
    body = data[16 + head_len : -32]

    def index(name: str, head: dict | bytes, version: int = 1) -> None:
        import hashlib

        raw = head if isinstance(head, bytes) else json.dumps(head).encode()
        b = prefix.pack(b"HDISTIDX", version, len(raw)) + raw + body
        (d / name).write_bytes(b + hashlib.sha256(b).digest())

    index("n.hidx", {**header, "n": -1})
    index("bits.hidx", {**header, "bits": 12})
    index("method.hidx", {**header, "method": "nope"})
    index("m.hidx", {**header, "m": 5})
    index("json.hidx", b"{")
    index("v9.hidx", header, version=9)
    (d / "headlen.hidx").write_bytes(prefix.pack(b"HDISTIDX", 1, 2**31) + b"{}")
    (d / "cut.hidx").write_bytes(data[:100])
    flipped = bytearray(data)
    flipped[200] ^= 1
    (d / "flip.hidx").write_bytes(bytes(flipped))

    with Collection.create(d / "col.hdc", shapes_run, engine="torch") as col:
        col.add(shapes / "database")
    return d


def _yaml(d: Path, name: str, text: str | bytes) -> str:
    path = d / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


QUICK_TRAIN = ["--set", "schedule.epochs=1", "--set", "data.limit_train=40", "--set", "data.limit_query=10",
               "--set", "data.limit_database=20", "--quiet"]  # fmt: skip

# (case id, arguments (``{d}``: the bad-input folder, ``{run}``: a good run), culprit named, exit status, left behind)
# fmt: off
CASES = [
    # images
    ("image: not an image", "encode {run} --images {d}/text.png --out {d}/o/x.npz", "text.png: not an image", 1, "o"),
    ("image: zero bytes", "encode {run} --images {d}/empty.png --out {d}/o/x.npz", "empty.png: empty file", 1, "o"),
    ("image: truncated png", "encode {run} --images {d}/cut.png --out {d}/o/x.npz", "cut.png: truncated", 1, "o"),
    ("image: truncated jpeg", "encode {run} --images {d}/cut.jpg --out {d}/o/x.npz", "cut.jpg: truncated", 1, "o"),
    ("image: bomb", "encode {run} --images {d}/bomb.png", "bomb.png: 400,000,000 pixels, over Pillow's hard limit", 1, ""),
    ("image: over --max-pixels", "encode {run} --images {d}/disc-000.png --max-pixels 1000",
     "disc-000.png: 48 x 48 = 2,304 pixels, over the limit of 1,000 (max_pixels)", 1, ""),
    ("image: a folder", "encode {run} --images {d}/folder.png", "folder.png: no images found", 1, ""),
    ("image: missing", "encode {run} --images {d}/missing.png", "missing.png: no such image", 1, ""),
    ("image: named by a list line", "encode {run} --images {d}/list-bad-image.txt",
     "list-bad-image.txt:2: ", 1, ""),
    ("list: outside the root", "encode {run} --images {d}/list-outside.txt", "list-outside.txt:2: ../../x.png lies outside", 1, ""),
    ("list: label column", "encode {run} --images {d}/list-columns.txt", "list-columns.txt:3: label columns must be 0 or 1", 1, ""),
    ("list: binary file", "encode {run} --images {d}/list-binary.txt", "list-binary.txt: not UTF-8 text", 1, ""),
    ("list: empty", "encode {run} --images {d}/list-empty.txt", "list-empty.txt: empty list file", 1, ""),
    ("search: query not an image", "search {d}/col.hdc --image {d}/text.png", "text.png: not an image", 1, ""),
    ("search: query bomb", "search {d}/col.hdc --image {d}/bomb.png", "bomb.png: 400,000,000 pixels", 1, ""),
    ("collection add: truncated", "collection add {d}/col.hdc {d}/cut.png", "cut.png: truncated", 1, ""),
    ("collection add: outside", "collection add {d}/col.hdc {d}/list-outside.txt", "lies outside the image root", 1, ""),
    ("collection create: bad image", "collection create {d}/new.hdc --run {run} --add {d}/text.png", "text.png", 1, "new.hdc"),
    # runs
    ("run: no folder", "encode {d}/runs/absent", "runs/absent: no such run folder", 1, ""),
    ("run: not a run", "evaluate {d}/runs/nothing", "runs/nothing: no config.yaml", 1, ""),
    ("run: truncated checkpoint", "encode {d}/runs/truncated", "truncated/checkpoint.pt: not a PyTorch weights file", 1, ""),
    ("run: empty checkpoint", "evaluate {d}/runs/empty", "empty/checkpoint.pt: empty file", 1, ""),
    ("run: text checkpoint", "encode {d}/runs/text", "text/checkpoint.pt: not a PyTorch weights file", 1, ""),
    ("run: pickle payload", "encode {d}/runs/payload", "payload/checkpoint.pt: refused: it holds Python objects", 1, ""),
    ("run: raw pickle", "report {d}/runs/rawpickle --out {d}/rep", "rawpickle/checkpoint.pt: refused", 1, "rep"),
    ("run: config not a mapping", "encode {d}/runs/cfglist", "cfglist/config.yaml: not a run's config", 1, ""),
    ("run: config misses keys", "encode {d}/runs/cfgmissing", "cfgmissing/config.yaml: not a run's config (no data", 1, ""),
    ("run: config not YAML", "encode {d}/runs/cfgyaml", "cfgyaml/config.yaml: unreadable config", 1, ""),
    ("run: config not UTF-8", "encode {d}/runs/cfgbytes", "cfgbytes/config.yaml: unreadable config", 1, ""),
    ("run: weights of another config", "encode {d}/runs/cfgbits", "cfgbits/checkpoint.pt: the weights do not fit", 1, ""),
    ("run: bad metrics.json", "report {d}/runs/metrics --out {d}/rep --deformations '' --sensitivity ''",
     "metrics/metrics.json: not valid JSON", 1, "rep"),
    # configs
    ("config: not UTF-8", "train {bytes_yaml}", "bytes.yaml: not UTF-8 text", 1, ""),
    ("config: not a mapping", "train {list_yaml}", "list.yaml: a config is a mapping", 1, ""),
    ("config: not YAML", "train {broken_yaml}", "broken.yaml: not valid YAML", 1, ""),
    ("config: missing", "train {d}/absent.yaml", "absent.yaml: no such config file", 1, ""),
    ("config: a folder", "train {d}", ": a folder, not a config file", 1, ""),
    ("config: wrong type", "config show --set augment.crop_scale=abc", "augment.crop_scale: Input should be a valid tuple", 1, ""),
    ("config: wrong type, int", "config show --set model.bits=abc", "model.bits: Input should be a valid integer", 1, ""),
    ("config: unknown key", "config show --set model.bitz=8", "unknown key model.bitz; known: bits", 1, ""),
    ("config: limit 0", "config show --set data.limit_train=0", "data.limit_train: Input should be greater than 0", 1, ""),
    ("config: limit < 0", "config show --set data.limit_query=-1", "data.limit_query: Input should be greater than 0", 1, ""),
    ("config: run name escapes", "config show --set name=../x", "name: the run folder's name", 1, ""),
    ("config: weights not weights", "train {demo} --set model.pretrained={d}/text.png --set name=w1 --runs-dir {d}/tr",
     "text.png: not a PyTorch weights file", 1, "tr"),
    ("config: weights payload", "train {demo} --set model.pretrained={d}/payload.pt --set name=w2 --runs-dir {d}/tr",
     "payload.pt: refused: it holds Python objects", 1, "tr"),
    ("config: weights of another net", "train {demo} --set model.pretrained={d}/other.pt --set name=w3 --runs-dir {d}/tr",
     "other.pt: the weights do not fit small-cnn", 1, "tr"),
    ("config: weights missing", "train {demo} --set model.pretrained={d}/absent.pt --set name=w4 --runs-dir {d}/tr",
     "absent.pt: no such weights file", 1, "tr"),
    ("config: own images missing", "train {demo} --set data.protocol=null --set data.train={d}/absent --runs-dir {d}/tr",
     "absent: no such list file or folder", 1, "tr"),
    ("backbone: input too small", "train {demo} --set model.backbone=alexnet --set name=a --runs-dir {d}/tr",
     "backbone alexnet cannot take 28 x 28 input (model.input_size): the smallest that works is 63", 1, "tr"),
    # codes
    ("codes: NaN", "search {d}/db.hidx --codes {d}/nan.npy", "nan.npy: codes hold 1 NaN / inf values (first: row 0, bit 0)", 1, ""),
    ("codes: inf", "search {d}/db.hidx --codes {d}/inf.npy", "inf.npy: codes hold 1 NaN / inf", 1, ""),
    ("codes: strings", "search {d}/db.hidx --codes {d}/str.npy", "str.npy: codes must be numbers, got dtype <U1", 1, ""),
    ("codes: 0/1 integers", "search {d}/db.hidx --codes {d}/01.npy", "01.npy: integer codes must be -1 or +1, found 0, 1", 1, ""),
    ("codes: 0/1 bytes", "index build {d}/u01.npy --out {d}/o/x.hidx", "u01.npy: uint8 codes without a code length: packed bytes or 0/1 bits?", 1, "o"),
    ("codes: id count", "index build {d}/ids-count.npz --out {d}/o/x.hidx", "ids-count.npz: 5 codes but ids of shape (3,)", 1, "o"),
    ("codes: NaN ids", "search {d}/db.hidx --codes {d}/ids-nan.npz", "ids-nan.npz: ids must be integers, got float64 holding NaN", 1, ""),
    ("codes: text named .npz", "search {d}/db.hidx --codes {d}/text.npz", "text.npz: not a numpy .npz or .npy file", 1, ""),
    ("codes: objects", "index build {d}/object.npz --out {d}/o/x.hidx", "object.npz: refused: it holds Python objects", 1, "o"),
    ("codes: 3-D", "search {d}/db.hidx --codes {d}/3d.npz", "3d.npz: codes must be a 2-D array", 1, ""),
    ("codes: 12 bits", "search {d}/db.hidx --codes {d}/12bits.npz", "12bits.npz: code length 12 bits is not a multiple of 8", 1, ""),
    ("codes: none", "search {d}/db.hidx --codes {d}/none.npz", "none.npz: holds no codes", 1, ""),
    ("codes: other length", "search {d}/db.hidx --codes {d}/32bits.npz", "32bits.npz: holds 32-bit codes, expected 16", 1, ""),
    ("codes: bare bytes of another length", "search {d}/db.hidx --codes {d}/32bits-bare.npz",
     "32bits-bare.npz: uint8 codes of 4 bytes are not 16-bit packed codes", 1, ""),
    ("codes: other length, collection", "search {d}/col.hdc --codes {d}/32bits.npz", "32bits.npz:", 1, ""),
    ("codes: no codes array", "search {d}/db.hidx --codes {d}/nocodes.npz", "nocodes.npz: no 'codes' array (found: vectors)", 1, ""),
    ("codes: missing", "search {d}/db.hidx --codes {d}/absent.npz", "absent.npz: no such codes file", 1, ""),
    # search and index files
    ("search: k 0", "search {d}/db.hidx --codes {d}/good.npy -k 0", "-k must be positive, got 0", 1, ""),
    ("search: radius < 0", "search {d}/db.hidx --codes {d}/good.npy --radius -1", "--radius must be 0 or more", 1, ""),
    ("index: not an index", "search {d}/text.png --codes {d}/good.npy", "text.png: not a hashdistill index file", 1, ""),
    ("search: no such target", "search {d}/absent --image {d}/disc-000.png", "absent: no such collection folder or index file", 1, ""),
    ("search: a plain folder", "search {d} --image {d}/disc-000.png", ": not a collection (no collection.json)", 1, ""),
    ("search: expand 11", "search {d} --image {d}/disc-000.png --expand 11",
     "--oversample 1-100 and --expand 0-10, got stored, 10 and 11", 1, ""),
    ("collection: no such folder", "collection info {d}/absent", "absent: no such collection folder", 1, ""),
    ("snapshot: no such folder", "collection restore {d}/absent {d}/restored", "absent: no such snapshot folder", 1, ""),
    ("snapshot: a plain folder", "collection restore {d} {d}/restored", ": not a snapshot (no snapshot.json)", 1, ""),
    ("index: n", "search {d}/n.hidx --codes {d}/good.npy", "n.hidx: damaged index header (n: -1)", 1, ""),
    ("index: bits", "search {d}/bits.hidx --codes {d}/good.npy", "bits.hidx: damaged index header (bits: 12)", 1, ""),
    ("index: method", "search {d}/method.hidx --codes {d}/good.npy", "method.hidx: damaged index header (method: 'nope')", 1, ""),
    ("index: m", "search {d}/m.hidx --codes {d}/good.npy", "m.hidx: damaged index (m must split 16 bits", 1, ""),
    ("index: header not JSON", "search {d}/json.hidx --codes {d}/good.npy", "json.hidx: damaged index header (not JSON)", 1, ""),
    ("index: version", "search {d}/v9.hidx --codes {d}/good.npy", "v9.hidx: index format version 9", 1, ""),
    ("index: header length", "search {d}/headlen.hidx --codes {d}/good.npy", "headlen.hidx: damaged index header (length", 1, ""),
    ("index: truncated", "search {d}/cut.hidx --codes {d}/good.npy", "cut.hidx: index file truncated", 1, ""),
    ("index: checksum", "search {d}/flip.hidx --codes {d}/good.npy", "flip.hidx: index file corrupt (checksum mismatch)", 1, ""),
    ("data: crafted MNIST pickle", "data prepare mnist-1k --root {d}/mnist.pkl.gz --force",
     "mnist.pkl.gz: unreadable MNIST pickle (refused: it names posix.system", 1, ""),
    # usage
    ("usage: -k abc", "search {d}/db.hidx --codes {d}/good.npy -k abc", "search: Invalid value for '-k'", 2, ""),
    ("usage: unknown option", "encode {run} --bogus", "encode: No such option: --bogus", 2, ""),
    ("usage: missing argument", "train", "train: Missing argument 'CONFIG'", 2, ""),
    ("usage: unknown command", "trian", "No such command 'trian'", 2, ""),
    ("usage: split is a name", "encode {run} --split {d}/text.png",
     "a split is one of train, query, database; for files use --images", 1, ""),
]
# fmt: on


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(case, bad, shapes_run, capsys):
    name, template, culprit, status, left = case
    d = bad
    names = {
        "d": d, "run": shapes_run, "demo": Path("configs/demo.yaml").resolve(),
        "bytes_yaml": _yaml(d, "bytes.yaml", b"model:\n  bits: \xff\xfe\n"), "list_yaml": _yaml(d, "list.yaml", "[1, 2]\n"),
        "broken_yaml": _yaml(d, "broken.yaml", "model: {bits: 16\n"),
    }  # fmt: skip
    import shlex

    args = [a.format(**names) for a in shlex.split(template)]
    if args[0] == "train":
        args += QUICK_TRAIN
    code = main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == status, err
    assert len(lines) == 1 and lines[0].startswith("hashdistill: error: "), err
    assert culprit in lines[0], lines[0]
    assert "Traceback" not in err and "internal error" not in err
    if left:
        assert not (d / left).exists(), f"{left} left behind"
    assert not (d / "PWNED").exists()  # nothing in a crafted file ran


def test_a_pickle_payload_is_refused_by_every_reader(bad):
    """The security promise through the installed entry point: a run folder, weights file or codes file that
    holds Python objects is refused with one line, and the code in it never runs."""
    for args in (
        ["encode", str(bad / "runs" / "payload"), "--out", str(bad / "x.npz")],
        ["evaluate", str(bad / "runs" / "rawpickle")],
        ["collection", "create", str(bad / "c.hdc"), "--run", str(bad / "runs" / "payload")],
        ["search", str(bad / "db.hidx"), "--codes", str(bad / "object.npz")],
    ):
        r = subprocess.run([sys.executable, "-m", "hashdistill", *args], capture_output=True, text=True)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and "refused" in r.stderr, r.stderr
    assert not (bad / "PWNED").exists() and not (bad / "x.npz").exists() and not (bad / "c.hdc").exists()


def test_usage_errors_are_one_line_with_status_2():
    r = subprocess.run([sys.executable, "-m", "hashdistill", "search", "x", "-k", "abc"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("hashdistill: error: search: Invalid value for '-k'") and r.stderr.count("\n") == 1


def test_k_above_the_database_returns_what_exists(bad, shapes_run, capsys):
    """No -1 padding: a k beyond the database gives every item once, nearest first (and an absurd k the same)."""
    n = 60  # the shapes database
    for k in ("100", str(10**30)):
        assert main(["search", str(bad / "db.hidx"), "--codes", str(shapes_run / "codes-query.npz"), "-k", k, "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)["results"]
        assert len(rows) == 18 and all(sorted(r["ids"]) == list(range(n)) for r in rows)
        assert all(r["distances"] == sorted(r["distances"]) for r in rows)
    assert main(["search", str(bad / "col.hdc"), "--image", str(bad / "disc-000.png"), "-k", "1000", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["queries"][0]["results"]
    assert len(hits) == n and len({h["id"] for h in hits}) == n


def test_failed_training_leaves_no_run_folder_but_a_started_one_can_resume(tmp_path, capsys):
    """A run that fails before its first checkpoint leaves nothing; one interrupted after it keeps its folder."""
    from hashdistill.config import load_config
    from hashdistill.train import train

    cfg = load_config("configs/demo.yaml", ["data.limit_train=40", "data.limit_query=10", "data.limit_database=20",
                                            "schedule.epochs=2", "name=r"])  # fmt: skip
    runs = tmp_path / "runs"

    def fail(epoch, step):
        if epoch == stop_at:
            raise KeyboardInterrupt

    stop_at = 0
    with pytest.raises(KeyboardInterrupt):
        train(cfg, runs / "r", progress=False, callback=fail)
    assert not runs.exists()  # the folders it made are gone
    stop_at = 1
    with pytest.raises(KeyboardInterrupt):
        train(cfg, runs / "r", progress=False, callback=fail)
    assert (runs / "r" / "checkpoint.pt").is_file()
    assert train(cfg, runs / "r", resume=True, progress=False)["epochs"] == 2


def test_on_a_terminal_the_bar_is_cleared_before_the_error_line(bad, shapes_run):
    """Progress bars show on a terminal only, and an error never shares a line with one."""
    import fcntl
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    args = ["encode", str(shapes_run), "--images", str(bad / "list-bad-image.txt"), "--out", str(bad / "x.npz")]
    p = subprocess.Popen([sys.executable, "-m", "hashdistill", *args], stderr=slave, stdout=subprocess.DEVNULL)
    os.close(slave)
    out = b""
    while chunk := _read(master):
        out += chunk
    assert p.wait() == 1
    text = out.decode()
    assert "encoding:" in text  # the bar was shown
    before, _, line = text.partition("hashdistill: error: ")
    assert before.endswith("\r") and before.rsplit("\r", 2)[-2].strip() == "" and "list-bad-image.txt:2:" in line


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # the other end closed
        return b""
