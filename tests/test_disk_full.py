"""A full disk is one line and a non-zero exit, loses nothing, and the next run picks up (issue 13).

Each test mounts a small tmpfs (root only, as in CI; skipped otherwise), fills it with a file
leaving a chosen number of bytes free, runs the real `dvc`, then deletes the file and runs again.
The project holds a few hundred IDX images the test writes itself (`dvc commit` records them as
fetch's output), so that every stage runs in seconds. Projects are copied onto the small disk from
templates made once per module (raw data, prepared, trained, evaluated at 1 epoch); what the stages
write after the disk is freed is compared with what the templates' uninterrupted runs recorded.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import copy_project, dvc, git, idx_bytes, make_project, make_tiny_project, run, set_param
from sharing import share

from fmnist.atomic import TEMP_PREFIX
from fmnist.dvc_gaps.check_cache import corrupted_objects

MEGABYTE = 1_000_000
DISK_SIZE = "64m"
TRAIN_IMAGES, TEST_IMAGES = 300, 2000
FILLER = "filler"
STAGE_FAILED = "exited with 1"  # the stage's own exit status, not a signal's (-11 was a segfault)
NEED = r"need about [\d.]+ [kM]B free, [\d.]+ [kM]B free now"
RESUME_STATE_ROOM = 1_100_000  # one epoch's resume state (a 0.77 MB .keras archive) fits, a second one does not


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mounts a tmpfs of the given size (e.g. "64m") under tmp_path; unmounts them all afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        directory = tmp_path / f"disk-{len(mounts)}"
        directory.mkdir()
        command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip()}")
        mounts.append(directory)
        return directory

    yield mount
    for directory in mounts:
        subprocess.run(["umount", "--lazy", str(directory)], check=True)


def fill(disk: Path, leaving: int) -> None:
    """Take all of `disk`'s free space but `leaving` bytes, with one file."""
    free(disk)
    size = shutil.disk_usage(disk).free - leaving
    with open(disk / FILLER, "wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, size)


def free(disk: Path) -> None:
    (disk / FILLER).unlink(missing_ok=True)


def small_project(directory: Path) -> Path:
    """The project at `directory` with tiny raw data recorded as fetch's output (nothing else run)."""
    project = make_project(directory)
    raw = project / "data/raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", TRAIN_IMAGES), ("t10k", TEST_IMAGES)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(images))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(count, dtype=np.uint8) % 10))
    set_param(project, "prepare.val_size", "100")
    dvc(project, "commit", "--force", "fetch")
    dvc(project, "repro", "check_params")  # recorded too, so that a failing stage leaves dvc.lock as it was
    git(project, "add", "-A")
    git(project, "commit", "-qm", "tiny raw data")
    return project


def temporaries(project: Path) -> list[Path]:
    """What our stages (`.tmp-*`) or DVC (`.<token>.tmp`) write before renaming, left anywhere in the project."""
    paths = (path for path in project.rglob("*") if ".git" not in path.parts)
    return [path for path in paths if path.name.startswith(TEMP_PREFIX) or path.name.endswith(".tmp")]


def check_cache(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "fmnist.dvc_gaps.check_cache", *args], cwd=project, check=False)


def assert_one_line_failure(result: subprocess.CompletedProcess[str], line: str) -> None:
    """The stage exited 1 (no signal) and `line` (a regex) is all it printed on stderr."""
    assert result.returncode != 0
    failed, *rest = reversed(result.stderr.strip().splitlines())
    assert failed.startswith("ERROR: failed to reproduce") and failed.endswith(STAGE_FAILED), result.stderr
    assert len(rest) == 1 and re.fullmatch(line, rest[0]), result.stderr


def assert_nothing_lost(project: Path, lock: str) -> None:
    assert (project / "dvc.lock").read_text() == lock
    assert temporaries(project) == []
    assert check_cache(project).returncode == 0


def locked_stages(lock: str) -> dict:
    return yaml.safe_load(lock)["stages"]


def assert_same_bytes_as_an_uninterrupted_run(project: Path, clean_lock: str, *stages: str) -> None:
    """The stages recorded the outputs (dvc.lock holds every output's md5) that an uninterrupted run recorded
    (`clean_lock`, its dvc.lock): no resume state, no run-cache, nothing failed."""
    ours, clean = locked_stages((project / "dvc.lock").read_text()), locked_stages(clean_lock)
    for stage in stages:
        assert ours[stage] == clean[stage], stage


