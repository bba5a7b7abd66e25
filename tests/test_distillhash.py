"""DistillHash: the distillation rule by hand, batch labels against dense references, the losses, and runs."""

import json
import math

import numpy as np
import pytest
import torch

from hashdistill.config import ConfigError, load_config
from hashdistill.methods.distillhash import DistillHash, pair_features
from hashdistill.methods.distillhash.method import BayesianPairLoss, QuantizationLoss, SquaredPairLoss
from hashdistill.methods.distillhash.pairs import (
    DistilledPairs,
    InitialPairs,
    calibrate,
    cross_fitted,
    distill_rule,
    fit_logistic,
    fold_assignment,
    knn_graph,
    local_extremes,
    normalise,
    purity,
    purity_curve,
)  # fmt: skip
from hashdistill.report import write_report
from hashdistill.train import train


def _logit(p):
    p = torch.as_tensor(p, dtype=torch.float64)
    return torch.log(p) - torch.log1p(-p)


def test_distillation_rule_on_a_hand_made_posterior_matrix():
    # 4 images; N(i) = {i, nearest}: 0<->1 and 2<->3 are neighbours
    P = torch.tensor([
        [0.99, 0.95, 0.10, 0.30],
        [0.95, 0.99, 0.02, 0.08],
        [0.10, 0.02, 0.99, 0.90],
        [0.30, 0.08, 0.90, 0.99],
    ], dtype=torch.float64)  # fmt: skip
    nbr = torch.tensor([[0, 1], [1, 0], [2, 3], [3, 2]])
    theta = _logit(P)
    lo = local_extremes(theta, nbr, nbr, largest=False)
    hi = local_extremes(theta, nbr, nbr, largest=True)
    # by hand: rho_minus(0, 2) = min P over {0,1} x {2,3} = 0.02; rho_plus(0, 2) = 1 - max = 0.70
    assert torch.sigmoid(lo[0, 2]).item() == pytest.approx(0.02)
    assert 1 - torch.sigmoid(hi[0, 2]).item() == pytest.approx(0.70)
    # rho_minus(0, 1) = min over {0,1} x {1,0} = 0.95 -> keep +1 only if P > 0.975: P_01 = 0.95 is dropped
    assert torch.sigmoid(lo[0, 1]).item() == pytest.approx(0.95)
    s = distill_rule(theta, lo, hi)
    # (0,2): P = 0.10 < (1 - 0.70) / 2 = 0.15 -> -1;  (0,3): P = 0.30 is neither -> 0
    # (1,2), (1,3): P = 0.02, 0.08 < 0.15 -> -1;  (2,3): rho_minus = 0.90 -> P = 0.90 < 0.95 -> 0
    # diagonal: P = 0.99 > (1 + 0.95) / 2 = 0.975 for 0 and 1; (1 + 0.90) / 2 = 0.95 for 2 and 3
    expected = torch.tensor([[1, 0, -1, 0], [0, 1, -1, -1], [-1, -1, 1, 0], [0, -1, 0, 1]], dtype=torch.int8)
    assert torch.equal(s, expected)


def test_distillation_rule_stays_exact_where_the_posterior_saturates():
    # 64-bit codes: theta = 32 (identical codes) rounds sigmoid to 1.0 in float32; the rule must still see
    # that a pair at theta 32 clears a neighbourhood whose weakest pair is at theta 30
    theta = torch.tensor([[32.0]])
    assert distill_rule(theta, torch.tensor([[30.0]]), torch.tensor([[32.0]])).item() == 1
    assert distill_rule(theta, torch.tensor([[32.0]]), torch.tensor([[32.0]])).item() == 0
    assert distill_rule(torch.tensor([[-30.0]]), torch.tensor([[-32.0]]), torch.tensor([[-28.0]])).item() == -1


