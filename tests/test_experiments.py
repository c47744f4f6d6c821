"""Experiments: `dvc exp run -S`, a queued sweep on 2 workers, the sweep report, and plots a browser draws offline."""

from __future__ import annotations

import csv
import itertools
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import dvc, git, run

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(not (CHROMIUM and shutil.which("npm")), reason="needs Debian's chromium and npm")
EPOCHS = 2


def wait_for_queue(project: Path, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = dvc(project, "queue", "status").stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        time.sleep(2)
    raise AssertionError(f"queue still busy after {timeout} s:\n{status}")


def rendered_dom(page: Path) -> str:
    """The page's DOM after its scripts ran, from a real headless Chromium that cannot resolve any host name."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}", "--virtual-time-budget=15000",
             "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def charts(dom: str) -> dict[str, str]:
    """Each plot's part of the rendered page (from its <div id=…> to the next one), by id."""
    parts = re.split(r'<div id="([^"]+)"', dom)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def marks(chart: str) -> dict[str, int]:
    """How many Vega marks of each kind were drawn into a chart's SVG."""
    kinds = re.findall(r'aria-roledescription="(line|rect|symbol|circle) mark"', chart)
    return {kind: kinds.count(kind) for kind in set(kinds)}


def axis_titles(chart: str) -> tuple[str, str]:
    return tuple(re.search(rf"aria-label=\"{axis}-axis titled '([^']*)'", chart).group(1) for axis in "XY")


def x_tick_labels(chart: str) -> list[tuple[float, str]]:
    """(position, text) of each label Vega shows under the x axis, left to right."""
    labels = re.search(r'aria-label="X-axis.*?role-axis-label"[^>]*>(.*?)</g>', chart, re.DOTALL).group(1)
    texts = re.findall(r'<text [^>]*translate\(([-\d.]+),[^>]*opacity="1"[^>]*>([^<]*)</text>', labels)
    return sorted((float(position), text) for position, text in texts)


def line_colours(chart: str) -> set[str]:
    return set(re.findall(r'aria-roledescription="line mark"[^>]*stroke="([^"]+)"', chart))


def legend(chart: str, title: str) -> str:
    """What a legend lists, as Vega describes it to screen readers ("2 values: train, validation")."""
    return re.search(rf"aria-label=\"Symbol legend titled '{title}'[^\"]* with ([^\"]*)\"", chart).group(1)


def sweep_chart(page: dict[str, str]) -> str:
    return next(chart for name, chart in page.items() if name.startswith("Dropout_sweep"))


def sweep_series(project: Path) -> set[str]:
    """The settings of the other params in the project's sweep table: one line each in the chart."""
    return {row["series"] for row in csv.DictReader((project / "reports/sweep/dropout.csv").read_text().splitlines())}


def assert_readable_sweep(chart: str, series: set[str]) -> None:
    """Validation accuracy against the rate, a colour per setting of the other params, with tick labels that do not
    run into each other."""
    assert axis_titles(chart) == ("dropout rate", "validation accuracy")
    # Not `legend()`: Vega shortens a long list to "8 values: a, b, …, ending with h".
    assert re.search(rf"aria-label=\"Symbol legend titled 'other params'[^\"]*? with {len(series)} values?:", chart)
    assert len(line_colours(chart)) == len(series)
    ticks = x_tick_labels(chart)
    assert len(ticks) >= 3, ticks
    for (left, left_text), (right, right_text) in itertools.pairwise(ticks):
        assert right - left > 3 * (len(left_text) + len(right_text)), ticks  # 10px digits: under 6px wide


@pytest.mark.slow  # two pages rendered in Chromium
def test_plots_page_uses_the_cdn_until_the_offline_page_is_built(tiny_project: Path) -> None:
    """No built page: DVC's own (CDN) page, which draws nothing offline; once built, the default page draws offline."""
    project = tiny_project
    dvc(project, "plots", "show", "-o", "before")  # the committed sweep is the only plot data here
    before = (project / "before/index.html").read_text()
    assert "https://cdn.jsdelivr.net/npm/vega@" in before
    assert marks(sweep_chart(charts(rendered_dom(project / "before/index.html")))) == {}

    run([sys.executable, "-m", "fmnist.offline_plots"], cwd=project)
    dvc(project, "plots", "show", "-o", "after")
    assert "<script src=" not in (project / "after/index.html").read_text()
    assert_readable_sweep(sweep_chart(charts(rendered_dom(project / "after/index.html"))), sweep_series(project))
    assert git(project, "status", "--porcelain", "--untracked-files=no") == ""


def test_offline_plots_outside_a_dvc_repository_fails_in_one_line(tmp_path: Path) -> None:
    result = run([sys.executable, "-m", "fmnist.offline_plots"], cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "no .dvc directory" in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def few_epochs(tiny_project: Path) -> Path:
    """On the tiny dataset, whose params train for EPOCHS epochs."""
    assert yaml.safe_load((tiny_project / "params.yaml").read_text())["train"]["epochs"] == EPOCHS
    return tiny_project


@pytest.mark.slow  # a queued sweep and three rendered pages
def test_experiments_sweep_report_and_rendered_plots(few_epochs: Path) -> None:
    project = few_epochs
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

    report = run([sys.executable, "-m", "fmnist.sweep", "report", "--publish"], cwd=project).stdout
    sweep = list(csv.DictReader((project / "reports/sweep/dropout.csv").read_text().splitlines()))
    assert [float(row["dropout"]) for row in sweep] == [0.0, 0.3, 0.5]
    assert "test_accuracy" not in sweep[0]  # reported once, for the chosen point
    choice = json.loads((project / "reports/sweep/choice.json").read_text())
    best = max(sweep, key=lambda row: float(row["validation_accuracy"]))
    assert choice["chosen_by"] == "mean validation.accuracy over seeds" and choice["dropout"] == float(best["dropout"])
    assert 0.0 < choice["test_accuracy"] <= 1.0  # the tiny dataset is easy: all 100 test images right happens
    (effect,) = choice["dropout_effect"]  # rates 0.0, 0.3 and 0.5: the better of 0.3 and 0.5 against 0.0
    rows = {float(row["dropout"]): float(row["validation_accuracy"]) for row in sweep}
    assert effect["series"] == "dropout only" and effect["best_dropout"] == max((0.3, 0.5), key=rows.get)
    assert effect["change_validation_accuracy"] == pytest.approx(rows[effect["best_dropout"]] - rows[0.0])
    assert 0.0 < effect["no_dropout_test_accuracy"] <= 1.0
    assert "<- chosen" in report

    run([sys.executable, "-m", "fmnist.offline_plots"], cwd=project)
    dvc(project, "plots", "show", "-o", "shown")  # the offline page is now the default
    shown = charts(rendered_dom(project / "shown/index.html"))
    for name, metric in (("Loss", "loss"), ("Accuracy", "accuracy")):
        curves = shown[name]
        assert axis_titles(curves) == ("epoch", metric)
        assert [text for _, text in x_tick_labels(curves)] == [str(epoch) for epoch in range(1, EPOCHS + 1)]
        assert legend(curves, "split") == "2 values: train, validation"
        assert marks(curves).get("line", 0) == 2 and len(line_colours(curves)) == 2
    assert marks(shown["Confusion_matrix__test_"]).get("rect", 0) >= 10 * 10
    assert_readable_sweep(sweep_chart(shown), {"dropout only"})

    names = [row["experiment"] for row in sweep]
    dvc(project, "plots", "diff", *names, "-o", "diffed")
    diffed = charts(rendered_dom(project / "diffed/index.html"))
    assert marks(diffed["Loss"]).get("line", 0) == 2 * len(names)
    assert legend(diffed["Loss"], "revision") == f"{len(names)} values: {', '.join(sorted(names))}"
