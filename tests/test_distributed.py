"""torchrun on CPU (gloo, 2 processes): data-parallel training, resume after a killed rank, sharded encoding and
sharded feature extraction (docs/architecture.md, "Beyond one process")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hashdistill.data.sources import data_home
from hashdistill.distributed import Distributed, merge_round_robin, shard_order

CACHED = ["configs/dhd-fmnist-cached.yaml", "--set", "data.limit_train=256", "--set", "data.limit_query=64",
          "--set", "data.limit_database=512", "--set", "augment.views=1", "--set", "schedule.epochs=3",
          "--set", "model.bits=32", "--quiet"]  # fmt: skip
END_TO_END = ["configs/demo.yaml", "--set", "data.limit_train=1280", "--set", "data.limit_query=50",
              "--set", "data.limit_database=300", "--set", "schedule.epochs=3", "--set", "model.bits=16",
              "--set", "optim.batch_size=16", "--quiet"]  # fmt: skip


def hashdistill(*args: str, procs: int = 1, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    """``python -m hashdistill`` as one process, or under torchrun with ``procs`` processes."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    cmd = [*(launcher if procs > 1 else [sys.executable]), "-m", "hashdistill", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, **kw)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", weights_only=True)["model"]


def own_data_home(tmp: Path) -> dict[str, str]:
    """A data home of its own (so features are computed, not read from a cache) sharing the prepared protocols."""
    tmp.mkdir(parents=True)
    (tmp / "protocols").symlink_to(data_home() / "protocols")
    return {"HASHDISTILL_DATA": str(tmp)}


def test_shard_order_splits_every_global_step_and_weights_an_uneven_last_one():
    order = np.arange(21)
    parts = [shard_order(order, 4, Distributed(rank=r, world=2)) for r in range(2)]
    (a, wa), (b, wb) = parts
    assert a.tolist() == [0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18] and b.tolist() == [4, 5, 6, 7, 12, 13, 14, 15, 19, 20]
    assert wa == [1.0, 1.0, 6 / 5] and wb == [1.0, 1.0, 4 / 5]  # the last step: 3 + 2 of 5 images
    a, wa = shard_order(np.arange(17), 4, Distributed(rank=1, world=2))  # a last step of 1 image < 2 ranks: dropped
    assert a.tolist() == [4, 5, 6, 7, 12, 13, 14, 15] and len(wa) == 2
    assert merge_round_robin([["b0", "b2", "b4"], ["b1", "b3"]]) == ["b0", "b1", "b2", "b3", "b4"]