def test_batch_distillation_equals_the_dense_computation():
    rng = np.random.default_rng(0)
    n, bits = 60, 16
    centres = rng.choice([-1, 1], size=(4, bits))
    codes = centres[rng.integers(0, 4, n)] * np.where(rng.random((n, bits)) < 0.15, -1, 1)
    f = normalise(codes + rng.normal(0, 0.5, codes.shape))
    g = knn_graph(f, 6)
    ranked = torch.cat([torch.arange(n)[:, None], g], 1)
    src = DistilledPairs(codes, ranked[:, :4], ranked[:, 2:6])
    b = torch.as_tensor(codes, dtype=torch.float64)
    theta = 0.5 * b @ b.T
    dense = distill_rule(theta, local_extremes(theta, ranked[:, :4], ranked[:, :4], False),
                         local_extremes(theta, ranked[:, 2:6], ranked[:, 2:6], True))  # fmt: skip
    rows, cols = torch.tensor([3, 17, 40, 5]), torch.tensor([8, 3, 59, 22, 0])
    assert torch.equal(src.labels(rows, cols), dense[rows][:, cols])
    assert torch.equal(src.labels(torch.arange(n), torch.arange(n)), dense)
    assert (dense == 1).any() and (dense == -1).any() and (dense == 0).any()


def test_materialised_labels_equal_the_on_the_fly_ones():
    rng = np.random.default_rng(4)
    n = 50
    codes = rng.choice([-1.0, 1.0], size=(n, 16))
    ranked = torch.cat([torch.arange(n)[:, None], knn_graph(normalise(codes + rng.normal(0, 0.3, codes.shape)), 6)], 1)
    src = DistilledPairs(codes, ranked[:, :4], ranked[:, 2:6], scale=0.4, offset=-1.0)
    rows, cols = torch.tensor([9, 0, 33]), torch.arange(n)
    expected = src.labels(rows, cols)
    assert not src.materialise(memory_mb=1e-4)  # 2,500 labels do not fit 100 bytes: stays on the fly
    assert src.materialise(memory_mb=1.0) and src.dense.shape == (n, n)
    assert torch.equal(src.labels(rows, cols), expected)


def test_fit_logistic_recovers_the_sigmoid_that_made_the_counts():
    x = np.arange(-8, 8.5, 0.5)
    p = 1 / (1 + np.exp(-(0.7 * x - 1.5)))
    total = np.full_like(x, 1e6)
    a, c = fit_logistic(x, p * total, (1 - p) * total, balance=False)
    assert a == pytest.approx(0.7, abs=1e-6) and c == pytest.approx(-1.5, abs=1e-6)
    # balanced: the classes reweighted to equal mass shift the offset by the log prior ratio, not the slope
    ab, cb = fit_logistic(x, p * total, (1 - p) * total, balance=True)
    prior = (p * total).sum() / total.sum()
    assert ab == pytest.approx(0.7, abs=1e-6) and cb == pytest.approx(-1.5 - math.log(prior / (1 - prior)), abs=1e-6)
    with pytest.raises(ValueError, match="both similar and dissimilar"):
        fit_logistic(x, np.zeros_like(x), total)


def test_calibration_fits_the_posterior_to_the_noisy_labels():
    # two clusters of 16-bit codes; the noisy labels say similar exactly for same-cluster pairs, so a
    # calibrated posterior must separate theta near 8 (same cluster) from theta near 0 (other cluster)
    rng = np.random.default_rng(5)
    y = np.repeat([0, 1], 20)
    centres = np.array([[1.0] * 16, [1.0] * 8 + [-1.0] * 8])
    codes = centres[y] * np.where(rng.random((40, 16)) < 0.1, -1, 1)  # a few flipped bits: not separable
    f = normalise(np.eye(2)[y] + rng.normal(0, 0.05, (40, 2)))
    noisy = InitialPairs(f, "knn", k=19)  # k = cluster size - 1: similar = same cluster
    src = DistilledPairs(codes, torch.arange(40)[:, None], torch.arange(40)[:, None])
    scale, offset = calibrate(src, noisy, balance=True, memory_mb=0.001)
    assert scale > 0
    p_same, p_other = torch.sigmoid(torch.tensor([scale * 8 + offset, scale * 0 + offset]))
    assert p_same > 0.9 and p_other < 0.1


