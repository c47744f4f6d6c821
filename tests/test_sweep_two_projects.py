"""Two projects' sweeps on one machine: each keeps its own default DVC cache and publishes only its own points'
run records. Real LocalCluster, real dvc and git, the tiny dataset."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tool_env
from tiny_sweeps import sweep_project


def sweep(project: Path, home: Path, *grid: str, **env: str) -> str:
    command = [sys.executable, "-m", "fmnist.sweep", "run", *grid, "--workers", "1"]
    result = subprocess.run(
        command, cwd=project, env=tool_env() | {"HOME": str(home), **env}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def run_records(storage: Path) -> dict[str, str]:
    """The DVC remote's run records: their path under runs/, with the command of the stage that ran."""
    return {
        str(path.relative_to(storage / "runs")): yaml.safe_load(path.read_text())["cmd"]
        for path in (storage / "runs").glob("??/*/*")
    }


@pytest.mark.slow  # two whole sweeps
def test_two_projects_sweeps_share_no_cache_and_no_run_records(tmp_path: Path) -> None:
    first, second = sweep_project(tmp_path / "first", 40), sweep_project(tmp_path / "second", 60)
    home = tmp_path / "home"
    sweep(first, home, "-S", "train.dropout=0.1")
    sweep(second, home, "-S", "train.dropout=0.2")

    caches = sorted(path.parent.name for path in (home / ".cache/fashion-mnist-sweep").glob("*/dvc-cache"))
    assert len(caches) == 2 and all(len(name) == 12 for name in caches)  # one per git remote
    firsts, seconds = run_records(tmp_path / "first/storage"), run_records(tmp_path / "second/storage")
    assert sorted(seconds.values()) == sorted(
        firsts.values()
    )  # one record per stage: check_params, fetch, prepare, train, evaluate
    assert len(seconds) == 5 and set(seconds).isdisjoint(firsts)

    # One cache for both (SWEEP_CACHE): still, a point publishes only the records of its own runs.
    shared = {"SWEEP_CACHE": str(tmp_path / "shared-cache")}
    sweep(first, home, "-S", "train.dropout=0.3", **shared)
    before = run_records(tmp_path / "second/storage")
    sweep(second, home, "-S", "train.dropout=0.4", **shared)
    added = set(run_records(tmp_path / "second/storage")) - set(before)
    stages = sorted(run_records(tmp_path / "second/storage")[record].split()[2] for record in added)
    assert stages == [
        "stages.check_params",
        "stages.evaluate",
        "stages.train",
    ]  # this point's: fetch, prepare were there
    in_shared_cache = {str(path.relative_to(tmp_path / "shared-cache/runs")) for path in
                       (tmp_path / "shared-cache/runs").glob("??/*/*")}  # fmt: skip
    assert set(run_records(tmp_path / "first/storage")) & in_shared_cache  # the first project's runs are there
    assert set(run_records(tmp_path / "second/storage")).isdisjoint(run_records(tmp_path / "first/storage"))
