"""A team remote holding run records whose outputs are missing: `fmnist.dvc_gaps.share` pulls every
complete record, names the others in one line and leaves the workspace complete; its push never uploads a record
without its outputs; `fmnist.dvc_gaps.check_cache --remote` finds and removes such records.

Real `dvc` and the project's tools on the tiny dataset; the remote is the committed default, a directory beside the
project (`../../fashion-mnist-dvc-storage` from `.dvc/`), shared by the clones beside it. The module's templates
train each rate once; every test works on its own copy of a template and of its remote.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import copy_project, dvc, git, run, set_param
from sharing import MODEL, REMOTE_DIR, UP_TO_DATE, md5, object_path, outputs, share

POISONED = (
    "share: skipped 2 run records whose outputs are on no remote ('storage' lacks them): "
    "train (train.dropout=0.4), evaluate (models/model.keras of train.dropout=0.4)"
)


def check_cache(clone: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m fmnist.dvc_gaps.check_cache ...` from the clone's root, as the docs say."""
    return run([sys.executable, "-m", "fmnist.dvc_gaps.check_cache", *args], cwd=clone, check=False)


def clone_beside(project: Path, name: str) -> Path:
    git(project.parent, "clone", "-q", str(project), name)
    return project.parent / name


def remote_records(remote: Path) -> list[dict]:
    return [yaml.safe_load(path.read_text()) for path in sorted((remote / "runs").glob("??/*/*"))]


def copy_with_remote(template: Path, root: Path) -> Path:
    """A copy of a template project and of its default remote, the directory beside it."""
    project = copy_project(template, root / "project")
    if (template.parent / REMOTE_DIR).exists():
        shutil.copytree(template.parent / REMOTE_DIR, root / REMOTE_DIR)
    return project


@pytest.fixture(scope="module")
def two_rates(tmp_path_factory: pytest.TempPathFactory, tiny_evaluated_template: Path) -> tuple[Path, str]:
    """The tiny project's results at 0.2 after training 0.4 too (never committed); the 0.4 model's md5."""
    project = copy_with_remote(tiny_evaluated_template, tmp_path_factory.mktemp("two-rates"))
    set_param(project, "train.dropout", "0.4")
    dvc(project, "repro")
    model_04 = md5(project / MODEL)
    set_param(project, "train.dropout", "0.2")
    dvc(project, "repro")  # the committed results again, from the run-cache
    assert git(project, "status", "--porcelain") == ""
    return project, model_04


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory: pytest.TempPathFactory, tiny_evaluated_template: Path) -> Path:
    """The tiny project's results at 0.2 shared with `fmnist-share push`; then a teammate's clone trains 0.4 (never
    committed), goes back to 0.2 and runs a plain `dvc push --run-cache`: the 0.4 records go up, their outputs not."""
    project = copy_with_remote(tiny_evaluated_template, tmp_path_factory.mktemp("poisoned"))
    pushed = share(project, "push")
    assert pushed.returncode == 0, pushed.stderr
    teammate = clone_beside(project, "teammate")
    dvc(teammate, "pull")
    set_param(teammate, "train.dropout", "0.4")
    dvc(teammate, "repro")
    git(teammate, "checkout", "--", ".")
    dvc(teammate, "checkout")
    assert dvc(teammate, "status").stdout.strip() == UP_TO_DATE
    dvc(teammate, "push", "--run-cache")
    return project


def dvc_lock_md5(project: Path, stage: str, path: str) -> str:
    """The md5 dvc.lock records for output `path` of `stage` (`….dir` for a directory)."""
    outs = yaml.safe_load((project / "dvc.lock").read_text())["stages"][stage]["outs"]
    return next(out["md5"] for out in outs if out["path"] == path)


def skipped_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if "skipped" in line]


def assert_pulled_complete(clone: Path, origin: Path) -> None:
    assert dvc(clone, "status").stdout.strip() == UP_TO_DATE
    assert outputs(clone) == outputs(origin)
    repro = dvc(clone, "repro").stdout
    assert "Running stage" not in repro, repro
    assert git(clone, "status", "--porcelain") == ""


