"""The sweep task learns from the stages themselves, not from DVC's messages: each stage appends its outcome to
`$FMNIST_STAGE_REPORT` (`fmnist.runner`). Real dvc and git on the tiny dataset; `run_point` in this process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import dvc, git, run
from tiny_sweeps import sweep_project

from fmnist.runner import STAGE_REPORT_VARIABLE
from fmnist.sweep.driver import dvc_remote_settings
from fmnist.sweep.grid import grid_points
from fmnist.sweep.task import FAILED, RESTORED, TRAINED, PointJob, run_point


def outcomes(path: Path) -> list[tuple[str, str]]:
    return [(record["stage"], record["outcome"]) for record in map(json.loads, path.read_text().splitlines())]


def test_each_stage_run_through_dvc_reports_its_outcome(
    tiny_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = tmp_path / "outcomes.jsonl"
    monkeypatch.setenv(STAGE_REPORT_VARIABLE, str(report))
    dvc(tiny_project, "repro")
    assert outcomes(report) == [
        ("check_params", "done"),
        ("fetch", "done"),
        ("prepare", "done"),
        ("train", "done"),
        ("evaluate", "done"),
    ]
    report.unlink()
    failed = dvc(tiny_project, "exp", "run", "-S", "fetch.sources=[/nowhere]", check=False)
    assert failed.returncode != 0
    checked, record = map(
        json.loads, report.read_text().splitlines()
    )  # the new sources are valid: checked, then fetched
    assert (checked["stage"], checked["outcome"]) == ("check_params", "done")
    assert (record["stage"], record["outcome"], record["status"]) == ("fetch", "error", 1)
    assert record["message"].startswith("fetch: error: cannot fetch train-images-idx3-ubyte: tried /nowhere")


@pytest.mark.slow  # three sweeps of one point
def test_a_point_says_trained_restored_or_the_failing_stages_own_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = sweep_project(tmp_path / "sweep")
    monkeypatch.chdir(project)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    origin, commit = str(tmp_path / "sweep/origin.git"), git(project, "rev-parse", "HEAD").strip()

    def point(*overrides: str) -> PointJob:
        (grid_point,) = grid_points(list(overrides))
        return PointJob(origin, commit, grid_point.name, tuple(grid_point.set_params), dvc_remote_settings(None))

    job = point("train.seed=5")
    assert run_point(job).status == TRAINED
    run(["git", "update-ref", "-d", job.exp_ref], cwd=Path(origin))  # unpublished again; its runs stay in the cache
    assert run_point(job).status == RESTORED

    broken = run_point(point("fetch.sources=[/nowhere]"))
    assert broken.status == FAILED
    assert broken.error.startswith("fetch: error: cannot fetch train-images-idx3-ubyte: tried /nowhere: file not found")