@dataclass(frozen=True)
class Templates:
    """Made once per module, off the small disks; copy them (`copy_project`), never change them."""

    raw: Path  # small_project: raw data recorded, nothing run
    prepared: Path  # prepare run, train.epochs 1, committed
    trained: Path  # and train run, committed
    evaluated: Path  # and evaluate run, committed: its dvc.lock is an uninterrupted 1-epoch run's
    locks: dict[int, str]  # train.epochs: dvc.lock of an uninterrupted run (`uninterrupted_lock`)


def run_and_commit(template: Path, directory: Path, *stages: str) -> Path:
    project = copy_project(template, directory)
    dvc(project, "repro", *stages)
    git(project, "add", "-A")
    git(project, "commit", "-qm", f"ran {' '.join(stages)}")
    return project


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    root = tmp_path_factory.mktemp("disk-full-templates")
    raw = small_project(root / "raw")
    prepared = copy_project(raw, root / "prepared")
    set_param(prepared, "train.epochs", "1")
    prepared = run_and_commit(prepared, root / "prepared-1", "prepare")
    trained = run_and_commit(prepared, root / "trained", "train")
    evaluated = run_and_commit(trained, root / "evaluated", "evaluate")
    return Templates(raw, prepared, trained, evaluated, {1: (evaluated / "dvc.lock").read_text()})


def uninterrupted_lock(templates: Templates, epochs: int) -> str:
    """dvc.lock of an uninterrupted run of `epochs` epochs; run once per module when a test first asks for it."""
    if epochs not in templates.locks:
        project = copy_project(templates.prepared, templates.raw.parent / f"{epochs}-epochs")
        set_param(project, "train.epochs", str(epochs))
        dvc(project, "repro", "train")
        templates.locks[epochs] = (project / "dvc.lock").read_text()
    return templates.locks[epochs]


@pytest.fixture
def disk(small_disk: Callable[[str], Path]) -> Path:
    return small_disk(DISK_SIZE)


@pytest.fixture
def project(disk: Path, templates: Templates) -> Path:
    return copy_project(templates.raw, disk / "project")


def prepared(templates: Templates, directory: Path, epochs: int) -> Path:
    project = copy_project(templates.prepared, directory)
    if epochs != 1:
        set_param(project, "train.epochs", str(epochs))
        dvc(project, "repro", "check_params")  # as the uninterrupted run recorded it
        git(project, "commit", "-qam", f"{epochs} epochs")
    return project


def test_fetch_reports_a_full_disk(disk: Path, tmp_path: Path) -> None:
    project = make_tiny_project(disk / "project", tmp_path / "tiny-fashion-mnist")  # the source off the small disk
    fill(disk, leaving=100_000)
    failed = dvc(project, "repro", "fetch", check=False)
    assert_one_line_failure(failed, rf"fetch: error: no space left on device writing the raw files to data/raw: {NEED}")
    assert "need about 314 kB free" in failed.stderr  # the four files of the tiny dataset: 300 + 100 images
    assert not (project / "data/raw").exists() and not (project / "dvc.lock").exists()
    assert temporaries(project) == []


@pytest.mark.slow  # the default tier fills the disk under train and share
def test_prepare_reports_a_full_disk_and_runs_once_space_is_freed(
    disk: Path, project: Path, templates: Templates
) -> None:
    lock = (project / "dvc.lock").read_text()
    fill(disk, leaving=MEGABYTE)
    failed = dvc(project, "repro", "prepare", check=False)
    assert_one_line_failure(
        failed, rf"prepare: error: no space left on device writing the prepared splits to data/prepared: {NEED}"
    )
    assert "need about 7.2 MB free" in failed.stderr  # the three splits: 300 + 2000 images of 3136 bytes
    assert not (project / "data/prepared").exists()
    assert_nothing_lost(project, lock)

    free(disk)
    dvc(project, "repro", "prepare")
    assert_same_bytes_as_an_uninterrupted_run(project, uninterrupted_lock(templates, 1), "prepare")


