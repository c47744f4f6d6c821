"""A point published under the order-dependent name of earlier sweeps is found by its digest and not run again.
A real LocalCluster, dvc and git on the tiny dataset."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import git, run
from tiny_sweeps import sweep_project


def exp_refs(origin: Path) -> list[str]:
    return git(origin, "for-each-ref", "--format=%(refname)", "refs/exps/").split()


@pytest.mark.slow  # the default tier's 2x2 sweep resubmits too
def test_a_point_published_under_its_earlier_name_is_not_run_again(tmp_path: Path) -> None:
    project, origin = sweep_project(tmp_path / "sweep"), tmp_path / "sweep/origin.git"
    command = [sys.executable, "-m", "fmnist.sweep", "run", "-S", "train.seed=1", "-S", "train.dropout=0.1",
               "--workers", "1"]  # fmt: skip
    first = run(command, cwd=project)
    (ref,) = exp_refs(origin)
    assert ref.rsplit("/", 1)[1].startswith("sweep-dropout0.1-seed1-"), first.stdout  # keys sorted
    digest = ref.rsplit("-", 1)[1]
    earlier = f"{ref.rsplit('/', 1)[0]}/sweep-seed1-dropout0.1-{digest}"  # the -S order, as sweeps named it before
    git(origin, "update-ref", earlier, ref)
    git(origin, "update-ref", "-d", ref)

    again = run([*command[:4], "-S", "train.dropout=0.10", "-S", "train.seed=1", *command[-2:]], cwd=project)
    assert " published before on " in again.stdout, again.stdout
    assert again.stdout.splitlines()[-2].split()[-1] == f"sweep-seed1-dropout0.1-{digest}"  # the table's name
    assert exp_refs(origin) == [earlier]