def test_pair_features_centre_each_scale_and_weigh_them_equally():
    rng = np.random.default_rng(6)
    a, b = rng.normal(5, 1, (30, 4)), rng.normal(0, 100, (30, 3))
    f = pair_features([a, b])
    assert f.shape == (30, 7) and torch.allclose(f.norm(dim=1), torch.ones(30, dtype=f.dtype), atol=1e-5)
    # both parts carry half the squared norm, whatever their scale
    assert torch.allclose(f[:, :4].norm(dim=1) ** 2, torch.full((30,), 0.5), atol=1e-5)
    # centred: a shift of one part's features, or a rescaling of the other, changes nothing
    assert torch.allclose(pair_features([a + 50.0, b * 1e-3]), f, atol=1e-5)
    assert torch.allclose(pair_features([a], center=False), normalise(a))


def test_batches_gather_each_anchors_neighbours():
    rng = np.random.default_rng(7)
    y = np.repeat(np.arange(5), 20)
    method = DistillHash(pairs={"k": 4, "noise_neighbours": 3, "batch_neighbours": 2})
    method.setup(np.eye(5)[y] + rng.normal(0, 0.1, (100, 5)), y)
    anchors = np.array([3, 50, 97])
    idx = method.with_neighbours(anchors, np.random.default_rng(0))
    assert set(anchors) <= set(idx) and len(idx) == len(set(idx)) <= 3 * 3
    extra = set(idx) - set(anchors)
    assert extra and all(any(j in method.graph[a, :4].tolist() for a in anchors) for j in extra)


def test_knn_graph_blockwise_matches_brute_force_and_knn_labels_are_symmetric():
    rng = np.random.default_rng(1)
    f = normalise(rng.normal(size=(200, 8)))
    g = knn_graph(f, 5, memory_mb=0.001)  # forces one-row blocks
    s = (f @ f.T).fill_diagonal_(-math.inf)
    assert torch.equal(g, s.topk(5, dim=1).indices)
    pairs = InitialPairs(f, "knn", k=5, graph=g)
    lab = pairs.labels(torch.arange(200), torch.arange(200))
    assert torch.equal(lab, lab.T)
    i, j = 7, int(g[7, 0])
    assert lab[i, j] == 1 and lab[j, i] == 1
    far = int(s[7].argmin())
    assert lab[7, far] == -1


def test_threshold_rules_follow_their_quantiles():
    rng = np.random.default_rng(2)
    f = normalise(rng.normal(size=(300, 4)))
    one = InitialPairs(f, "threshold", quantiles=(0.2,))
    two = InitialPairs(f, "two-threshold", quantiles=(0.1, 0.6))
    a, b = one.labels(torch.arange(300), torch.arange(300)), two.labels(torch.arange(300), torch.arange(300))
    off = ~torch.eye(300, dtype=torch.bool)
    assert (a[off] == 1).float().mean().item() == pytest.approx(0.2, abs=0.02) and not (a == 0).any()
    assert (b[off] == 1).float().mean().item() == pytest.approx(0.1, abs=0.02)
    assert (b[off] == 0).float().mean().item() == pytest.approx(0.5, abs=0.03)
    with pytest.raises(ValueError, match="unknown pair rule"):
        InitialPairs(f, "radius")


def test_purity_counts_unordered_pairs_against_ground_truth():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 40)
    f = normalise(np.eye(3)[y] + rng.normal(0, 0.3, (40, 3)))
    src = InitialPairs(f, "knn", k=3)
    r = purity(src, y, memory_mb=0.0005)  # several row blocks
    lab = src.labels(torch.arange(40), torch.arange(40)).numpy()
    iu = np.triu_indices(40, 1)
    same = (y[:, None] == y[None])[iu]
    l = lab[iu]
    assert r["of_pairs"] == 40 * 39 // 2 and r["similar"] == (l == 1).sum() and r["dissimilar"] == (l == -1).sum()
    assert r["similar_purity"] == pytest.approx(same[l == 1].mean())
    assert r["purity"] == pytest.approx(((l == 1) == same).mean())