def test_pull_survives_records_a_teammates_plain_push_run_cache_left_without_outputs(
    poisoned: Path, tmp_path: Path
) -> None:
    project = copy_with_remote(poisoned, tmp_path)

    fresh = clone_beside(project, "fresh")
    pulled = share(fresh, "pull")
    assert pulled.returncode == 0, pulled.stderr
    assert skipped_lines(pulled) == [POISONED]
    assert_pulled_complete(fresh, project)
    # The skipped records were not kept: DVC would try to restore from them, and a plain push would pass them on.
    local = list((fresh / ".dvc/cache/runs").glob("??/*/*"))
    assert len(local) == len(remote_records(project.parent / REMOTE_DIR)) - 2

    set_param(fresh, "train.dropout", "0.4")  # the rate whose record was skipped trains, as without a record
    assert "Running stage 'train'" in dvc(fresh, "repro").stdout


@pytest.mark.slow  # the default tier pulls a poisoned remote
def test_pull_after_the_authors_own_plain_push_run_cache_restores_the_current_run(
    two_rates: tuple[Path, str], tmp_path: Path
) -> None:
    """A plain push uploads no `cache: false` metrics: pull takes the current run's from the workspace (git)."""
    project = copy_with_remote(two_rates[0], tmp_path)
    dvc(project, "push", "--run-cache")

    fresh = clone_beside(project, "fresh")
    pulled = share(fresh, "pull")
    assert pulled.returncode == 0, pulled.stderr
    assert skipped_lines(pulled) == [POISONED]
    assert_pulled_complete(fresh, project)
    # The current run is restorable from its record: once its outputs are gone (as a failed run leaves them), DVC
    # restores them instead of training, which needs the metrics object in the cache too.
    shutil.rmtree(fresh / "reports/training/plots")
    (fresh / MODEL).unlink()
    (fresh / "reports/training/metrics.json").unlink()
    repro = dvc(fresh, "repro").stdout
    assert "Stage 'train' is cached - skipping run" in repro and "Running stage 'train'" not in repro, repro
    assert git(fresh, "status", "--porcelain") == ""


@pytest.mark.slow  # the default tier pulls a poisoned remote
def test_pull_survives_a_record_whose_outputs_were_deleted_from_the_remote(
    two_rates: tuple[Path, str], tmp_path: Path
) -> None:
    project, model_04 = copy_with_remote(two_rates[0], tmp_path), two_rates[1]
    pushed = share(project, "push")
    assert pushed.returncode == 0, pushed.stderr
    remote = project.parent / REMOTE_DIR
    object_path(remote, model_04).unlink()

    fresh = clone_beside(project, "fresh")
    pulled = share(fresh, "pull")
    assert pulled.returncode == 0, pulled.stderr
    assert skipped_lines(pulled) == [
        "share: skipped 1 run record whose outputs are on no remote ('storage' lacks them): train (train.dropout=0.4)"
    ]
    assert_pulled_complete(fresh, project)


@pytest.mark.slow  # the default tier pulls a poisoned remote
def test_pull_fails_only_when_the_workspace_outputs_are_missing(tiny_evaluated_template: Path, tmp_path: Path) -> None:
    project = copy_with_remote(tiny_evaluated_template, tmp_path)
    assert share(project, "push").returncode == 0
    object_path(project.parent / REMOTE_DIR, md5(project / MODEL)).unlink()

    pulled = share(clone_beside(project, "fresh"), "pull")
    assert pulled.returncode != 0
    assert MODEL in pulled.stderr