@pytest.mark.parametrize(
    ("epochs", "what"),
    [
        pytest.param(2, r"the resume state to \.resume/train/[0-9a-f]{16}", marks=pytest.mark.slow),
        (1, "the model to models/model\\.keras"),
    ],
    ids=["resume-state", "model"],
)
def test_train_reports_a_full_disk_and_resumes_from_its_last_saved_epoch(
    disk: Path, templates: Templates, epochs: int, what: str
) -> None:
    """Room for one epoch's resume state: epoch 2's state (or the model, after 1 epoch) does not fit."""
    project = prepared(templates, disk / "project", epochs)
    lock = (project / "dvc.lock").read_text()
    fill(disk, leaving=RESUME_STATE_ROOM)
    failed = dvc(project, "repro", "train", check=False)
    assert_one_line_failure(failed, rf"train: error: no space left on device writing {what}: {NEED}")
    # What the stage reports free is what is free once it has exited: it held no unlinked file open (as Keras's
    # save_weights did: its HDF5 file stayed open after the failed write, and HDF5 crashed closing it at exit).
    reported_free = float(re.search(r"([\d.]+) kB free now", failed.stderr)[1]) * 1000
    assert abs(reported_free - shutil.disk_usage(disk).free) < 64_000
    assert re.findall(r"^epoch (\d+)/", failed.stdout, flags=re.M) == ["1"]
    assert not (project / "models/model.keras").exists()
    assert not (project / "reports/training/metrics.json").exists()
    assert_nothing_lost(project, lock)
    (state,) = (project / ".resume/train").iterdir()
    assert sorted(path.name for path in state.iterdir()) == ["epoch-1.keras", "state.json"]

    free(disk)
    resumed = dvc(project, "repro", "train").stdout
    assert f"train: resuming after epoch 1/{epochs}" in resumed
    assert re.findall(r"^epoch (\d+)/", resumed, flags=re.M) == [str(epoch) for epoch in range(2, epochs + 1)]
    assert_same_bytes_as_an_uninterrupted_run(project, uninterrupted_lock(templates, epochs), "train")


@pytest.mark.slow  # the default tier fills the disk under train and share
def test_evaluate_reports_a_full_disk_and_runs_once_space_is_freed(disk: Path, templates: Templates) -> None:
    project = copy_project(templates.trained, disk / "project")
    lock = (project / "dvc.lock").read_text()
    fill(disk, leaving=16_000)  # less than the confusion data of the 2000 test images
    failed = dvc(project, "repro", "evaluate", check=False)
    assert_one_line_failure(
        failed,
        rf"evaluate: error: no space left on device writing the evaluation reports to reports/evaluation: {NEED}",
    )
    assert not any((project / "reports/evaluation").iterdir())
    assert_nothing_lost(project, lock)

    free(disk)
    dvc(project, "repro", "evaluate")
    assert_same_bytes_as_an_uninterrupted_run(project, uninterrupted_lock(templates, 1), "evaluate")


@pytest.mark.slow  # the default tier fills the disk under train and share
@pytest.mark.dvc_behaviour  # pins what DVC does on a full disk, which check_cache works around
def test_a_full_disk_while_dvc_caches_an_output_is_repaired_by_the_next_repro(
    disk: Path, project: Path, templates: Templates
) -> None:
    """DVC 3.67.1 logs the failed copies, records the stage anyway, exits 0 and leaves partial copies in the cache."""
    set_param(project, "train.epochs", "1")
    fill(disk, leaving=10 * MEGABYTE)  # the 7.2 MB of prepared splits fit, DVC's copy of them does not
    failed = dvc(project, "repro", "prepare", check=False)
    assert failed.returncode == 0  # observed: DVC reports the failed copies but not as a failure
    assert "prepare: wrote" in failed.stdout
    assert re.search(r"ERROR: failed to transfer '[0-9a-f]{32}' - \[Errno 28\] No space left on device", failed.stderr)
    assert "\n  prepare:\n" in (project / "dvc.lock").read_text()  # recorded, although not cached:
    assert "not in cache:       data/prepared" in dvc(project, "status", "prepare").stdout
    partial = check_cache(project)
    assert partial.returncode == 1  # no object is damaged: only DVC's unfinished copies are left
    assert re.search(r"check_cache: 0 of \d+ objects corrupted, [1-9]\d* partial copies", partial.stderr)

    free(disk)
    assert check_cache(project, "--remove").returncode == 1
    assert temporaries(project) == []
    assert "Running stage 'prepare'" in dvc(project, "repro").stdout
    assert dvc(project, "status").stdout.strip() == "Data and pipelines are up to date."
    assert check_cache(project).returncode == 0
    assert_same_bytes_as_an_uninterrupted_run(project, uninterrupted_lock(templates, 1), "prepare", "train", "evaluate")


