"""Deformations, robustness and sensitivity on a trained run, the plots' files, and the report rendered
in headless Chromium."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hashdistill import plots
from hashdistill.cli import app
from hashdistill.config import load_config
from hashdistill.data import load_protocol
from hashdistill.deform import COLOUR, DEFORMATIONS, GEOMETRIC, acting, deform, parse_deformations
from hashdistill.report import write_report
from hashdistill.robustness import left_out, robustness, sensitivity
from hashdistill.tables import by_run
from hashdistill.train import train

TINY = ["data.limit_train=600", "data.limit_query=100", "data.limit_database=1500", "optim.batch_size=100",
        "model.bits=16", "schedule.epochs=8", "augment.crop_scale=[0.5,1.0]", "optim.lr=1e-3", "runtime.num_threads=2",
        "model.mode=cached", "model.backbone=mobilenet_v2", "model.pretrained=true", "model.input_size=32",
        "augment.views=2", "optim.backbone_lr_mult=0"]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two small DHD runs on real Fashion-MNIST (cached MobileNetV2 features): with SdH (dhd) and without."""
    root = tmp_path_factory.mktemp("runs")
    out = []
    for method in ("dhd", "dhd-hp-bceq"):
        cfg = load_config(None, TINY + [f"name={method}", f"method={method}"])
        train(cfg, root / method, progress=False)
        out.append(root / method)
    return out


@pytest.mark.parametrize("name", DEFORMATIONS)
def test_each_deformation_is_seeded_and_stays_in_range(fmnist, name):
    images = fmnist.images[fmnist.query[:16]]
    a = deform(images, name, seed=3)
    assert a.shape == (16, 1, 28, 28) and a.dtype == torch.float32 and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, deform(images, name, seed=3))
    clean = torch.as_tensor(images[:, None]).float() / 255
    if name == "none" or name in COLOUR:  # a grey image is its own grey: colour deformations change nothing
        assert torch.equal(a, clean)
        return
    assert not torch.equal(a, clean)
    if name not in ("zoom_in", "zoom_out"):  # the zooms draw nothing at random
        assert not torch.equal(a, deform(images, name, seed=4))


@pytest.fixture(scope="module")
def emoji():
    """Real colour images: 24 openmoji queries (64 px RGB on white), as float (N, 3, H, W) in [0, 1]."""
    p = load_protocol("openmoji")
    return torch.as_tensor(p.images[p.query[:24]]).permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize("name", COLOUR)
def test_colour_deformations_on_colour_images(emoji, name):
    out = deform(emoji, name, seed=1)
    assert out.shape == emoji.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, deform(emoji, name, seed=1))
    white = (emoji == 1).all(1)  # the background: no chroma
    coloured = (emoji.amax(1) - emoji.amin(1)) > 0.3
    assert coloured.float().mean() > 0.05 and white.float().mean() > 0.2
    moved = (out - emoji).abs().amax(1)
    assert moved[coloured].mean() > 0.05  # the coloured pixels change
    if name == "hue":  # a rotation about the grey axis leaves grey pixels where they are
        assert torch.allclose(out.permute(0, 2, 3, 1)[white], torch.ones(1, 3), atol=1e-5)
        assert not torch.equal(out, deform(emoji, name, seed=2))
    elif name == "saturation":  # greys stay; colours move away from their grey (spread between channels grows)
        assert torch.allclose(out.permute(0, 2, 3, 1)[white], torch.ones(1, 3), atol=1e-5)
        spread = lambda x: (x.amax(1) - x.amin(1))[coloured].mean()
        assert spread(out) > 1.2 * spread(emoji)
    elif name == "grey":  # equal channels, the ITU-R 601 luma of the pixel
        assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
        px = emoji[0, :, 30, 30]
        assert out[0, 0, 30, 30].item() == pytest.approx(float(0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2]), abs=1e-6)
    else:  # colour_cast: the white background takes one colour per image, and it differs between images
        bg = out.permute(0, 2, 3, 1)
        per_image = [bg[i][white[i]] for i in range(len(out))]
        assert all((c - c[0]).abs().max() < 1e-6 for c in per_image)
        assert len({tuple(c[0].round(decimals=4).tolist()) for c in per_image}) == len(out)
        assert all(c[0].min() >= 0.7 - 1e-6 for c in per_image)  # 70 % of white plus 30 % of a colour