def test_bayesian_and_squared_pair_losses_by_hand():
    h = torch.tensor([[1.0, -1.0], [0.5, 0.5], [-1.0, 1.0]])
    s = torch.tensor([[0, 1, -1], [1, 0, 0], [-1, 0, 0]], dtype=torch.int8)
    # labelled pairs: (0,1) +1 with theta 0, (1,0) the same, (0,2) / (2,0) -1 with theta -1
    pos = math.log(2.0)  # softplus(0) - 0
    neg = math.log1p(math.exp(-1.0))  # softplus(-1)
    assert BayesianPairLoss(balance=False)(h, h, s).item() == pytest.approx((2 * pos + 2 * neg) / 4)
    assert BayesianPairLoss(balance=True)(h, h, s).item() == pytest.approx((pos + neg) / 2)
    # squared: (h_i.h_j / K - s)^2 = (0 - 1)^2 for the +1 pair, (-1 + 1)^2 = 0 for the -1 pair
    assert SquaredPairLoss(balance=False)(h, h, s).item() == pytest.approx(0.5)
    q = QuantizationLoss()(torch.tensor([[0.5, -1.0]]))
    assert q.item() == pytest.approx((0.25 + 0.0) / 2)


SMALL = ["data.limit_train=400", "data.limit_query=100", "data.limit_database=1000", "model.bits=16", "schedule.epochs=3",
         "optim.batch_size=100", "model.input_size=32", "augment.views=2", "runtime.num_threads=2", "method.stage1_epochs=2",
         "method.pairs.input_size=32", "method.pairs.k=10", "method.pairs.noise_neighbours=5"]  # fmt: skip


def test_distillhash_run_reports_purity_and_never_reads_labels(tmp_path, scramble_training_labels):
    cfg = load_config("configs/distillhash-fmnist.yaml", SMALL)
    m = train(cfg, tmp_path / "a", progress=False)
    report = json.loads((tmp_path / "a" / "purity.json").read_text())
    assert set(report) == {"initial", "distilled", "curve"}
    # the metrics (what train prints) carry the summary; the curve stays in purity.json and its plot
    assert m["purity"] == {k: report[k] for k in ("initial", "distilled")} and len(json.dumps(m)) < 3000
    curve, distilled = report["curve"], report["distilled"]
    at = curve["margin"].index(0.0)  # the curve at the run's margin is the distilled labelling itself
    assert curve["similar"]["kept"][at] == distilled["similar"] and curve["dissimilar"]["kept"][at] == distilled["dissimilar"]
    assert curve["similar"]["of"] == report["initial"]["similar"]  # agree: the candidates are the initial similar pairs
    assert (tmp_path / "a" / "purity-curve.png").stat().st_size > 1000
    md = (write_report([tmp_path / "a"], tmp_path / "report")["md"]).read_text()  # the report shows the curve too
    assert "![a-purity](a-purity.png)" in md and f"{distilled['similar']:,} similar pairs" in md
    assert report["initial"]["of_pairs"] == 400 * 399 // 2 and report["initial"]["similar_purity"] > 0.3
    kept = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["method"]["_extra_state"]
    assert kept["stage1"]["numpy"].shape == (400, 16)  # the stage-1 outputs, for a resume
    with np.load(tmp_path / "a" / "codes-query.npz") as z:
        assert z["codes"].shape == (100, 2)

    # the same run with scrambled training labels trains identically: labels reach the report only
    scramble_training_labels()
    train(cfg, tmp_path / "b", progress=False)
    a, b = (torch.load(tmp_path / r / "checkpoint.pt", weights_only=True)["model"] for r in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "b" / "purity.json").read_text()) != report