def assert_one_line_transfer_failure(result: subprocess.CompletedProcess[str], destination: Path) -> None:
    assert result.returncode == 1
    assert re.fullmatch(
        rf"ERROR: no space left on device copying \d+ files to {re.escape(str(destination))}: {NEED}; "
        "free space there and run this again",
        result.stderr.strip(),
    )


def test_share_push_and_pull_on_a_full_disk_are_one_line_leave_no_partial_file_and_complete_later(
    small_disk: Callable[[str], Path], tmp_path: Path, templates: Templates
) -> None:
    project = copy_project(templates.evaluated, tmp_path / "project")  # every stage run at 1 epoch, committed
    remote_disk, clone_disk = small_disk("16m"), small_disk("32m")
    remote = remote_disk / "remote"
    dvc(project, "remote", "modify", "--local", "storage", "url", str(remote))
    fill(remote_disk, leaving=4 * MEGABYTE)  # less than the 10 MB of objects

    assert_one_line_transfer_failure(share(project, "push"), remote)
    assert temporaries(remote) == []
    assert corrupted_objects(remote) == []
    free(remote_disk)
    pushed = share(project, "push")
    assert pushed.returncode == 0, pushed.stderr

    clone = clone_disk / "clone"
    git(clone_disk, "clone", "-q", str(project), clone.name)
    dvc(clone, "remote", "modify", "--local", "storage", "url", str(remote))
    fill(clone_disk, leaving=4 * MEGABYTE)
    assert_one_line_transfer_failure(share(clone, "pull"), clone / ".dvc/cache/files/md5")
    assert temporaries(clone) == []
    assert check_cache(clone).returncode == 0
    free(clone_disk)
    pulled = share(clone, "pull")  # the default remote has `verify = true`: every object is re-hashed
    assert pulled.returncode == 0, pulled.stderr
    assert check_cache(clone).returncode == 0
    assert dvc(clone, "status").stdout.strip() == "Data and pipelines are up to date."
    for name in ("data/prepared/train.npz", "models/model.keras", "reports/evaluation/confusion.csv"):
        assert (clone / name).read_bytes() == (project / name).read_bytes()


@pytest.mark.slow  # the default tier fills the disk under train and share
def test_a_full_disk_while_training_writes_its_curves_is_one_line_and_the_next_run_resumes(
    small_disk: Callable[[str], Path], tmp_path: Path, templates: Templates
) -> None:
    """The curves directory alone on a full disk (the stage run directly): the one write that fails is the curves'."""
    project = prepared(templates, tmp_path / "project", epochs=2)
    full = small_disk("1m")
    curves = full / "curves"
    curves.mkdir()
    fill(full, leaving=0)
    command = [sys.executable, "-m", "stages.train", "data/prepared", "models/model.keras", str(curves)]
    failed = run(command, cwd=project, check=False)
    assert failed.returncode == 1, failed.stderr
    line = rf"train: error: no space left on device writing the training curves to {re.escape(str(curves))}: {NEED}"
    assert re.fullmatch(line, failed.stderr.strip()), failed.stderr
    assert not (project / "models/model.keras").exists() and list(curves.iterdir()) == []

    free(full)
    resumed = run(command, cwd=project)
    assert "train: resuming after epoch 1/2" in resumed.stdout and "epoch 2/2" in resumed.stdout
    assert not (project / ".resume/train").exists() or not any((project / ".resume/train").iterdir())
    # The same model as an uninterrupted 2-epoch run's
    outs = locked_stages(uninterrupted_lock(templates, 2))["train"]["outs"]
    (model,) = (out for out in outs if out["path"] == "models/model.keras")
    assert hashlib.md5((project / "models/model.keras").read_bytes()).hexdigest() == model["md5"]
