"""Train resume states are removed once done with, by the rule in `fmnist.resume_cleanup` (issue 19).

The first test runs the real pipeline on the tiny dataset (conftest.tiny_project); the second applies the age and
count rule to state directories it writes itself.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from conftest import dvc, run, set_param

from fmnist.resume_cleanup import KEEP_STATES, MAX_STATE_AGE_DAYS, clean_states

STATES = Path(".resume/train")


def states(project: Path) -> list[Path]:
    root = project / STATES
    return sorted(path for path in root.iterdir() if path.is_dir()) if root.is_dir() else []


def leave_a_state_behind(project: Path, scratch: Path) -> Path:
    """Run train at the workspace's params so that it trains every epoch, saves its state, then fails to save the
    model (its directory is a file): the state of an unfinished run, as an interrupted one leaves it."""
    (scratch / "blocked").write_text("not a directory")
    run(
        [sys.executable, "-m", "stages.train", "data/prepared", str(scratch / "blocked/model.keras"), str(scratch)],
        cwd=project,
        check=False,
    )
    (state,) = states(project)
    assert json.loads((state / "state.json").read_text())["run"]["params"]["train.dropout"] == 0.2
    return state


@pytest.mark.slow  # an interrupted run, then three repros
def test_the_state_of_a_run_restored_from_the_run_cache_is_removed_by_the_next_check(
    tiny_project: Path, tmp_path: Path
) -> None:
    dvc(tiny_project, "repro")  # dropout 0.2
    assert states(tiny_project) == []  # a finished run removes its own state
    set_param(tiny_project, "train.dropout", "0.4")
    dvc(tiny_project, "repro")
    set_param(tiny_project, "train.dropout", "0.2")
    state = leave_a_state_behind(tiny_project, tmp_path)

    restored = dvc(tiny_project, "repro").stdout  # 0.2 again: from the run-cache, train does not run
    assert "Stage 'train' is cached - skipping run" in restored and "Running stage 'train'" not in restored
    assert states(tiny_project) == [state]  # nothing of the project ran to remove it

    set_param(tiny_project, "train.dropout", "0.3")
    repro = dvc(tiny_project, "repro").stdout
    removed = f"resume: removed state {STATES / state.name} (its run's result is what dvc.lock records)"
    assert removed in repro.splitlines(), repro
    assert repro.index(removed) < repro.index("Running stage 'train'")  # by check_params, before train
    assert states(tiny_project) == []  # and the 0.3 run finished


def test_old_states_and_all_but_the_newest_are_removed(tmp_path: Path) -> None:
    root, now = tmp_path / STATES, time.time()
    ages_in_days = {"current": 30, "old": MAX_STATE_AGE_DAYS + 1, **{f"recent-{i}": i / 10 for i in range(5)}}
    for name, age in ages_in_days.items():
        directory = root / name
        directory.mkdir(parents=True)
        (directory / "state.json").write_text(json.dumps({"history": []}))
        for path in (directory / "state.json", directory):
            os.utime(path, (now - age * 86400, now - age * 86400))

    removed = clean_states(keep=root / "current", root=root, lock=tmp_path / "dvc.lock", now=now)

    kept = [f"recent-{i}" for i in range(KEEP_STATES)]
    assert sorted(path.name for path in removed) == ["old", *(f"recent-{i}" for i in range(KEEP_STATES, 5))]
    assert sorted(path.name for path in root.iterdir()) == sorted(["current", *kept])