def test_distillhash_config_errors_are_one_line():
    cases = [
        (
            ["method.pairs.nearest=3"],
            r"^unknown key method.pairs.nearest; known: backbone, pretrained, input_size, .*report_rows$",
        ),
        (
            ["method.pairs.calibration=platt"],
            r"^method.pairs.calibration: Input should be 'none', 'balanced' or 'prior', got 'platt'$",
        ),
        (["method.pairs.input_size=[64, -1]"], r"^method.pairs.input_size\[1\]: Input should be greater than 0, got -1$"),
        (
            ["method.pairs.input_size=[]"],
            r"^method.pairs.input_size: give an input size or a non-empty list of them, got \[\]$",
        ),
        (
            ["method.pairs.batch_neighbours=-1"],
            r"^method.pairs.batch_neighbours: Input should be greater than or equal to 0, got -1$",
        ),
        (
            ["method.pairs.batch_neighbours=128"],
            r"^method.pairs.batch_neighbours must be below optim.batch_size \(128\), got 128$",
        ),
        (
            ["schedule.epochs=5", "method.stage1_epochs=5"],
            r"^method.stage1_epochs must be between 1 and schedule.epochs - 1 \(4\), got 5$",
        ),
        (
            ["method.pairs.quantiles=[0.5, 0.1]"],
            r"^method.pairs.quantiles: one or two increasing quantiles in \(0, 1\), got \[0.5, 0.1\]$",
        ),
        (
            ["method.pairs.distill_rule=relabel", "method.pairs.margin=-1"],
            r"^method.pairs: margin -1 with distill_rule relabel would label some pairs both ways; use margin >= 0$",
        ),
        (["method.pairs.folds=1"], r"^method.pairs.folds: Input should be greater than or equal to 2, got 1$"),
        (
            ["method.pairs.posterior_fit=crossfit"],
            r"^method.pairs.posterior_fit: Input should be 'in_sample' or 'cross_fit', got 'crossfit'$",
        ),
        (
            ["method.stage_epochs=3"],
            r"^unknown key method.stage_epochs; known: name, .*stage1_epochs, balance, quantization, pairs$",
        ),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message):
            load_config("configs/distillhash-fmnist.yaml", overrides)
    # the noisy ablation never distils, so its stage-1 length is not checked against the schedule
    assert (
        load_config("configs/distillhash-fmnist.yaml", ["method=distillhash-noisy", "schedule.epochs=5"]).method.stage1_epochs
        == 50
    )


