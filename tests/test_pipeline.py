"""The whole pipeline with the real `dvc` CLI in a throwaway git repository: on the tiny dataset (1 epoch), and in the
slow tier at the defaults on the real data."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
from conftest import REPO_ROOT, copy_project, dvc, git, requires_debian_data, run, run_stage, set_param

from fmnist.numerics import BASELINE, CURVES, first_difference, read_curves

STAGES = ("fetch", "prepare", "train", "evaluate")
UNDO_A_TRIED_RATE = "git checkout HEAD -- params.yaml dvc.lock reports && dvc checkout"


def ran(output: str) -> list[str]:
    return [stage for stage in STAGES if f"Running stage '{stage}'" in output]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, tiny_template: Path) -> tuple[Path, str]:
    """A project on the tiny dataset after its first `dvc repro` (1 epoch), committed; and what that repro printed."""
    project = copy_project(tiny_template, tmp_path_factory.mktemp("first-run") / "project")
    set_param(project, "train.epochs", "1")
    first = dvc(project, "repro").stdout
    git(project, "add", "-A")
    git(project, "commit", "-qm", "baseline")
    return project, first


@pytest.fixture
def project_run_once(first_run: tuple[Path, str], tmp_path: Path) -> tuple[Path, str]:
    return copy_project(first_run[0], tmp_path / "project"), first_run[1]


def test_repro_reruns_only_what_a_param_change_touches_and_restores_from_run_cache(
    project_run_once: tuple[Path, str],
) -> None:
    project, first = project_run_once
    assert ran(first) == list(STAGES)
    assert "prepare: wrote train 250, validation 50, test 100 images" in first  # no count is hard-coded
    assert "epoch 1/1  loss " in first
    metrics = json.loads((project / "reports/evaluation/metrics.json").read_text())["test"]
    assert 0.6 < metrics["accuracy"] <= 1 and len(metrics["per_class"]) == 10  # ten classes: chance is 0.1

    set_param(project, "train.dropout", "0.3")
    assert set(json.loads(dvc(project, "status", "--json").stdout)) == {"check_params", "train"}
    changed = dvc(project, "repro").stdout
    assert ran(changed) == ["train", "evaluate"]
    assert "Stage 'fetch' didn't change" in changed and "Stage 'prepare' didn't change" in changed
    diff = json.loads(dvc(project, "metrics", "diff", "--json").stdout)
    assert "test.accuracy" in diff["reports/evaluation/metrics.json"]
    assert "train.dropout" in json.loads(dvc(project, "params", "diff", "--json").stdout)["params.yaml"]

    # Undo the tried rate with the README's one command, even with dvc.lock staged (`git add`, or DVC's autostage).
    git(project, "add", "dvc.lock")
    run(["sh", "-c", UNDO_A_TRIED_RATE], cwd=project)
    assert git(project, "status", "--porcelain") == ""
    assert "Data and pipelines are up to date." in dvc(project, "status").stdout
    set_param(project, "train.dropout", "0.3")
    assert ran(dvc(project, "repro").stdout) == []  # and back to the tried rate: from the run-cache

    set_param(project, "train.dropout", "0.2")
    restored = dvc(project, "repro").stdout
    assert ran(restored) == [] and "epoch " not in restored
    assert "Stage 'train' is cached - skipping run" in restored
    assert git(project, "status", "--porcelain") == ""  # byte-identical to the committed results
    dvc(project, "plots", "show")
    assert (project / "dvc_plots/index.html").is_file() and git(project, "status", "--porcelain") == ""

    nothing = dvc(project, "repro").stdout
    assert ran(nothing) == [] and "Data and pipelines are up to date." in nothing

    # Two commits compared from a fresh clone, with nothing pulled: metrics and params are in git.
    set_param(project, "train.dropout", "0.3")
    assert ran(dvc(project, "repro").stdout) == []  # trained above: restored from the run-cache
    git(project, "commit", "-qam", "dropout 0.3")
    run([sys.executable, "-m", "fmnist.dvc_gaps.share", "push"], cwd=project)
    git(project.parent, "clone", "-q", str(project), "clone")
    clone = project.parent / "clone"
    metrics = json.loads(dvc(clone, "metrics", "diff", "HEAD~1", "HEAD", "--json").stdout)
    assert metrics["reports/evaluation/metrics.json"]["test.accuracy"]["diff"] != 0
    params = json.loads(dvc(clone, "params", "diff", "HEAD~1", "HEAD", "--json").stdout)
    assert (params["params.yaml"]["train.dropout"]["old"], params["params.yaml"]["train.dropout"]["new"]) == (0.2, 0.3)
    # Plots are cached outputs, read from the remote. DVC resolves the committed relative remote URL
    # against "/" for past revisions, so the README has clones pin it as an absolute path first.
    dvc(clone, "remote", "modify", "--local", "storage", "url", str(project.parent / "fashion-mnist-dvc-storage"))
    plots = json.loads(dvc(clone, "plots", "diff", "HEAD~1", "HEAD", "--json").stdout)["data"]
    for name in ("Loss", "Accuracy", "Confusion matrix (test)"):
        drawn = {point["rev"] for point in plots[name][0]["content"]["data"]["values"]}
        assert drawn == {"HEAD~1", "HEAD"}, name


def test_rerunning_every_stage_from_scratch_gives_identical_bytes(project_run_once: tuple[Path, str]) -> None:
    project, _ = project_run_once
    lock = (project / "dvc.lock").read_text()

    again = dvc(project, "repro", "--force", "--no-run-cache").stdout
    assert ran(again) == list(STAGES)
    # dvc.lock holds the md5 of every file in data/, models/ and reports/: unchanged means identical bytes.
    assert (project / "dvc.lock").read_text() == lock
    assert git(project, "status", "--porcelain") == ""


@pytest.mark.parametrize(
    ("damage", "started"),
    [("truncated", "directly"), pytest.param("not a zip", "by dvc", marks=pytest.mark.slow)],
)
def test_evaluate_on_a_damaged_model_says_so_in_one_line(
    project_run_once: tuple[Path, str], damage: str, started: str
) -> None:
    project, _ = project_run_once
    model = project / "models/model.keras"
    archive = model.read_bytes()
    model.unlink()  # it may be a link into DVC's cache
    model.write_bytes(archive[: len(archive) // 2] if damage == "truncated" else b"not a keras archive")
    metrics = (project / "reports/evaluation/metrics.json").read_text()

    if started == "directly":
        direct = run_stage("evaluate", "data/prepared", "models/model.keras", "reports/evaluation", cwd=project)
        assert direct.returncode == 1, direct.stdout + direct.stderr
        errors = [line for line in direct.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
        assert len(errors) == 1, direct.stderr
        assert errors[0] == (
            "evaluate: error: models/model.keras: not a readable .keras model (truncated, or not a .keras zip "
            "archive); 'dvc checkout models/model.keras' restores the committed one"
        )
        assert (project / "reports/evaluation/metrics.json").read_text() == metrics  # left as it was
    else:
        by_dvc = dvc(project, "repro", "--single-item", "evaluate", check=False)
        assert by_dvc.returncode != 0
        assert "evaluate: error: models/model.keras: not a readable .keras model" in by_dvc.stderr
        assert "Traceback" not in by_dvc.stdout + by_dvc.stderr


# Where a host's arithmetic differs from the recording host's (fmnist/numerics.py), the full run is
# compared with the committed test metrics within these absolute tolerances instead of bit for bit.
TOLERANCE = {"accuracy": 0.01, "loss": 0.02}
METRICS = ("reports/training/metrics.json", "reports/evaluation/metrics.json")


@pytest.mark.slow
@requires_debian_data
def test_a_full_run_at_the_defaults_reproduces_the_committed_baseline(project: Path) -> None:
    """The committed dvc.lock and metrics, to the byte, on every host whose arithmetic fingerprint is the
    recorded one (tests/baseline.json); elsewhere the test metrics within TOLERANCE, with a warning that says so.
    """
    dvc(project, "repro")
    baseline = json.loads((REPO_ROOT / BASELINE).read_text())
    here = json.loads(run([sys.executable, "-m", "fmnist.numerics"], cwd=project).stdout)
    difference = first_difference(read_curves(project / CURVES), baseline["epochs"])
    hosts = f"this host: {here['host']}; recorded on: {baseline['host']}"
    if here["fingerprint"] == baseline["fingerprint"]:
        assert difference is None, f"same arithmetic fingerprint as the recording host, yet {difference} ({hosts})"
        assert (project / "dvc.lock").read_text() == (REPO_ROOT / "dvc.lock").read_text(), hosts
        for metrics in METRICS:
            assert (project / metrics).read_bytes() == (REPO_ROOT / metrics).read_bytes(), f"{metrics} ({hosts})"
        return
    produced, committed = (
        json.loads((root / "reports/evaluation/metrics.json").read_text())["test"] for root in (project, REPO_ROOT)
    )
    for key, tolerance in TOLERANCE.items():
        assert abs(produced[key] - committed[key]) <= tolerance, (
            f"test {key} {produced[key]} vs {committed[key]} ({hosts})"
        )
    warnings.warn(
        f"compared within {TOLERANCE}, not byte for byte: this host's arithmetic fingerprint differs from the "
        f"recording host's ({hosts}); first difference: {difference}",
        stacklevel=1,
    )
