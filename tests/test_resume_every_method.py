"""A resumed run equals an uninterrupted one bit for bit, for every registered method: the checkpoint holds the
model, optimiser, schedule, AMP scaler and the method's own state (``HashingMethod.state_dict``: ADSH's V, DSDH's
B, CNNH's target codes, DistillHash's stage-1 outputs, ...)."""

import pytest
import torch

from hashdistill.config import load_config
from hashdistill.methods import METHODS
from hashdistill.train import train

TINY = ["data.limit_train=200", "data.limit_query=50", "data.limit_database=300", "optim.batch_size=50",
        "augment.crop_scale=[0.5,1.0]", "optim.lr=1e-3", "model.bits=16", "runtime.num_threads=2",
        "model.mode=cached", "model.backbone=mobilenet_v2", "model.pretrained=true", "model.input_size=32",
        "augment.views=2", "optim.backbone_lr_mult=0", "schedule.epochs=3", "schedule.warmup_epochs=1"]  # fmt: skip
# what a method needs to run on the tiny set: its stage 1 ends inside the three epochs, its pairs fit 200 images
EXTRA = {
    name: ["method.stage1_epochs=1", "method.pairs.input_size=32", "method.pairs.k=10", "method.pairs.noise_neighbours=5",
           "method.pairs.batch_neighbours=1"]
    for name in ("distillhash", "distillhash-squared")
}  # fmt: skip
EXTRA["distillhash-noisy"] = EXTRA["distillhash"][1:]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_run_killed_after_its_second_epoch_resumes_to_the_same_weights_and_state(tmp_path, name):
    cfg = load_config(None, [*TINY, f"method={name}", *EXTRA.get(name, [])])
    train(cfg, tmp_path / "full", progress=False)

    def kill(epoch, step):
        if epoch == 2 and step == 1:
            raise KeyboardInterrupt  # dies in the third epoch, after the method's epoch hook ran

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", progress=False, callback=kill)
    train(cfg, tmp_path / "killed", resume=True, progress=False)
    a, b = (torch.load(tmp_path / r / "checkpoint.pt", weights_only=True) for r in ("full", "killed"))
    assert b["epoch"] == 3
    for part in ("model", "method"):
        flat_a, flat_b = _flat(a[part]), _flat(b[part])
        assert flat_a.keys() == flat_b.keys(), part
        for k in flat_a:
            assert _same(flat_a[k], flat_b[k]), f"{part}: {k}"


def _flat(state, prefix=""):
    out = {}
    for k, v in state.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _same(x, y):
    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and x.shape == y.shape and torch.equal(x, y)
    return x == y