def test_distillhash_resumes_after_distillation_from_the_saved_stage1_outputs(tmp_path):
    cfg = load_config("configs/distillhash-fmnist.yaml", SMALL + ["schedule.epochs=4"])
    train(cfg, tmp_path / "full", progress=False)

    def kill(epoch, step):
        if epoch == 3 and step == 1:
            raise KeyboardInterrupt  # dies during the second epoch on distilled pairs

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", progress=False, callback=kill)
    m = train(cfg, tmp_path / "killed", resume=True, progress=False)
    a, b = (torch.load(tmp_path / r / "checkpoint.pt", weights_only=True)["model"] for r in ("full", "killed"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert m["purity"]["distilled"] == json.loads((tmp_path / "full" / "purity.json").read_text())["distilled"]


# four images: the initial k = 1 pairs are (0, 1) and (2, 3); the stage-1 codes put 0, 1, 2 together and 3 apart
FOUR_FEATURES = [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]
FOUR_CODES = [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [-1, -1, -1, -1]]


def _four(rule, margin=0.0):
    initial = InitialPairs(FOUR_FEATURES, "knn", k=1)
    nbr = torch.arange(4)[:, None]
    return DistilledPairs(
        FOUR_CODES, nbr, nbr, initial=initial if rule == "agree" else None, rule=rule, margin=margin, noise="global"
    )


def test_agree_keeps_an_initial_label_only_where_the_bayes_rule_assigns_it_too():
    # theta = b.b / 2 = +2 among 0, 1, 2 and -2 with 3; global anchors: rho_minus = sigmoid(-2) = rho_plus, so
    # similar where P = sigmoid(2) = 0.881 > (1 + 0.119) / 2 and dissimilar where P = 0.119 < (1 - 0.119) / 2
    all4 = torch.arange(4)
    relabel = torch.tensor([[-1, 1, 1, -1], [1, -1, 1, -1], [1, 1, -1, -1], [-1, -1, -1, -1]], dtype=torch.int8)
    relabel.fill_diagonal_(0)
    got = _four("relabel").labels(all4, all4)
    got.fill_diagonal_(0)
    assert torch.equal(got, relabel)
    # agree: (0, 1) similar in both; (0, 2), (1, 2) rule-similar but initially dissimilar -> dropped;
    # (2, 3) initially similar but rule-dissimilar -> dropped; (0, 3), (1, 3) dissimilar in both
    agree = torch.tensor([[0, 1, 0, -1], [1, 0, 0, -1], [0, 0, 0, 0], [-1, -1, 0, 0]], dtype=torch.int8)
    got = _four("agree").labels(all4, all4)
    got.fill_diagonal_(0)
    assert torch.equal(got, agree)
    # the margin is in logit units: the pairs clear the thresholds by 2 - logit(0.5596) = 1.76
    t_plus = math.log(0.5 * (1 + 1 / (1 + math.exp(2))) / (1 - 0.5 * (1 + 1 / (1 + math.exp(2)))))
    assert abs(t_plus - 0.2395) < 1e-3
    kept = _four("agree", margin=1.7).labels(all4, all4)
    assert kept[0, 1] == 1 and kept[0, 3] == -1
    assert not _four("agree", margin=1.8).labels(all4, all4).any()


def test_purity_curve_counts_each_side_against_the_margin_by_hand():
    # truth: 0, 1 one class; 2 and 3 one each. agree candidates: similar (0, 1), (2, 3); dissimilar the other four
    curve = purity_curve(_four("agree"), np.array([0, 0, 1, 2]), np.array([-3.0, 0.0, 1.7, 1.8]))
    # similar slacks: (0, 1) 2 - 0.2395 = 1.76 (correct), (2, 3) -2 - 0.2395 (wrong)
    assert curve["similar"]["of"] == 2
    assert curve["similar"]["kept"] == [2, 1, 1, 0] and curve["similar"]["correct"] == [1, 1, 1, 0]
    # dissimilar slacks 1.76 for (0, 3), (1, 3) (correct), -2.24 for (0, 2), (1, 2) (correct too: other class)
    assert curve["dissimilar"]["of"] == 4
    assert curve["dissimilar"]["kept"] == [4, 2, 2, 0] and curve["dissimilar"]["purity"][:3] == [1.0, 1.0, 1.0]


def test_cross_fitted_posterior_averages_the_models_that_did_not_see_each_image():
    rng = np.random.default_rng(0)
    codes = np.sign(rng.normal(size=(2, 6, 8)))
    fold = np.array([0, 1, 0, 1, 0, 1])
    nbr = torch.arange(6)[:, None]
    src = DistilledPairs(codes, nbr, nbr, fold=fold)
    theta = src.theta(torch.arange(6), torch.arange(6)).numpy()
    assert theta[0, 2] == 0.5 * codes[0, 0] @ codes[0, 2]  # both in fold 0: model 0 alone (it saw neither)
    assert theta[1, 3] == 0.5 * codes[1, 1] @ codes[1, 3]
    assert theta[0, 1] == 0.5 * (0.5 * codes[0, 0] @ codes[0, 1] + 0.5 * codes[1, 0] @ codes[1, 1])
    with pytest.raises(ValueError, match="give fold"):
        DistilledPairs(codes, nbr, nbr)
    f = fold_assignment(41, 3, seed=4)
    assert sorted(np.bincount(f).tolist()) == [13, 14, 14] and np.array_equal(f, fold_assignment(41, 3, seed=4))


def _memorising_fit(x, initial, bits=16, steps=400):
    """A linear hash head trained on the labelled pairs among ``positions`` until it fits them (memorises)."""

    def fit(positions, f):
        torch.manual_seed(f)
        pos = torch.as_tensor(positions)
        s = initial.labels(pos, pos)
        s.fill_diagonal_(0)
        w = torch.nn.Linear(x.shape[1], bits)
        opt = torch.optim.Adam(w.parameters(), lr=0.05)
        loss = BayesianPairLoss(balance=True)
        for _ in range(steps):
            h = torch.tanh(w(x[pos]))
            opt.zero_grad()
            loss(h, h, s).backward()
            opt.step()
        with torch.no_grad():
            return torch.tanh(w(x)).numpy()

    return fit


def test_a_noisy_pair_memorised_in_sample_is_dropped_when_cross_fitted():
    # two classes of 20 images: inputs x separate them; the pair features put image 0 (class A) next to 20 (B),
    # so the initial labels call (0, 20) similar: a noisy pair, and 0's few similar pairs all point into B
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(20, 64)) + 2.0 * np.eye(64)[0], rng.normal(size=(20, 64)) - 2.0 * np.eye(64)[0]])
    truth = np.repeat([0, 1], 20)
    f = x.copy()
    f[0] = x[20] + 0.01 * rng.normal(size=64)
    initial = InitialPairs(f, "knn", k=3)
    assert initial.labels(torch.tensor([0]), torch.tensor([20])).item() == 1
    x = torch.as_tensor(x, dtype=torch.float32)
    fit = _memorising_fit(x, initial)
    nbr = torch.arange(40)[:, None]
    pair = (torch.tensor([0]), torch.tensor([20]))

    in_sample = DistilledPairs(fit(np.arange(40), 9), nbr, nbr, initial=initial, rule="agree", noise="global")
    assert in_sample.labels(*pair).item() == 1  # memorised: the model that learnt (0, 20) confirms it

    seed = next(s for s in range(50) if fold_assignment(40, 2, s)[0] == fold_assignment(40, 2, s)[20])
    codes, fold = cross_fitted(40, 2, fit, seed)
    held_out = DistilledPairs(codes, nbr, nbr, fold=fold, initial=initial, rule="agree", noise="global")
    assert held_out.labels(*pair).item() == 0  # a model that saw neither image puts 0 with class A: dropped
    # and the cross-fitted labelling is purer on the similar side than the in-sample one
    assert purity(held_out, truth)["similar_purity"] > purity(in_sample, truth)["similar_purity"]