@pytest.mark.slow  # the default tier pulls a poisoned remote
def test_push_uploads_no_run_record_without_its_outputs(two_rates: tuple[Path, str], tmp_path: Path) -> None:
    project, model_04 = copy_with_remote(two_rates[0], tmp_path), two_rates[1]
    set_param(project, "train.dropout", "0.3")
    dvc(project, "repro")
    model_03 = md5(project / MODEL)
    set_param(project, "train.dropout", "0.2")
    assert "Running stage" not in dvc(project, "repro").stdout  # restored from the run-cache
    assert git(project, "status", "--porcelain") == ""
    object_path(project / ".dvc/cache", model_03).unlink()  # as `dvc gc` would: the 0.3 record is incomplete

    pushed = share(project, "push")
    assert pushed.returncode == 0, pushed.stderr
    assert "skipped 1 run record whose outputs are not in the local cache" in pushed.stdout
    remote = project.parent / REMOTE_DIR
    records = remote_records(remote)
    local = list((project / ".dvc/cache/runs").glob("??/*/*"))
    assert len(records) == len(local) - 1
    assert not any(out["md5"] == model_03 for record in records for out in record["outs"])
    for record in records:  # every object of every record is on the remote
        for out in record["outs"]:
            assert object_path(remote, out["md5"]).is_file(), (record["cmd"], out)
    checked = check_cache(project, "--remote")  # the files of every directory too
    assert checked.returncode == 0, checked.stderr

    # The 0.4 run, never committed, comes to a teammate whole: restored, not trained.
    fresh = clone_beside(project, "fresh")
    pulled = share(fresh, "pull")
    assert pulled.returncode == 0, pulled.stderr
    assert skipped_lines(pulled) == []
    set_param(fresh, "train.dropout", "0.4")
    repro = dvc(fresh, "repro").stdout
    assert "Stage 'train' is cached - skipping run" in repro and "Running stage 'train'" not in repro, repro
    assert md5(fresh / MODEL) == model_04


def test_check_cache_finds_and_removes_records_whose_outputs_the_remote_lacks(poisoned: Path, tmp_path: Path) -> None:
    project = copy_with_remote(poisoned, tmp_path)
    remote = project.parent / REMOTE_DIR
    total = len(remote_records(remote))

    found = check_cache(project, "--remote")
    assert found.returncode == 1
    listed = [line for line in found.stdout.splitlines() if line.startswith("incomplete run record")]
    assert [line.split(": ")[0] for line in listed] == ["incomplete run record"] * 2
    assert sorted(line.split(": ", 2)[2] for line in listed) == [
        "evaluate (models/model.keras of train.dropout=0.4)",
        "train (train.dropout=0.4)",
    ]
    assert found.stderr.strip() == (
        f"check_cache: 2 of {total} run records on remote 'storage' lack outputs (run with --remove to delete them)"
    )

    removed = check_cache(project, "--remote", "storage", "--remove")
    assert removed.returncode == 0, removed.stderr
    assert len(remote_records(remote)) == total - 2
    again = check_cache(project, "--remote")
    assert again.returncode == 0
    left = total - 2
    assert (
        again.stdout.splitlines()[-1]
        == f"check_cache: all {left} run records on remote 'storage' have their outputs there"
    )

    pulled = share(clone_beside(project, "fresh"), "pull")
    assert pulled.returncode == 0, pulled.stderr
    assert skipped_lines(pulled) == []


def test_a_truncated_object_on_the_remote_is_found_removed_and_pushed_again(
    two_rates: tuple[Path, str], tmp_path: Path
) -> None:
    """What a push killed midway over SFTP leaves (treeverse/dvc #10498), here on the directory remote. DVC's push
    takes the object as present (its directory's listing is there); `check_cache --remote --remove` clears the way."""
    project = copy_with_remote(two_rates[0], tmp_path)
    assert share(project, "push").returncode == 0
    remote = project.parent / REMOTE_DIR
    truncated = object_path(remote, md5(project / "data/prepared/train.npz"))
    truncated.chmod(0o644)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    listing = object_path(remote, dvc_lock_md5(project, "prepare", "data/prepared"))

    found = check_cache(project, "--remote")
    assert found.returncode == 1
    assert found.stderr.splitlines()[:2] == [f"corrupted: {truncated}", f"incomplete directory listing: {listing}"]
    blocked = share(project, "push")
    assert blocked.returncode == 1
    assert blocked.stderr.strip() == (
        "ERROR: the remote still lacks outputs of 1 run record; no run record pushed "
        "(run 'fmnist-check-cache --remote' to find damaged objects there)"
    )

    removed = check_cache(project, "--remote", "--remove")
    assert removed.returncode == 0, removed.stderr
    assert not listing.exists()
    pushed = share(project, "push")
    assert pushed.returncode == 0, pushed.stderr
    assert md5(truncated) == md5(project / "data/prepared/train.npz") and listing.is_file()
    checked = check_cache(project, "--remote")
    assert checked.returncode == 0, checked.stderr

    fresh = clone_beside(project, "fresh")
    pulled = share(fresh, "pull")
    assert pulled.returncode == 0, pulled.stderr
    assert skipped_lines(pulled) == []
    assert_pulled_complete(fresh, project)
