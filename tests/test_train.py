"""Training on real (small) Fashion-MNIST slices: end to end, cached, resume, CLI."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hashdistill.cli import app
from hashdistill.config import ConfigError, load_config, validate
from hashdistill.train import Trainer, train

SMALL = ["limit_train=600", "limit_query=100", "limit_database=1500", "batch_size=100", "crop_scale=[0.5,1.0]",
         "lr=1e-3", "backbone_lr_mult=1.0", "bits=32", "num_threads=2"]  # fmt: skip


def _log(run):
    return [json.loads(r) for r in (run / "log.jsonl").read_text().splitlines()]


def test_end_to_end_run_reduces_loss_and_produces_codes(tmp_path):
    cfg = load_config(None, SMALL + ["name=e2e", "epochs=3"])
    m = train(cfg, tmp_path / "e2e", progress=False)
    log = _log(tmp_path / "e2e")
    assert [r["epoch"] for r in log] == [1, 2, 3] and log[-1]["loss"] < log[0]["loss"]
    with np.load(tmp_path / "e2e" / "codes-database.npz") as z:
        assert z["codes"].shape == (1500, 4) and z["codes"].dtype == np.uint8
    assert m["map_at_1000"] > 0.2  # twice chance (about 0.1) after 3 epochs on 600 images


def test_cached_run_reduces_loss_and_produces_codes(tmp_path):
    cfg = load_config(None, SMALL + ["name=cached", "mode=cached", "backbone=mobilenet_v2", "pretrained=true",
                                     "input_size=32", "views=2", "epochs=8", "backbone_lr_mult=0"])  # fmt: skip
    m = train(cfg, tmp_path / "cached", progress=False)
    log = _log(tmp_path / "cached")
    assert log[-1]["loss"] < log[0]["loss"] and m["features_seconds"] >= 0
    with np.load(tmp_path / "cached" / "codes-query.npz") as z:
        assert z["codes"].shape == (100, 4)
    assert m["map_at_1000"] > 0.3


def test_resume_after_a_kill_mid_epoch_finishes_identically(tmp_path):
    cfg = load_config(None, SMALL + ["name=r", "epochs=3", "limit_train=300"])
    train(cfg, tmp_path / "full", progress=False)

    def kill(epoch, step):
        if epoch == 1 and step == 1:
            raise KeyboardInterrupt  # as if the process died in the middle of the second epoch

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", progress=False, callback=kill)
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=False)["epoch"] == 1
    train(cfg, tmp_path / "killed", resume=True, progress=False)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=False)
    assert b["epoch"] == 3 and [r["epoch"] for r in _log(tmp_path / "killed")] == [1, 2, 3]
    for k in a["model"]:
        assert torch.allclose(a["model"][k].float(), b["model"][k].float(), atol=1e-5), k


def test_validation_split_never_uses_queries(tmp_path):
    cfg = load_config(None, SMALL + ["name=v", "epochs=1", "val_fraction=0.2", "select=best"])
    t = Trainer(cfg, tmp_path / "v", progress=False)
    assert len(t.val_split) == 120 and len(t.fit_split) == 480
    assert not np.intersect1d(t.val_split.ids, t.data.query.ids).size
    t.fit()
    assert "val_map" in _log(tmp_path / "v")[0] and (tmp_path / "v" / "best.pt").is_file()


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(None, ["learning_rate=1"])
    with pytest.raises(ConfigError, match="lr must be a number"):
        load_config(None, ["lr=fast"])
    assert load_config(None, ["lr=1e-3"])["lr"] == 0.001
    with pytest.raises(ConfigError, match="mode must be"):
        load_config(None, ["mode=fast"])
    with pytest.raises(ConfigError, match="select: best needs"):
        load_config(None, ["select=best"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("bits: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_cli_train_encode_evaluate_index(tmp_path):
    cfgfile = tmp_path / "tiny.yaml"
    cfgfile.write_text("protocol: fmnist-1k\nepochs: 1\n" + "".join(s.replace("=", ": ") + "\n" for s in SMALL))
    runner = CliRunner()
    r = runner.invoke(app, ["train", str(cfgfile), "--runs-dir", str(tmp_path), "--quiet"])
    assert r.exit_code == 0, r.output
    run = tmp_path / "tiny"
    assert json.loads(r.output.strip().splitlines()[-1])["bits"] == 32
    r = runner.invoke(app, ["train", str(cfgfile), "--runs-dir", str(tmp_path), "--quiet"])
    assert r.exit_code == 1  # an existing run is never overwritten silently
    r = runner.invoke(app, ["encode", str(run), "--split", "query", "--out", str(tmp_path / "q.npz")])
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "q.npz") as zq, np.load(run / "codes-query.npz") as saved:
        assert np.array_equal(zq["codes"], saved["codes"])  # encoding again gives the run's codes
    # a folder of image files encodes to the same codes as those images inside the run's database
    from PIL import Image

    from hashdistill.data import load_protocol

    p = load_protocol("fmnist-1k")
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k, i in enumerate(p.database[:3]):
        Image.fromarray(p.images[i]).save(folder / f"{k}.png")
    r = runner.invoke(app, ["encode", str(run), "--split", str(folder), "--out", str(tmp_path / "f.npz")])
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "f.npz") as zf, np.load(run / "codes-database.npz") as saved:
        assert np.array_equal(zf["codes"], saved["codes"][:3])
    r = runner.invoke(app, ["evaluate", str(run), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["map_at_1000"] == pytest.approx(json.loads((run / "metrics.json").read_text())["map_at_1000"])
    r = runner.invoke(app, ["index", "build", str(run), "--out", str(tmp_path / "db.hidx")])
    assert r.exit_code == 0 and "1500 codes of 32 bits" in r.output


def test_list_file_dataset_trains(tmp_path, fmnist):
    """The paper configs' path: DHD list files (path 0 1 0 ...) with images on disk."""
    from PIL import Image

    root = tmp_path / "images"
    root.mkdir()
    lists = {}
    for split, idx in (("train", fmnist.train[:200]), ("query", fmnist.query[:30]), ("database", fmnist.database[:300])):
        lines = []
        for i in idx:
            Image.fromarray(fmnist.images[i]).convert("RGB").save(root / f"{i}.png")
            cols = ["0"] * 10
            cols[fmnist.labels[i]] = "1"
            lines.append(f"{i}.png " + " ".join(cols))
        lists[split] = tmp_path / f"{split}.txt"
        lists[split].write_text("\n".join(lines) + "\n")
    cfg = load_config(None, ["epochs=2", "bits=16", "batch_size=50", "input_size=28", "crop_scale=[0.5,1.0]",
                             "backbone_lr_mult=1.0", "lr=1e-3", "name=lists"])  # fmt: skip
    cfg["protocol"] = None
    cfg["data"] = {"train": str(lists["train"]), "query": str(lists["query"]), "database": str(lists["database"]),
                   "root": str(root), "load_size": 28, "topk": 100}  # fmt: skip
    cfg = validate(cfg)
    m = train(cfg, tmp_path / "lists", progress=False)
    log = _log(tmp_path / "lists")
    assert log[-1]["loss"] < log[0]["loss"] and 0 < m["map_at_100"] <= 1
    with np.load(tmp_path / "lists" / "codes-database.npz") as z:
        assert z["codes"].shape == (300, 2) and z["labels"].shape == (300, 10)