def test_only_the_deformations_that_act_are_kept(fmnist, emoji):
    """Grey images: the colour deformations are dropped, whatever the layout; colour images keep all."""
    grey = fmnist.images[fmnist.query[:4]]  # uint8 (N, 28, 28)
    for batch in (grey, grey[:, None], grey[..., None], torch.as_tensor(grey[:, None]).float() / 255):
        assert acting(batch) == ["none", *GEOMETRIC]
    hwc = (emoji.permute(0, 2, 3, 1) * 255).to(torch.uint8)
    assert acting(emoji) == acting(hwc) == list(DEFORMATIONS)
    assert acting(grey, ["grey", "rotation"]) == ["rotation"] and acting(emoji, ["grey"]) == ["grey"]


def test_long_rows_become_one_row_per_deformation_with_a_column_per_run():
    rows = [{"run": "a", "deformation": "none", "map": 0.9}, {"run": "a", "deformation": "hue", "map": 0.7},
            {"run": "b", "deformation": "none", "map": 0.8}]  # fmt: skip
    assert by_run(rows, "deformation", "map") == [{"deformation": "none", "a": 0.9, "b": 0.8}, {"deformation": "hue", "a": 0.7}]


def test_zoom_and_parse():
    x = torch.zeros(1, 1, 30, 30)
    x[:, :, 10:20, 10:20] = 1.0  # a centred square grows when zoomed in and shrinks when zoomed out
    assert deform(x, "zoom_in").sum() > x.sum() > deform(x, "zoom_out").sum()
    assert parse_deformations("all") == list(DEFORMATIONS)
    with pytest.raises(ValueError, match="unknown deformation"):
        parse_deformations("none,blur")


def test_robustness_and_sensitivity_on_trained_runs(runs):
    rows = robustness(runs, ["none", "hue", "noise", "grey", "rotation"], seed=0)  # grey runs: no colour rows
    assert [(r["run"], r["deformation"]) for r in rows][:3] == [("dhd", "none"), ("dhd", "noise"), ("dhd", "rotation")]
    assert len(rows) == 6 and left_out(["none", "hue", "noise", "grey", "rotation"], rows) == ["hue", "grey"]
    clean = {r["run"]: r["map"] for r in rows if r["deformation"] == "none"}
    assert all(0.3 < v <= 1 for v in clean.values())  # chance is about 0.1
    assert robustness(runs[:1], ["rotation"], seed=0)[0]["map"] == rows[2]["map"]  # seeded
    sens = sensitivity(runs[:1], (0.25, 1.0), seed=0)
    assert [r["s"] for r in sens] == [0.25, 1.0]
    assert 0 <= sens[0]["mean_hamming"] <= sens[1]["mean_hamming"] <= 16  # stronger transforms move codes more


def test_a_proxy_heatmap_of_many_classes_stays_a_readable_size(tmp_path):
    """76 classes (openmoji's subgroups) used to make a 43-inch figure, 2.5 MB of PNG with 5,776 numbers in it."""
    import matplotlib.image

    names = [f"subgroup-{i}" for i in range(76)]
    png = plots.proxy_heatmap(np.random.default_rng(0).normal(size=(76, 64)), names, tmp_path / "proxies")[0]
    height, width = matplotlib.image.imread(png).shape[:2]
    assert max(height, width) < 2600  # 14 in at 120 dpi plus labels; 0.55 in a class would be over 5,000 px
    assert png.stat().st_size < 1_000_000


