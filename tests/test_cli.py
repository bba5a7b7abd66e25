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


def test_bad_input_is_one_line_and_nonzero():
    for args, words in [
        (["data", "info", "cifar"], "unknown protocol 'cifar'"),
        (["baseline", "--method", "foo"], "unknown method 'foo'"),
        (["baseline", "--bits", "8,x"], "--bits must be"),
    ]:
        r = _cli(*args)
        assert r.returncode == 1
        assert r.stderr.strip().splitlines() == [f"hashdistill: error: {r.stderr.split('error: ', 1)[1].strip()}"]
        assert words in r.stderr
