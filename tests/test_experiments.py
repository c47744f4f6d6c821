"""Experiments: `dvc exp run -S`, a queued sweep on 2 workers, the sweep report, and plots a browser draws."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import dvc, git, requires_debian_data, run, set_param

CHROMIUM = shutil.which("chromium")
pytestmark = [
    requires_debian_data,
    pytest.mark.skipif(not (CHROMIUM and shutil.which("npm")), reason="needs Debian's chromium and npm"),
]
TEMPLATE = ".dvc/tmp/offline-plots.html"


def wait_for_queue(project: Path, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = dvc(project, "queue", "status").stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        time.sleep(2)
    raise AssertionError(f"queue still busy after {timeout} s:\n{status}")


def rendered_dom(page: Path) -> str:
    """The page's DOM after its scripts ran, from a real headless Chromium."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def chart_marks(dom: str) -> dict[str, dict[str, int]]:
    """For each plot's <div id=…>: how many Vega marks of each kind were drawn into its SVG."""
    charts = {}
    for match in re.finditer(r'<div id="([^"]+)"', dom):
        following = dom[match.end() :]
        section = following[: following.find('<div id="')] if '<div id="' in following else following
        kinds = re.findall(r'aria-roledescription="(line|rect|symbol|circle) mark"', section)
        charts[match.group(1)] = {kind: kinds.count(kind) for kind in set(kinds)}
    return charts


@pytest.fixture
def one_epoch(project: Path) -> Path:
    set_param(project, "train.epochs", "1")
    git(project, "commit", "-qam", "one epoch")
    return project


def test_experiments_sweep_report_and_rendered_plots(one_epoch: Path) -> None:
    project = one_epoch
    dvc(project, "exp", "run", "-S", "train.dropout=0.3")
    table = dvc(project, "exp", "show", "--csv", "--keep", "^(Experiment|train.dropout|.*accuracy)$", "--drop", ".*")
    header, *rows = list(csv.reader(table.stdout.splitlines()))
    assert {"Experiment", "train.dropout", "test.accuracy", "validation.accuracy"} <= set(header)
    assert any(row[header.index("train.dropout")] == "0.3" for row in rows)

    for rate in ("0.0", "0.5"):
        dvc(project, "exp", "run", "--queue", "-S", f"train.dropout={rate}")
    dvc(project, "queue", "start", "-j", "2")
    status = wait_for_queue(project)
    assert status.count("Success") == 2, status

    report = run([sys.executable, "-m", "tools.sweep", "report"], cwd=project).stdout
    sweep = list(csv.DictReader((project / "reports/sweep/dropout.csv").read_text().splitlines()))
    assert [float(row["dropout"]) for row in sweep] == [0.0, 0.3, 0.5]
    choice = json.loads((project / "reports/sweep/choice.json").read_text())
    best = max(sweep, key=lambda row: float(row["validation_accuracy"]))
    assert choice["chosen_by"] == "mean validation.accuracy over seeds" and choice["dropout"] == float(best["dropout"])
    assert "<- chosen" in report

    run([sys.executable, "-m", "tools.offline_plots"], cwd=project)
    dvc(project, "plots", "show", "--html-template", TEMPLATE, "-o", "shown")
    charts = chart_marks(rendered_dom(project / "shown/index.html"))
    assert charts["Loss"].get("line", 0) >= 2 and charts["Accuracy"].get("line", 0) >= 2
    assert charts["Confusion_matrix__test_"].get("rect", 0) >= 10 * 10
    sweep_chart = next(marks for name, marks in charts.items() if name.startswith("Dropout_sweep"))
    assert sweep_chart.get("line", 0) >= 2  # validation and test accuracy against the rate

    names = [row["experiment"] for row in sweep]
    dvc(project, "plots", "diff", *names, "--html-template", TEMPLATE, "-o", "diffed")
    dom = rendered_dom(project / "diffed/index.html")
    assert chart_marks(dom)["Loss"].get("line", 0) >= 2 * len(names)
    assert all(name in dom for name in names)  # one legend entry per experiment
