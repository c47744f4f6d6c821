"""Interrupted, failed and concurrent runs lose nothing (real `dvc`, real processes, real signals).

Each scenario checks "nothing lost": dvc.lock unchanged by the failure, every cache object still
hashing to its name, previous outputs recoverable with `dvc checkout`, and the result after the
fix equal to a clean run's. On the tiny dataset (conftest), one image per step, so that an epoch
lasts long enough to be interrupted in.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import VENV_BIN, copy_project, dvc, git, run, set_param, tool_env

from fmnist.dvc_gaps.check_cache import cache_objects, corrupted_objects

SLOW_VARIANT = pytest.mark.slow  # the default tier runs one case of each scenario
EPOCHS = 9  # one digit: the stage pads epoch numbers to the width of the total


class Repro:
    """`dvc repro` in its own process group (as a terminal or CI runs it), its output read live."""

    def __init__(self, project: Path, *args: str, shell: str | None = None) -> None:
        self.process = subprocess.Popen(
            [str(VENV_BIN / "dvc"), "repro", *args],
            cwd=project, env=tool_env() | ({"SHELL": shell} if shell else {}), text=True, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.output = ""
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.process.stdout], daemon=True).start()

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            self.output += self.lines.get(timeout=max(0.0, deadline - time.monotonic()))

    def finish(self, timeout: float = 180) -> int:
        code = self.process.wait(timeout=timeout)
        time.sleep(0.2)  # let the reader thread drain the pipe
        while not self.lines.empty():
            self.output += self.lines.get()
        return code


def epochs_run(output: str) -> list[int]:
    return [int(number) for number in re.findall(rf"^epoch (\d+)/{EPOCHS} ", output, flags=re.M)]


def stage_processes(project: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        if process.info["cwd"] == str(project) and "stages.train" in " ".join(process.info["cmdline"] or []):
            found.append(process)
    return found


def assert_training_stops(project: Path, within: float = 15) -> None:
    """No training process of `project` is left (it may take a moment to exit after the signal)."""
    deadline = time.monotonic() + within
    while stage_processes(project) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stage_processes(project) == [], "training was left running"


def assert_cache_intact(project: Path) -> None:
    """Every cache object still hashes to its name, checked by the project's own checker."""
    cache = project / ".dvc/cache"
    assert any(cache_objects(cache))
    assert corrupted_objects(cache) == []


@pytest.fixture(scope="module")
def prepared_template(tmp_path_factory: pytest.TempPathFactory, tiny_prepared_template: Path) -> Path:
    """Fetch and prepare done and committed, training set to a few epochs of one image per step. Copied per test."""
    project = copy_project(tiny_prepared_template, tmp_path_factory.mktemp("reliability") / "project")
    set_param(project, "train.epochs", str(EPOCHS))
    set_param(project, "train.batch_size", "1")
    dvc(project, "repro", "check_params")  # recorded with these params, so an interrupted train changes no lock entry
    git(project, "commit", "-qam", f"{EPOCHS} epochs, batch 1")
    return project


@pytest.fixture
def prepared(prepared_template: Path, tmp_path: Path) -> Path:
    return copy_project(prepared_template, tmp_path / "project")


