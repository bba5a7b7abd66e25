"""Result rows as Markdown tables, and the commit that produced them (for benchmark and CLI output)."""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any


def git_commit(path: str | Path = ".") -> str:
    """The current commit (with ``-dirty`` for uncommitted changes outside ``benchmarks/results``), or ``unknown``
    outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(  # results written by the benchmark itself do not make the code dirty
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)benchmarks/results"],
            cwd=path, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def results_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A Markdown table of result rows (missing values shown as -)."""

    def fmt(column: str, v: Any) -> str:
        if isinstance(v, float):
            if column.endswith(("_seconds", "_mb")):
                return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
            return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
        return "-" if v is None else str(v)

    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(fmt(c, r.get(c)) for c in columns) + " |\n" for r in rows)


def by_run(rows: list[dict[str, Any]], key: str, value: str) -> list[dict[str, Any]]:
    """Long rows (one per run and ``key``) as wide ones: one per distinct ``key``, in first-seen order, holding
    ``key`` and each run's ``value`` under the run's name (a run without that key has no column)."""
    return [{key: k, **{r["run"]: r[value] for r in rows if r[key] == k}} for k in dict.fromkeys(r[key] for r in rows)]


LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=,-]{0,99}")


def result_label(text: str) -> str:
    """A benchmark's ``--label`` (``type=`` for argparse): it names result files, run folders and rows, so it is
    one file name of letters, digits and ``. _ + = , -`` (at most 100, starting with a letter or digit), never a path."""
    if not LABEL.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a label: use up to 100 letters, digits or . _ + = , - (no '/' or space), starting with a letter or digit"
        )
    return text


def provenance(script: str | Path, argv: list[str] | None = None) -> dict[str, str]:
    """What a benchmark's results record: the command that made them, the commit and the machine."""
    script = Path(script)
    args = sys.argv[1:] if argv is None else argv
    return {
        "command": "python benchmarks/" + " ".join(shlex.quote(a) for a in [script.name, *args]),
        "commit": git_commit(script.parent),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
