"""The contract between the trainer and every method: a method defined here, registered with one decorator,
trains from a config with no edit to the trainer or the config; hooks and declarations reach the trainer."""

import json

import numpy as np
import pytest
import torch
from pydantic import Field

from hashdistill.config import ConfigError, load_config
from hashdistill.errors import ModelError
from hashdistill.methods import METHODS, HashingMethod, MethodParams, create_method
from hashdistill.methods.targets import similarity
from hashdistill.train import Trainer, train

CACHED = ["data.limit_train=600", "data.limit_query=100", "data.limit_database=1500", "optim.batch_size=100",
          "augment.crop_scale=[0.5,1.0]", "optim.lr=1e-3", "model.bits=16", "runtime.num_threads=2",
          "model.mode=cached", "model.backbone=mobilenet_v2", "model.pretrained=true", "model.input_size=32",
          "augment.views=2", "optim.backbone_lr_mult=0"]  # fmt: skip


class PairRegressionParams(MethodParams):
    scale: float = Field(1.0, gt=0)


class PairRegression(HashingMethod):
    """A supervised method written for this test: (h_i . h_j / K - s_ij)^2 over the batch, s in {-1, +1},
    times ``scale``; it also records what the trainer hands its hooks."""

    Params = PairRegressionParams

    def __init__(self, params=None, **kw):
        super().__init__(params, **kw)
        self.calls = {"prepare": 0, "epochs": [], "steps": []}

    def prepare(self, ctx):
        self.calls["prepare"] += 1
        assert ctx.labels is not None and len(ctx.labels) == ctx.n  # a supervised method sees the labels
        return {"prepared_on": ctx.n}

    def on_epoch(self, epoch, ctx):
        self.calls["epochs"].append(epoch)
        return {}

    def on_step(self, step):
        self.calls["steps"].append(step)

    def forward(self, h, h_s, y, proxies=None):
        s = 2 * similarity(y, y) - 1
        loss = self.params.scale * ((h @ h.T / h.shape[1] - s) ** 2).mean()
        return {"loss": loss}


@pytest.fixture
def registered():
    METHODS.register("pair-regression")(PairRegression)  # what @METHODS.register("pair-regression") above it does
    yield PairRegression
    METHODS.remove("pair-regression")  # (only for the tests that ask for it)