@pytest.fixture(scope="module")
def uninterrupted_lock(prepared_template: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """dvc.lock after a clean `dvc repro train`: it holds every output's md5, so equal locks mean equal bytes."""
    project = copy_project(prepared_template, tmp_path_factory.mktemp("uninterrupted") / "project")
    dvc(project, "repro", "train")
    return (project / "dvc.lock").read_text()


@pytest.mark.parametrize(
    "signum",
    [pytest.param(signal.SIGKILL, marks=SLOW_VARIANT), signal.SIGINT, pytest.param(signal.SIGTERM, marks=SLOW_VARIANT)],
    ids=lambda s: s.name,
)
def test_interrupted_training_resumes_and_does_each_epoch_exactly_once(
    prepared: Path, uninterrupted_lock: str, signum: int
) -> None:
    lock = (prepared / "dvc.lock").read_text()
    first = Repro(prepared, "train")
    first.wait_for(f"epoch 1/{EPOCHS}")
    os.killpg(first.process.pid, signum)  # the whole group, as Ctrl-C or a CI timeout does
    assert first.finish(timeout=30) != 0, first.output
    assert len(epochs_run(first.output)) < EPOCHS, "the run did not stop before training ended"
    if signum != signal.SIGKILL:
        assert f"train: interrupted by {signum.name}; outputs left as they were" in first.output
    assert_training_stops(prepared)
    assert (prepared / "dvc.lock").read_text() == lock
    assert_cache_intact(prepared)

    second = Repro(prepared, "train")
    assert second.finish() == 0, second.output
    done_before = epochs_run(first.output)
    assert f"train: resuming after epoch {len(done_before)}/{EPOCHS}" in second.output
    assert sorted(done_before + epochs_run(second.output)) == list(range(1, EPOCHS + 1))
    assert not (prepared / ".resume/train").exists() or not any((prepared / ".resume/train").iterdir())

    # The resumed result equals an uninterrupted run's, to the byte (dvc.lock holds every output's md5).
    assert (prepared / "dvc.lock").read_text() == uninterrupted_lock


@pytest.mark.parametrize("shell", [pytest.param("/bin/bash", marks=SLOW_VARIANT), "/bin/sh"])  # DVC runs `$SHELL -c`
def test_killing_only_dvc_also_stops_training(prepared: Path, shell: str) -> None:
    run = Repro(prepared, "train", shell=shell)
    run.wait_for(f"epoch 1/{EPOCHS}")
    os.kill(run.process.pid, signal.SIGKILL)
    run.finish(timeout=30)
    assert_training_stops(prepared)
    assert not (prepared / "models/model.keras").exists(), "training ran to its end instead of stopping"


def test_a_damaged_resume_state_means_a_logged_restart_from_epoch_one(prepared: Path, uninterrupted_lock: str) -> None:
    first = Repro(prepared, "train")
    first.wait_for(f"epoch 1/{EPOCHS}")
    os.killpg(first.process.pid, signal.SIGKILL)
    first.finish(timeout=30)
    (weights,) = (prepared / ".resume/train").glob("*/epoch-*.keras")
    weights.write_bytes(b"0")

    second = Repro(prepared, "train")
    assert second.finish() == 0, second.output
    assert "train: discarding unusable resume state" in second.output
    assert epochs_run(second.output) == list(range(1, EPOCHS + 1))
    assert (prepared / "dvc.lock").read_text() == uninterrupted_lock  # the restart's model bytes are a clean run's


@pytest.mark.slow  # DVC's own lock; the default tier covers one interrupted run
def test_a_second_repro_fails_fast_while_the_first_completes(prepared: Path) -> None:
    first = Repro(prepared)
    first.wait_for(f"epoch 1/{EPOCHS}")
    second = dvc(prepared, "repro", check=False)
    assert second.returncode != 0
    assert first.process.poll() is None, "the second repro waited for the first instead of failing at once"
    assert "is busy, it is being blocked by" in second.stderr
    assert first.finish() == 0, first.output
    assert dvc(prepared, "status").stdout.strip() == "Data and pipelines are up to date."


@pytest.mark.slow  # DVC's own bookkeeping after a failed stage
def test_a_failing_evaluate_keeps_upstream_stages_recorded(prepared: Path) -> None:
    evaluate = prepared / "stages/evaluate.py"
    original = evaluate.read_text()
    evaluate.write_text("raise SystemExit(3)\n" + original)  # a bug in evaluate
    failed = dvc(prepared, "repro", check=False)
    assert failed.returncode != 0
    lock = (prepared / "dvc.lock").read_text()
    assert "\n  train:\n" in lock and "\n  evaluate:\n" not in lock
    assert_cache_intact(prepared)

    evaluate.write_text(original)
    fixed = dvc(prepared, "repro").stdout
    assert "Running stage 'evaluate'" in fixed and "Running stage 'train'" not in fixed


def test_a_mirror_with_corrupted_files_is_refused_and_the_previous_data_recovered(prepared: Path) -> None:
    lock = (prepared / "dvc.lock").read_text()
    mirror = prepared.parent / "bad-mirror"
    mirror.mkdir()
    params = yaml.safe_load((prepared / "params.yaml").read_text())
    (good,) = params["fetch"]["sources"]  # the tiny dataset's directory
    for source in Path(good).iterdir():
        (mirror / source.name).write_bytes(source.read_bytes()[:-100])  # truncated downloads
    params["fetch"]["sources"] = [str(mirror)]
    (prepared / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    failed = dvc(prepared, "repro", check=False)
    assert failed.returncode != 0
    assert f"fetch: error: cannot fetch train-images-idx3-ubyte: tried {mirror}: " in failed.stderr
    stages = yaml.safe_load((prepared / "dvc.lock").read_text())["stages"]
    del stages["check_params"]  # it checked the new params (valid) and recorded them; nothing else changed
    assert stages == {name: entry for name, entry in yaml.safe_load(lock)["stages"].items() if name != "check_params"}
    assert_cache_intact(prepared)

    git(prepared, "checkout", "params.yaml")
    dvc(prepared, "checkout", "--force", "fetch")  # the previous good data/raw, back from the cache
    assert dvc(prepared, "status", "prepare").stdout.strip() == "Data and pipelines are up to date."


def test_a_corrupted_cache_object_is_detected_and_recovered_from_the_remote(prepared: Path, tmp_path: Path) -> None:
    dvc(prepared, "remote", "add", "--local", "--default", "team", str(tmp_path / "remote"))
    dvc(prepared, "remote", "modify", "--local", "team", "verify", "true")
    dvc(prepared, "push")
    test_split = prepared / "data/prepared/test.npz"
    good = test_split.read_bytes()
    md5 = hashlib.md5(good).hexdigest()
    cached = prepared / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    cached.chmod(0o644)
    with open(cached, "ab") as handle:
        handle.write(b"bit rot")

    check = run([sys.executable, "-m", "fmnist.dvc_gaps.check_cache"], cwd=prepared, check=False)
    assert check.returncode == 1
    assert f"corrupted: {cached}" in check.stderr
    assert "1 of " in check.stderr

    assert (
        run([sys.executable, "-m", "fmnist.dvc_gaps.check_cache", "--remove"], cwd=prepared, check=False).returncode
        == 1
    )
    test_split.unlink()
    dvc(prepared, "pull", "--force", "prepare")
    assert test_split.read_bytes() == good
    assert run([sys.executable, "-m", "fmnist.dvc_gaps.check_cache"], cwd=prepared).returncode == 0
    assert_cache_intact(prepared)


def test_a_corrupted_remote_object_fails_the_pull_instead_of_reaching_the_workspace(
    prepared: Path, tmp_path: Path
) -> None:
    remote = tmp_path / "remote"
    dvc(prepared, "remote", "add", "--local", "--default", "team", str(remote))
    dvc(prepared, "remote", "modify", "--local", "team", "verify", "true")
    dvc(prepared, "push")
    md5 = hashlib.md5((prepared / "data/prepared/test.npz").read_bytes()).hexdigest()
    on_remote = remote / "files/md5" / md5[:2] / md5[2:]
    on_remote.chmod(0o644)
    on_remote.write_bytes(on_remote.read_bytes()[:-10])
    cached = prepared / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    cached.chmod(0o644)
    cached.unlink()
    (prepared / "data/prepared/test.npz").unlink()

    pulled = dvc(prepared, "pull", check=False)
    assert pulled.returncode != 0
    assert not (prepared / "data/prepared/test.npz").exists()
    assert_cache_intact(prepared)


@pytest.mark.slow  # tests/test_bad_params.py covers a wrong-typed value in the default tier
def test_a_wrong_typed_param_fails_before_training_and_the_model_is_recoverable(prepared: Path) -> None:
    set_param(prepared, "train.epochs", "1")
    set_param(prepared, "train.batch_size", "16")
    dvc(prepared, "repro", "train")
    lock = (prepared / "dvc.lock").read_text()
    model = (prepared / "models/model.keras").read_bytes()
    set_param(prepared, "train.epochs", '"three"')

    failed = dvc(prepared, "repro", "train", check=False)
    assert failed.returncode != 0
    assert "check_params: error: params.yaml: 'train.epochs' must be int, got 'three'" in failed.stderr
    assert "epoch " not in failed.stdout
    assert (prepared / "dvc.lock").read_text() == lock
    assert_cache_intact(prepared)

    set_param(prepared, "train.epochs", "1")
    fixed = dvc(prepared, "repro", "train").stdout  # check_params stopped DVC before it deleted train's outputs
    assert "epoch " not in fixed
    assert (prepared / "models/model.keras").read_bytes() == model
    assert (prepared / "dvc.lock").read_text() == lock
