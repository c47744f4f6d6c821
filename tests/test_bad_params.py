"""A bad params value leaves the workspace as it was: the check_params stage stops `dvc repro` before DVC deletes
any other stage's outputs (issue 19). Real `dvc` on the tiny dataset (conftest.project)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml
from conftest import dvc, git, set_param

MODEL = "models/model.keras"


def delete_key(project: Path, key: str) -> None:
    section, name = key.split(".")
    lines = (project / "params.yaml").read_text().splitlines(keepends=True)
    in_section, kept = False, []
    for line in lines:
        if not line.startswith(" "):
            in_section = line.startswith(f"{section}:")
        elif in_section and line.strip().startswith(f"{name}:"):
            continue
        kept.append(line)
    assert len(kept) == len(lines) - 1
    (project / "params.yaml").write_text("".join(kept))


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest() if path.is_file() else "directory"


def data_files(project: Path) -> list[tuple[str, str]]:
    """md5 of fetch's and prepare's outputs; not of check_params' own (DVC deletes it before the check runs)."""
    paths = [*(project / "data/raw").iterdir(), *(project / "data/prepared").iterdir()]
    return sorted((str(path.relative_to(project)), md5(path)) for path in paths)


def workspace(project: Path) -> dict[str, object]:
    plots = project / "reports/training/plots"
    return {
        "model": hashlib.md5((project / MODEL).read_bytes()).hexdigest(),
        "plots": sorted(str(path.relative_to(plots)) for path in plots.rglob("*")),
        "metrics": (project / "reports/training/metrics.json").read_text(),
        "git status": git(project, "status", "--porcelain"),
    }


CHECK_ERROR = "check_params: error: params.yaml: "


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: set_param(p, "train.dropout", "1.5"), CHECK_ERROR + "'train.dropout' must be in [0, 1), got 1.5"),
        (lambda p: set_param(p, "train.dropout", '"abc"'), CHECK_ERROR + "'train.dropout' must be float, got 'abc'"),
        (
            lambda p: delete_key(p, "train.dropout"),
            "ERROR: failed to reproduce 'check_params': Parameters 'train.dropout' are missing from 'params.yaml'.",
        ),
    ],
    ids=["out-of-range", "not-a-number", "key-deleted"],
)
def test_a_bad_value_stops_repro_before_any_output_is_deleted(tiny_evaluated: Path, change, message: str) -> None:
    project = tiny_evaluated  # results committed
    change(project)
    before = workspace(project)
    assert before["git status"] == " M params.yaml\n"

    for targets in ([], ["train"]):  # `dvc repro train` runs the check only as a dep of train
        failed = dvc(project, "repro", *targets, check=False)
        assert failed.returncode != 0
        assert workspace(project) == before
        assert message in failed.stderr.splitlines(), failed.stderr
        assert "Running stage 'train'" not in failed.stdout

    git(project, "checkout", "params.yaml")  # fixed: nothing to train, the check itself comes from the run-cache
    repro = dvc(project, "repro").stdout
    assert "Running stage" not in repro, repro
    assert git(project, "status", "--porcelain") == ""


def test_a_bad_fetch_or_prepare_value_stops_repro_at_the_check(tiny_evaluated: Path) -> None:
    """fetch runs after the check by its place in dvc.yaml, prepare by its dep on the check's output."""
    project = tiny_evaluated
    data = data_files(project)
    for key, value in (("prepare.val_size", "-5"), ("prepare.val_size", "60000"), ("prepare.seed", "seven")):
        set_param(project, key, value)
        failed = dvc(project, "repro", check=False)
        assert failed.returncode != 0
        assert "Running stage 'fetch'" not in failed.stdout and "Running stage 'prepare'" not in failed.stdout
        errors = [line for line in failed.stderr.splitlines() if line.startswith(CHECK_ERROR)]
        assert len(errors) == 1 and f"'{key}'" in errors[0] and value in errors[0], failed.stderr
        git(project, "checkout", "params.yaml")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["fetch"]["sources"] = "/not/a/list"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    failed = dvc(project, "repro", check=False)
    assert failed.returncode != 0 and "Running stage 'fetch'" not in failed.stdout
    assert f"{CHECK_ERROR}'fetch.sources' must be a list, got '/not/a/list'" in failed.stderr.splitlines()
    assert data_files(project) == data
