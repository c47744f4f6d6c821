"""`fmnist-sweep report` never replaces the committed reports/sweep/ unless asked: by default it writes a
git-ignored directory beside it. On the tiny dataset, two real experiments."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import dvc, git, run

REPORT_FILES = ("dropout.csv", "choice.json", "sweep.svg")


@pytest.mark.slow  # a whole sweep and its report
def test_a_report_leaves_the_committed_one_alone_unless_published(tiny_project: Path) -> None:
    committed = {name: (tiny_project / "reports/sweep" / name).read_bytes() for name in REPORT_FILES}
    for rate in ("0.0", "0.2"):
        dvc(tiny_project, "exp", "run", "-S", f"train.dropout={rate}")
    report = [sys.executable, "-m", "fmnist.sweep", "report", "--git-remote", "none"]

    local = run(report, cwd=tiny_project)
    assert {name: (tiny_project / "reports/sweep" / name).read_bytes() for name in REPORT_FILES} == committed
    written = tiny_project / "reports/sweep-local"
    assert json.loads((written / "choice.json").read_text())["seeds"] == 1
    assert f"sweep: wrote {Path('reports/sweep-local')}" in local.stdout
    assert git(tiny_project, "status", "--porcelain", "--", "reports/sweep-local", "reports/sweep") == ""  # ignored

    run([*report, "--publish"], cwd=tiny_project)
    assert json.loads((tiny_project / "reports/sweep/choice.json").read_text())["seeds"] == 1
    assert git(tiny_project, "status", "--porcelain", "--", "reports/sweep").strip()  # replaced, as asked