def test_two_processes_train_what_one_process_trains_with_the_global_batch(tmp_path):
    """Cached DHD (a head without BatchNorm, a loss that is a mean over images, one view per image so that no
    per-rank draw differs): 2 processes x batch 32 reach the weights of 1 process x batch 64 (allclose: the
    gradients are averaged in another order), and the features they extract, sharded, equal one process's."""
    runs = tmp_path / "runs"
    two = hashdistill("train", *CACHED, "--set", "optim.batch_size=32", "--set", "name=two", "--runs-dir", str(runs),
                      procs=2, env=own_data_home(tmp_path / "home2"))  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    one = hashdistill("train", *CACHED, "--set", "optim.batch_size=64", "--set", "name=one", "--runs-dir", str(runs),
                      env=own_data_home(tmp_path / "home1"))  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    m1, m2 = json.loads(one.stdout), json.loads(two.stdout)  # rank 0 alone prints
    assert m2["world_size"] == 2 and m2["global_batch"] == 64 and "world_size" not in m1
    w1, w2 = weights(runs / "one"), weights(runs / "two")
    assert w1.keys() == w2.keys() and all(torch.allclose(w1[k], w2[k], atol=1e-5, rtol=1e-4) for k in w1)
    assert abs(m1["map_at_1000"] - m2["map_at_1000"]) < 1e-3
    feats = sorted((tmp_path / "home2" / "features").rglob("*.npy"))
    assert len(feats) == 4  # teacher and student views of the training images, clean query and database features
    for f in feats:
        assert np.array_equal(np.load(f), np.load(tmp_path / "home1" / f.relative_to(tmp_path / "home2")))
    assert not list((tmp_path / "home2" / "features").rglob("*.shard-*"))  # merged once, shards removed
    rows = [json.loads(x) for x in (runs / "two" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    """The small CNN end to end under torchrun (2 processes x batch 16), uninterrupted."""
    runs = tmp_path_factory.mktemp("e2e")
    r = hashdistill("train", *END_TO_END, "--set", "name=full", "--runs-dir", str(runs), procs=2)
    assert r.returncode == 0, r.stderr[-3000:]
    return runs


def test_end_to_end_is_reproducible_for_a_world_size_and_resumes_after_a_killed_rank(e2e):
    """With BatchNorm and per-rank augmentation, 2 processes do not reproduce one (per-rank statistics and draws),
    but a run is reproducible for a given world size; and a run whose rank 1 is killed mid-epoch resumes under
    torchrun with --resume to the very weights of the uninterrupted run."""
    again = hashdistill("train", *END_TO_END, "--set", "name=again", "--runs-dir", str(e2e), procs=2)
    assert again.returncode == 0, again.stderr[-3000:]
    full = weights(e2e / "full")
    assert all(torch.equal(full[k], v) for k, v in weights(e2e / "again").items())

    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    args = [*launcher, "-m", "hashdistill", "train", *END_TO_END, "--set", "name=killed", "--runs-dir", str(e2e)]
    job = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = e2e / "killed" / "checkpoint.pt"
    deadline = time.time() + 300
    while not ckpt.is_file() and time.time() < deadline and job.poll() is None:
        time.sleep(0.02)
    rank1 = _worker(job.pid, rank=1)
    assert rank1 is not None and ckpt.is_file()
    os.kill(rank1, signal.SIGKILL)  # mid-epoch 2
    assert job.wait(timeout=120) != 0
    epoch = torch.load(ckpt, weights_only=True)["epoch"]
    assert 1 <= epoch < 3 and not (e2e / "killed" / "metrics.json").exists()
    resumed = hashdistill("train", *END_TO_END, "--set", "name=killed", "--runs-dir", str(e2e), "--resume", procs=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert all(torch.equal(full[k], v) for k, v in weights(e2e / "killed").items())
    rows = [json.loads(x) for x in (e2e / "killed" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]


def _worker(launcher: int, rank: int) -> int | None:
    """The pid of torchrun's worker with ``RANK=rank`` (a child of the launcher)."""
    for pid in Path("/proc").iterdir():
        if not pid.name.isdigit():
            continue
        try:
            stat = (pid / "stat").read_text()
            env = (pid / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == launcher and f"RANK={rank}".encode() in env:
            return int(pid.name)
    return None


def test_whole_set_state_computed_on_rank_0_reaches_every_rank(tmp_path):
    """DistillHash (pairs at step 0, distilled at its stage boundary) and CNNH (stage-1 codes): rank 0 computes,
    the others receive the state, or their first step would fail."""
    small = ["--set", "data.limit_train=256", "--set", "data.limit_query=32", "--set", "data.limit_database=128",
             "--set", "optim.batch_size=32", "--quiet", "--runs-dir", str(tmp_path)]  # fmt: skip
    dh = hashdistill("train", "configs/distillhash-fmnist.yaml", *small, "--set", "model.input_size=32",
                     "--set", "method.pairs.input_size=32", "--set", "augment.views=1", "--set", "schedule.epochs=3",
                     "--set", "method.stage1_epochs=1", "--set", "name=dh", procs=2)  # fmt: skip
    assert dh.returncode == 0, dh.stderr[-3000:]
    purity = json.loads((tmp_path / "dh" / "purity.json").read_text())
    assert set(purity) == {"initial", "distilled", "curve"}
    assert torch.load(tmp_path / "dh" / "checkpoint.pt", weights_only=True)["method"]["_extra_state"]["stage1"] is not None
    summary = {k: v for k, v in purity.items() if k != "curve"}
    assert json.loads(dh.stdout)["purity"] == summary  # rank 0's report, through the metrics
    cnnh = hashdistill("train", "configs/demo.yaml", *small, "--set", "method=cnnh", "--set", "schedule.epochs=1",
                       "--set", "name=cnnh", procs=2)  # fmt: skip
    assert cnnh.returncode == 0, cnnh.stderr[-3000:]
    assert len(json.loads(cnnh.stdout)["stage1_residual"]) == 10


def test_sharded_encoding_equals_one_process_bit_for_bit(e2e, tmp_path):
    run = e2e / "full"
    for procs, out in ((1, "one.npz"), (2, "two.npz"), (3, "three.npz")):
        r = hashdistill("encode", str(run), "--split", "database", "--out", str(tmp_path / out), procs=procs)
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout == f"{tmp_path / out}: 300 codes of 16 bits\n"  # rank 0 alone writes and prints
    one = np.load(tmp_path / "one.npz")
    for out in ("two.npz", "three.npz"):
        other = np.load(tmp_path / out)
        assert all(np.array_equal(one[k], other[k]) for k in ("codes", "ids", "labels"))
    assert np.array_equal(one["codes"], np.load(run / "codes-database.npz")["codes"])  # what training saved