def test_a_method_defined_in_a_test_trains_from_a_config(tmp_path, registered):
    cfg = load_config(None, CACHED + ["name=pr", "method=pair-regression", "method.scale=2", "schedule.epochs=6"])
    assert cfg.method.scale == 2 and type(cfg.method) is PairRegressionParams
    t = Trainer(cfg, tmp_path / "pr", progress=False)
    m = t.fit()
    assert m["map_at_1000"] > 0.3 and m["prepared_on"] == 600  # chance is about 0.1; the hook's report lands
    log = [json.loads(r) for r in (tmp_path / "pr" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"]
    assert t.method.calls["prepare"] == 1 and t.method.calls["epochs"] == list(range(6))
    assert t.method.calls["steps"] == list(range(6 * 6))  # 600 images / 100 per batch, global step numbers
    # its settings are validated like any method's; self-distillation wraps it
    with pytest.raises(ConfigError, match=r"^unknown key method.scal; known: .*scale$"):
        load_config(None, ["method=pair-regression", "method.scal=2"])
    with pytest.raises(ConfigError, match=r"^method.scale: Input should be greater than 0, got 0$"):
        load_config(None, ["method=pair-regression", "method.scale=0"])
    wrapped = create_method(load_config(None, ["method=pair-regression", "method.self_distill=true"]).method, bits=16)
    assert wrapped.views == 2 and wrapped.method.params.scale == 1.0


def test_resume_calls_the_epoch_hook_from_the_epoch_it_resumes(tmp_path, registered):
    cfg = load_config(None, CACHED + ["method=pair-regression", "schedule.epochs=3"])

    def kill(epoch, step):
        if epoch == 1 and step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "r", progress=False, callback=kill)
    t = Trainer(cfg, tmp_path / "r", progress=False)
    t.fit(resume=True)
    assert t.method.calls["epochs"] == [1, 2] and t.method.calls["steps"][0] == 6  # epoch 2 restarts at its first step


class ConstantViews:
    """A view source whose teacher features are all 0 and student features all 1."""

    def __init__(self, dim):
        self.dim = dim

    def views(self, idx, rng, need_student):
        return torch.zeros(len(idx), self.dim), (torch.ones(len(idx), self.dim) if need_student else None)


@pytest.mark.parametrize(("view", "self_distill"), [("teacher", False), ("student", False), ("teacher", True)])
def test_views_reach_the_loss_as_configured(tmp_path, registered, monkeypatch, view, self_distill):
    """A one-view method sees T_T by default, T_S with train_view=student; with self-distillation its loss sees
    T_T and L_SdH the student view."""
    cfg = load_config(None, CACHED + ["method=pair-regression", f"method.train_view={view}",
                                      f"method.self_distill={str(self_distill).lower()}", "schedule.epochs=1"])  # fmt: skip
    t = Trainer(cfg, tmp_path / "v", progress=False).setup()
    dim = t.model.feature_dim
    t.source = ConstantViews(dim)
    seen = []
    forward = PairRegression.forward
    monkeypatch.setattr(
        PairRegression, "forward", lambda self, h, h_s, y, p=None: seen.append(h.detach()) or forward(self, h, h_s, y, p)
    )
    with torch.no_grad():
        want = t.model(torch.full((4, dim), 1.0 if view == "student" else 0.0))
    parts = t.step(np.arange(4), np.random.default_rng(0))
    assert torch.allclose(seen[0], want) and ("sdh" in parts) == self_distill


def test_an_unsupervised_method_gets_no_labels_in_its_context(tmp_path):
    cfg = load_config("configs/distillhash-fmnist.yaml", CACHED + ["schedule.epochs=3", "method.stage1_epochs=2",
                      "method.pairs.input_size=32", "method.pairs.k=10", "method.pairs.noise_neighbours=5"])  # fmt: skip
    ctx = Trainer(cfg, tmp_path / "u", progress=False).context()
    assert ctx.labels is None and len(ctx.report_labels) == ctx.n == 600


@pytest.mark.parametrize(
    ("sets", "mult"),
    [(["method=dhd", "method.proxy_lr_mult=10"], 10), (["method=dhd-hp", "method.self_distill=true", "method.proxy_lr_mult=4"], 4),
     (["method=greedyhash"], 1)],
)  # fmt: skip
def test_proxies_learn_at_the_methods_multiple_of_the_heads_rate(tmp_path, sets, mult):
    """One Adam step (a first step moves every weight by lr, whatever its gradient's size) on 100 images in one
    batch: the proxies move by proxy_lr_mult x the head's step, through the self-distillation wrapper too; a
    method without the hook keeps one rate."""
    cfg = load_config(None, CACHED + sets + ["name=p", "schedule.epochs=1", "data.limit_train=100"])
    t = Trainer(cfg, tmp_path / "p", progress=False).setup()
    before = {k: v.clone() for k, v in t.opt.model.state_dict().items()}
    t.fit()
    after = torch.load(tmp_path / "p" / "checkpoint.pt", weights_only=True)["model"]
    step = {k: float((after[k] - before[k]).abs().max()) for k in ("proxies", "head.fc.weight")}
    assert step["head.fc.weight"] == pytest.approx(1e-3, rel=1e-3)
    assert step["proxies"] == pytest.approx(mult * 1e-3, rel=1e-3)


def test_resume_refuses_a_checkpoint_whose_optimiser_was_split_otherwise(tmp_path):
    sets = CACHED + ["method=dhd", "schedule.epochs=1", "data.limit_train=100"]
    train(load_config(None, sets + ["method.proxy_lr_mult=10"]), tmp_path / "r", progress=False)
    with pytest.raises(
        ModelError,
        match=r"checkpoint.pt: written with 2 optimiser parameter groups, this run's config makes 1: .*proxy_lr_mult=1\)$",
    ):
        train(load_config(None, sets + ["method.proxy_lr_mult=1"]), tmp_path / "r", resume=True, progress=False)
