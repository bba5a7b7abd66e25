"""Training on real (small) Fashion-MNIST slices: end to end, cached, resume, CLI."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hashdistill.cli import app
from hashdistill.codes import pack
from hashdistill.config import ConfigError, load_config
from hashdistill.run import Run, RunError
from hashdistill.train import Trainer, train

SMALL = ["data.limit_train=600", "data.limit_query=100", "data.limit_database=1500", "optim.batch_size=100",
         "augment.crop_scale=[0.5,1.0]", "optim.lr=1e-3", "optim.backbone_lr_mult=1.0", "model.bits=32",
         "runtime.num_threads=2"]  # fmt: skip


def _log(run):
    return [json.loads(r) for r in (run / "log.jsonl").read_text().splitlines()]


def test_end_to_end_run_reduces_loss_and_produces_codes(tmp_path):
    cfg = load_config(None, SMALL + ["name=e2e", "schedule.epochs=3"])
    m = train(cfg, tmp_path / "e2e", progress=False)
    log = _log(tmp_path / "e2e")
    assert [r["epoch"] for r in log] == [1, 2, 3] and log[-1]["loss"] < log[0]["loss"]
    with np.load(tmp_path / "e2e" / "codes-database.npz") as z:
        assert z["codes"].shape == (1500, 4) and z["codes"].dtype == np.uint8
    assert m["map_at_1000"] > 0.2  # twice chance (about 0.1) after 3 epochs on 600 images


def test_cached_run_reduces_loss_and_produces_codes(tmp_path):
    cfg = load_config(None, SMALL + ["name=cached", "model.mode=cached", "model.backbone=mobilenet_v2", "model.pretrained=true",
                                     "model.input_size=32", "augment.views=2", "schedule.epochs=8", "optim.backbone_lr_mult=0"])  # fmt: skip
    m = train(cfg, tmp_path / "cached", progress=False)
    log = _log(tmp_path / "cached")
    assert log[-1]["loss"] < log[0]["loss"]
    with np.load(tmp_path / "cached" / "codes-query.npz") as z:
        assert z["codes"].shape == (100, 4)
    assert m["map_at_1000"] > 0.3
    # a second run of the same config reads every feature from the cache and trains the same weights
    again = train(cfg, tmp_path / "again", progress=False)
    assert again["features_seconds"] == 0.0 and again["map_at_1000"] == m["map_at_1000"]


def test_resume_after_a_kill_mid_epoch_finishes_identically(tmp_path):
    cfg = load_config(None, SMALL + ["name=r", "schedule.epochs=3", "data.limit_train=300"])
    train(cfg, tmp_path / "full", progress=False)

    def kill(epoch, step):
        if epoch == 1 and step == 1:
            raise KeyboardInterrupt  # as if the process died in the middle of the second epoch

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", progress=False, callback=kill)
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    train(cfg, tmp_path / "killed", resume=True, progress=False)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert b["epoch"] == 3 and [r["epoch"] for r in _log(tmp_path / "killed")] == [1, 2, 3]
    for k in a["model"]:
        assert torch.allclose(a["model"][k].float(), b["model"][k].float(), atol=1e-5), k


def test_feature_norm_tracks_the_training_features_and_a_loaded_run_encodes_item_by_item_as_it_trained(tmp_path):
    """model.feature_norm=batch: the head normalises its input by the batch in training (301 images in batches
    of 100 end with a batch of one image, one view, which takes the running statistics) and by running estimates
    of the training features' statistics when encoding, which the checkpoint carries: a loaded run encodes one
    image alone as it did in the saved codes; without those statistics, or with its config set to
    feature_norm: none, it does not load."""
    sets = ["model.mode=cached", "model.backbone=mobilenet_v2", "model.pretrained=true", "model.input_size=32",
            "augment.views=2", "optim.backbone_lr_mult=0", "schedule.epochs=6", "data.limit_train=301",
            "model.feature_norm=batch", "method=dhd-hp-bceq", "name=fn"]  # fmt: skip
    cfg = load_config(None, SMALL + sets)
    m = train(cfg, tmp_path / "fn", progress=False)
    assert m["map_at_1000"] > 0.3
    teacher = np.asarray(Trainer(cfg, tmp_path / "probe", progress=False).setup().source.teacher, np.float64)
    path = tmp_path / "fn" / "checkpoint.pt"
    good = torch.load(path, weights_only=True)
    mean, var = (good["model"][f"head.pre.running_{k}"].double().numpy() for k in ("mean", "var"))
    f = teacher.reshape(-1, teacher.shape[-1])
    spread = f.std(0).mean()
    assert np.abs(mean - f.mean(0)).mean() < 0.1 * spread  # the running mean is the features' mean
    assert 0.5 < np.median(var / np.maximum(f.var(0), 1e-12)) < 1.5
    run = Run.load(tmp_path / "fn")
    images, _, _ = run.split_images("query")
    one_by_one = np.concatenate([run.encode(images[i : i + 1]) for i in range(0, 100, 7)])
    assert np.array_equal(pack(np.where(one_by_one >= 0, 1, -1)).array, run.codes("query").array[::7])
    torch.save({**good, "model": {k: v for k, v in good["model"].items() if k != "head.pre.running_var"}}, path)
    with pytest.raises(
        RunError, match=r"checkpoint.pt: the weights do not fit the run's config \(missing head.pre.running_var\)"
    ):
        Run.load(tmp_path / "fn")
    torch.save(good, path)
    config = tmp_path / "fn" / "config.yaml"
    config.write_text(config.read_text().replace("feature_norm: batch", "feature_norm: none"))
    with pytest.raises(RunError, match=r"the weights do not fit the run's config \(unexpected head.pre.running_mean, "):
        Run.load(tmp_path / "fn")


def test_min_steps_lengthens_a_small_sets_run_and_its_schedule_and_resumes(tmp_path):
    # 300 images in batches of 100: 3 steps an epoch, so at least 7 steps take 3 epochs, not the 1 configured
    cfg = load_config(None, SMALL + ["name=m", "schedule.epochs=1", "schedule.min_steps=7", "data.limit_train=300"])
    m = train(cfg, tmp_path / "full", progress=False)
    full = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    assert m["epochs"] == 3 and [r["epoch"] for r in _log(tmp_path / "full")] == [1, 2, 3]
    # warm-up over the first epoch's 3 steps, then the cosine decays over the other 6: lr 1e-3, 5e-4, 0 at the ends
    assert [r["lr"] for r in _log(tmp_path / "full")] == pytest.approx([1e-3, 5e-4, 0.0], abs=1e-9)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", progress=False, callback=lambda e, s: _raise() if (e, s) == (1, 1) else None)
    train(cfg, tmp_path / "killed", resume=True, progress=False)
    b = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert b["epoch"] == 3
    for k in full["model"]:
        assert torch.allclose(full["model"][k].float(), b["model"][k].float(), atol=1e-5), k
    few = train(cfg.replace(["schedule.min_steps=2", "name=few"]), tmp_path / "few", progress=False)
    assert few["epochs"] == 1  # already reached in the configured epoch


def _raise():
    raise KeyboardInterrupt


def test_validation_split_never_uses_queries(tmp_path):
    cfg = load_config(None, SMALL + ["name=v", "schedule.epochs=1", "data.val_fraction=0.2", "schedule.select=best"])
    t = Trainer(cfg, tmp_path / "v", progress=False)
    assert not (tmp_path / "v").exists() and not hasattr(t, "data")  # building a Trainer does no I/O
    t.setup()
    assert len(t.val_split) == 120 and len(t.fit_split) == 480
    assert not np.intersect1d(t.val_split.ids, t.data.query.ids).size
    t.fit()
    assert "val_map" in _log(tmp_path / "v")[0] and (tmp_path / "v" / "best.pt").is_file()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["learning_rate=1"], "unknown key learning_rate; known: name, data, model, augment, method, optim, schedule, runtime"),
        (["lr=1"], "unknown key lr (now optim.lr); known: name, data, model, augment, method, optim, schedule, runtime"),
        (
            ["data.limt_train=5"],
            "unknown key data.limt_train; known: protocol, train, query, database, root, load_size, "
            "topk, limit_train, limit_query, limit_database, val_fraction, workers, max_pixels, allow_outside_root",
        ),
        (
            ["name=../elsewhere"],
            "name: the run folder's name: no '/' or '\\', not empty, not starting with '.', got '../elsewhere'",
        ),
        (["data.max_pixels=0"], "data.max_pixels: Input should be greater than 0, got 0"),
        (["data.limit_train=0"], "data.limit_train: Input should be greater than 0, got 0"),
        (
            ["data.protocol=cifar"],
            "data.protocol: unknown protocol 'cifar'; known: fmnist-1k, mnist-1k, fmnist-outfits, openmoji",
        ),
        (["data.protocol=null"], "data: without data.protocol, data.train is needed (a list file or a folder of images)"),
        (["model.bits=12"], "model.bits: must be a multiple of 8, got 12"),
        (["model.mode=fast"], "model.mode: Input should be 'end-to-end' or 'cached', got 'fast'"),
        (
            ["model.bitz=8"],
            "unknown key model.bitz; known: bits, backbone, pretrained, layer, head_hidden, feature_norm, proxy_gain, mode, input_size",
        ),
        (["augment.crop_scale=abc"], "augment.crop_scale: Input should be a valid tuple, got 'abc'"),
        (["augment.crop_scale=[0.9,0.5]"], "augment.crop_scale: must be [low, high] with 0 < low <= high <= 1, got [0.9, 0.5]"),
        (["optim.lr=fast"], "optim.lr: Input should be a valid number, unable to parse string as a number, got 'fast'"),
        (["optim.momentum=0.9"], "unknown key optim.momentum; known: lr, backbone_lr_mult, weight_decay, batch_size"),
        (["method.proxy_lr_mult=0"], "method.proxy_lr_mult: Input should be greater than 0, got 0"),
        (
            ["method=greedyhash", "method.proxy_lr_mult=10"],
            "unknown key method.proxy_lr_mult; known: name, self_distill, self_distill_weight, train_view, alpha",
        ),
        (["schedule.select=best"], "schedule.select: best needs data.val_fraction > 0 (selection never looks at the queries)"),
        (["schedule.epoch=3"], "unknown key schedule.epoch; known: epochs, min_steps, warmup_epochs, select"),
        (["runtime.device=gpu"], "runtime.device: must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
        (["runtime.sed=1"], "unknown key runtime.sed; known: seed, device, amp, num_threads, feature_batch"),
        (["model.mode=cached"], "model.mode: cached freezes the backbone: use a pretrained one (small-cnn trains end to end)"),
        (["model"], "--set expects key=value or a.b.c=value, got 'model'"),
        (["model.bits.x=8"], "model.bits is not a section: cannot set model.bits.x"),
    ],
)
def test_config_errors_are_one_line_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert str(e.value) == message


def test_config_files_and_overrides(tmp_path):
    assert load_config(None, ["optim.lr=1e-3"]).optim.lr == 0.001  # YAML reads 1e-3 as a string
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {bits: [")
    with pytest.raises(ConfigError, match=r"^.*bad.yaml: not valid YAML"):
        load_config(bad)
    bad.write_bytes(b"model:\n  backbone: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not UTF-8 text \(byte 19\)$"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="bad.yaml: a config is a mapping of sections"):
        load_config(bad)
    good = tmp_path / "good.yaml"
    good.write_text("model:\n  bits: 16\nmethod: csq\n")
    cfg = load_config(good, ["method.lambda_q=0.5", "method.self_distill=true"])
    assert (cfg.run_name, cfg.model.bits, cfg.method.name, cfg.method.lambda_q, cfg.method.self_distill) == (
        "good",
        16,
        "csq",
        0.5,
        True,
    )
    # what a run writes is what it reads back
    import yaml

    from hashdistill.config import dump_config, parse_config

    assert parse_config(yaml.safe_load(dump_config(cfg))) == cfg


def test_cli_train_encode_evaluate_index(tmp_path):
    cfgfile = tmp_path / "tiny.yaml"
    cfgfile.write_text("schedule: {epochs: 1}\n")
    runner = CliRunner()
    sets = [a for s in SMALL for a in ("--set", s)]
    r = runner.invoke(app, ["train", str(cfgfile), "--runs-dir", str(tmp_path), "--quiet", *sets])
    assert r.exit_code == 0, r.output
    run = tmp_path / "tiny"
    assert json.loads(r.output.strip().splitlines()[-1])["bits"] == 32
    r = runner.invoke(app, ["train", str(cfgfile), "--runs-dir", str(tmp_path), "--quiet", *sets])
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
    r = runner.invoke(app, ["encode", str(run), "--images", str(folder), "--out", str(tmp_path / "f.npz")])
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
    cfg = load_config(None, ["schedule.epochs=2", "model.bits=16", "optim.batch_size=50", "model.input_size=28",
                             "augment.crop_scale=[0.5,1.0]", "optim.backbone_lr_mult=1.0", "optim.lr=1e-3", "name=lists",
                             "data.protocol=null", *[f"data.{k}={v}" for k, v in lists.items()], f"data.root={root}",
                             "data.load_size=28", "data.topk=100"])  # fmt: skip
    m = train(cfg, tmp_path / "lists", progress=False)
    log = _log(tmp_path / "lists")
    assert log[-1]["loss"] < log[0]["loss"] and 0 < m["map_at_100"] <= 1
    with np.load(tmp_path / "lists" / "codes-database.npz") as z:
        assert z["codes"].shape == (300, 2) and z["labels"].shape == (300, 10)