def test_cross_fit_run_trains_fold_models_that_never_batch_their_held_out_images(tmp_path, monkeypatch):
    seen = []
    real = DistillHash.with_neighbours

    def spy(self, anchors, rng):
        batch = real(self, anchors, rng)
        if self.allowed is not None:
            seen.append(bool(self.allowed[batch].all()))
        return batch

    monkeypatch.setattr(DistillHash, "with_neighbours", spy)
    cfg = load_config("configs/distillhash-fmnist.yaml", SMALL + ["method.pairs.posterior_fit=cross_fit"])
    m = train(cfg, tmp_path / "cf", progress=False)
    z = torch.load(tmp_path / "cf" / "checkpoint.pt", weights_only=True)["method"][
        "_extra_state"
    ]  # the checkpoint keeps the fold models' codes
    assert z["stage1"]["numpy"].shape == (2, 400, 16) and np.bincount(z["stage1_fold"]["numpy"].numpy()).tolist() == [200, 200]
    # two fresh models, not the run's: their codes differ from each other
    assert not torch.allclose(z["stage1"]["numpy"][0], z["stage1"]["numpy"][1])
    # 2 models x 2 stage-1 epochs x 200 images / (100 // 4 anchors) = 32 batches, each inside its model's images
    assert len(seen) == 32 and all(seen)
    assert m["cross_fit_seconds"] > 0 and m["purity"]["distilled"]["similar"] > 0
