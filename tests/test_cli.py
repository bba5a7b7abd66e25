import json
import subprocess
import sys

from typer.testing import CliRunner

from hashdistill.cli import app

runner = CliRunner()


def test_data_info_json():
    r = runner.invoke(app, ["data", "info", "fmnist-1k", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["query"] == 1000 and info["database"] == 69000 and info["query_class_counts"] == [100] * 10


def test_baseline_writes_json_and_table(tmp_path):
    out = tmp_path / "r.json"
    r = runner.invoke(app, ["baseline", "--method", "lsh", "--protocol", "fmnist-1k", "--bits", "16", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "| lsh | 16 | pixels |" in r.output
    res = json.loads(out.read_text())
    assert res["protocol"] == "fmnist-1k" and res["runs"][0]["bits"] == 16
    assert 0.3 < res["runs"][0]["map_at_1000"] < 0.6


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "hashdistill", *args], capture_output=True, text=True)


def test_bad_input_is_one_line_and_nonzero(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  bits: 12\n")
    for args, line in [
        (["data", "info", "cifar"], "unknown protocol 'cifar'; known: fmnist-1k, mnist-1k, fmnist-outfits, openmoji"),
        (["baseline", "--method", "foo"], "unknown method 'foo'; known: lsh, pcah, pcarr, sh, itq, sdh, ksh"),
        (["baseline", "--bits", "8,x"], "--bits must be comma-separated integers, got '8,x'"),
        (["train", str(cfg)], "model.bits: must be a multiple of 8, got 12"),
        (
            ["config", "show", "--set", "method.gama=3", "--set", "method=dch"],
            "unknown key method.gama; known: name, self_distill, self_distill_weight, train_view, gamma, lambda_q, distance, weighting",
        ),  # a typo survives a switch of method
        (["encode", str(tmp_path)], f"{tmp_path}: no config.yaml (not a trained run folder)"),
    ]:
        r = _cli(*args)
        assert (r.returncode, r.stderr) == (1, f"hashdistill: error: {line}\n"), args


def test_config_prints_the_resolved_config():
    r = _cli("config", "show", "configs/compare-fmnist.yaml", "--set", "method=csq", "--set", "method.self_distill=true")
    assert r.returncode == 0, r.stderr
    import yaml

    cfg = yaml.safe_load(r.stdout)
    assert cfg["name"] == "compare-fmnist" and cfg["model"]["bits"] == 64 and cfg["optim"]["lr"] == 0.001
    assert cfg["method"] == {
        "name": "csq",
        "self_distill": True,
        "self_distill_weight": 0.1,
        "train_view": "teacher",
        "lambda_q": 0.0001,
        "pairwise_weight": 0.0,
    }
    lines = r.stdout.splitlines()  # every key carries its help and default as a comment
    assert "  lr: 0.001  # Adam's learning rate of the head (and proxies) (default 0.0003)" in lines
    assert "  pairwise_weight: 0.0  # the authors' extra pairwise term's weight (0: off) (default 0.0)" in lines
    assert all("  # " in x for x in lines)
    values = [x for x in lines if not x.split("  # ")[0].endswith(":") and x.split(":")[0].strip() != "name"]
    assert len(values) > 40 and all(x.endswith(")") and "(default " in x for x in values)


def test_version():
    from hashdistill import __version__

    r = _cli("--version")
    assert (r.returncode, r.stdout) == (0, f"hashdistill {__version__}\n")


def test_index_build_and_search_from_baseline_codes(tmp_path):
    codes = tmp_path / "codes"
    r = runner.invoke(
        app, ["baseline", "--method", "itq", "--bits", "32", "--save-codes", str(codes), "--out", str(tmp_path / "r.json")]
    )
    assert r.exit_code == 0, r.output
    idx = tmp_path / "db.hidx"
    r = runner.invoke(app, ["index", "build", str(codes / "32-database.npz"), "--out", str(idx), "--method", "mih"])
    assert r.exit_code == 0 and "69000 codes of 32 bits" in r.output
    r = runner.invoke(app, ["index", "search", str(idx), "--codes", str(codes / "32-query.npz"), "-k", "5", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert len(res["results"]) == 1000 and res["results"][0]["query"] == 60000
    import numpy as np

    from hashdistill.codes import PackedCodes, hamming

    with np.load(codes / "32-query.npz") as zq, np.load(codes / "32-database.npz") as zd:
        d = hamming(PackedCodes(zq["codes"][:1]), PackedCodes(zd["codes"]))[0]
        want = zd["ids"][np.argsort(d, kind="stable")[:5]]
    assert res["results"][0]["ids"] == want.tolist()  # database ids (pool indices), nearest first
    bad = tmp_path / "bad.hidx"
    bad.write_bytes(b"nonsense")
    r = _cli("search", str(bad), "--codes", str(codes / "32-query.npz"))
    assert r.returncode == 1 and "not a hashdistill index file" in r.stderr
