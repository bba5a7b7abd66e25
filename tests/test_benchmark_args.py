"""The benchmarks' ``--label`` names result files and run folders: a path in it is refused before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize("script", ["quality.py", "robustness.py"])
def test_a_label_with_a_path_is_refused_before_any_work(tmp_path, script):
    label = "../up"
    args = [sys.executable, str(BENCHMARKS / script), "--label", label, "--out-dir", str(tmp_path / "out")]
    args += ["--config", str(tmp_path / "missing.yaml"), "--runs-dir", str(tmp_path / "runs")]
    r = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert "--label" in last and repr(label) in last and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_only_one_file_name_is_a_label():
    import argparse

    from hashdistill.tables import result_label

    for label in ["a/b", "a\\b", ".hidden", "-flag", "two words", "", "x" * 101]:
        with pytest.raises(argparse.ArgumentTypeError, match="is not a label"):
            result_label(label)
    for label in ["end-to-end-5-seeds", "dhd-epochs=300", "dhd-weight_decay=1e-4", "distillhash-threshold-0.02", "dsh+sdh"]:
        assert result_label(label) == label