def test_plots_write_png_and_svg(tmp_path):
    rng = np.random.default_rng(0)
    made = []
    made += plots.pr_curves({"a": (np.linspace(1, 0.2, 17), np.linspace(0, 1, 17))}, tmp_path / "pr")
    made += plots.topm_curves({"a": ([1, 10, 100], np.array([1.0, 0.9, 0.8]))}, tmp_path / "topm")
    made += plots.proxy_heatmap(rng.normal(size=(4, 16)), ["a", "b", "c", "d"], tmp_path / "proxies")
    made += plots.bit_histograms(np.tanh(rng.normal(size=(100, 16))), tmp_path / "bits")
    made += plots.sensitivity_curves(
        [{"run": "a", "s": 0.5, "mean_hamming": 1.0}, {"run": "a", "s": 1.0, "mean_hamming": 2.0}], tmp_path / "sens"
    )
    assert sorted(p.name for p in made) == sorted(
        f"{s}.{e}" for s in ("pr", "topm", "proxies", "bits", "sens") for e in ("png", "svg")
    )
    for p in made:
        head = p.read_bytes()[:200]
        assert head.startswith(b"\x89PNG") if p.suffix == ".png" else b"<svg" in p.read_bytes()[:2000] or b"<?xml" in head


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_report_renders_in_headless_chromium(runs, tmp_path):
    paths = write_report(runs, tmp_path / "report", deformations=["none", "cutout"], sensitivity_grid=(0.5, 1.0))
    page = paths["html"].read_text()
    n_images = page.count("<img ")
    assert n_images >= 9 and "Robustness to unseen deformations" in page and "cutout" in page
    md = paths["md"].read_text()
    for name in ("pr-curves.png", "topm-curves.png", "sensitivity.png", "dhd-proxies.png", "dhd-queries.png"):
        assert f"]({name})" in md and (tmp_path / "report" / name).is_file()
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium here (make test installs Debian's chromium when run as root)")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--window-size=1200,3000"]
    dom = subprocess.run([*cmd, "--dump-dom", paths["html"].as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert f'data-images="{n_images}/{n_images}"' in dom  # every picture decoded
    shot = tmp_path / "shot.png"
    subprocess.run([*cmd, f"--screenshot={shot}", paths["html"].as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10  # not a blank page


def test_cli_evaluate_deformations_and_report(runs, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["evaluate", str(runs[0]), str(runs[1]), "--deformations", "none,dropout", "--sensitivity", "0.5,1.0",
                            "--out", str(tmp_path / "suite.json")])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "dropout" in r.output and "dhd-hp-bceq" in r.output and (tmp_path / "suite.json").is_file()
    bad = subprocess.run([sys.executable, "-m", "hashdistill", "evaluate", str(runs[0]), "--deformations", "blur"],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [bad.stderr.strip()]
    assert "unknown deformation(s) blur" in bad.stderr
    assert "left out" not in r.output
    r = runner.invoke(app, ["evaluate", str(runs[0]), "--deformations", "all", "--json"])
    assert r.exit_code == 0, r.output
    assert {row["deformation"] for row in json.loads(r.output)["robustness"]} == {"none", *GEOMETRIC}
    colour_only = subprocess.run([sys.executable, "-m", "hashdistill", "evaluate", str(runs[0]), "--deformations", "hue,grey"],
                                 capture_output=True, text=True)  # fmt: skip
    assert colour_only.returncode == 1 and "none of them can change" in colour_only.stderr
    r = runner.invoke(app, ["report", str(runs[0]), "--out", str(tmp_path / "rep")])  # --deformations all
    assert r.exit_code == 0, r.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Left out, as they cannot change one-channel (grey) queries: hue, saturation, grey, colour_cast." in md
    assert "| rotation |" in md and "| hue |" not in md and (tmp_path / "rep" / "report.html").is_file()
    md = write_report(runs[:1], tmp_path / "rep-hue", deformations=["hue"])["md"].read_text()  # nothing left to measure
    assert "Left out, as they cannot change one-channel (grey) queries: hue." in md and "| deformation |" not in md
