"""Sweeps on Dask: a real `dask scheduler` and two `dask worker` processes on 127.0.0.1, each with its own HOME and
scratch directory as if on two machines, a bare git repository as the git remote and a directory as the DVC remote.
Real `dvc`, 1 epoch per point: on the tiny dataset, and on the real data in the slow tier (over SSH).
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import (
    VENV_BIN,
    copy_project,
    dvc,
    git,
    make_project,
    requires_debian_data,
    run,
    runs_under,
    set_param,
    tool_env,
)
from sshd import SSHServer, requires_sshd, running_sshd

from fmnist.dvc_gaps.check_cache import cache_objects, corrupted_objects
from fmnist.runner import exit_with_parent

GRID = ["-S", "train.dropout=0.0,0.3", "-S", "train.seed=1,2"]
LARGEST_OBJECT = 172_535_510  # bytes of data/prepared/train.npz: an upload of it takes long enough to be caught
WORKERS = ("w1", "w2")


@dataclass(frozen=True)
class Sweep:
    """The submitting clone, its git remote (a bare repository) and its DVC remote (a directory)."""

    project: Path
    origin: Path
    storage: Path


@dataclass(frozen=True)
class Cluster:
    scheduler_file: Path
    workers: Mapping[str, subprocess.Popen[bytes]]


def submit(sweep: Sweep, cluster: Cluster | None, *args: str) -> subprocess.CompletedProcess[str]:
    where = ["--scheduler-file", str(cluster.scheduler_file if cluster else sweep.project / "no-scheduler.json")]
    return run([sys.executable, "-m", "fmnist.sweep", "run", *args, *where], cwd=sweep.project, check=False)


def exp_refs(origin: Path) -> list[str]:
    return git(origin, "for-each-ref", "--format=%(refname)", "refs/exps/").split()


def remote_objects_sound(storage: Path) -> int:
    """How many objects the DVC remote holds, after re-hashing each (none may be corrupted). Names starting with
    a dot are an interrupted upload's temporary files, which DVC never reads as objects."""
    assert [path for path in corrupted_objects(storage) if not path.name.startswith(".")] == []
    return sum(1 for path, _ in cache_objects(storage) if not path.name.startswith("."))


def make_sweep(
    root: Path,
    remotes: Path,
    git_url: str,
    storage_url: str,
    push_data: bool = True,
    template: Path | None = None,
    **storage_options: str,
) -> Sweep:
    """A 1-epoch project on its git remote (a bare repository under `remotes`); with `push_data`, fetch and prepare
    run once and pushed to its DVC remote (`remotes`/storage), as a team would have them. A copy of `template`
    (a project nothing ran in) if given, else the project on the real data."""
    project = copy_project(template, root / "project") if template else make_project(root / "project")
    set_param(project, "train.epochs", "1")
    git(project, "commit", "-qam", "one epoch")
    git(remotes, "init", "-q", "--bare", "--initial-branch=main", "origin.git")
    git(project, "remote", "add", "origin", git_url)
    git(project, "push", "-q", "origin", "HEAD:refs/heads/main")
    dvc(project, "remote", "add", "--local", "--default", "team", storage_url)
    for option, value in storage_options.items():
        dvc(project, "remote", "modify", "--local", "team", option, value)
    if push_data:
        dvc(project, "repro", "prepare")
        run([sys.executable, "-m", "fmnist.dvc_gaps.share", "push"], cwd=project)
    return Sweep(project, remotes / "origin.git", remotes / "storage")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, tiny_template: Path) -> Sweep:
    """On the tiny dataset."""
    root = tmp_path_factory.mktemp("sweep")
    return make_sweep(root, root, str(root / "origin.git"), str(root / "storage"), template=tiny_template)


def data_directory(project: Path) -> str:
    """The directory of the project's dataset (the tiny one), its only fetch source."""
    (source,) = yaml.safe_load((project / "params.yaml").read_text())["fetch"]["sources"]
    return source


@contextmanager
def dask_cluster(root: Path, home: Path | None = None) -> Iterator[Cluster]:
    """`dask scheduler` and one `dask worker` per name, each worker in its own session, HOME (a copy of `home`, if
    given) and scratch. Workers see this process's environment as it is now."""
    from distributed import Client

    root.mkdir()
    scheduler_file = root / "scheduler.json"
    env = tool_env()
    processes = [
        subprocess.Popen(
            [str(VENV_BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
             "--scheduler-file", str(scheduler_file), "--no-dashboard"],
            cwd=root, env=env, stdout=(root / "scheduler.log").open("wb"), stderr=subprocess.STDOUT,
            preexec_fn=exit_with_parent,
        )
    ]  # fmt: skip
    deadline = time.monotonic() + 60
    while not scheduler_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = {}
    for name in WORKERS:
        machine = root / name
        shutil.copytree(home, machine / "home") if home else (machine / "home").mkdir(parents=True)
        workers[name] = subprocess.Popen(
            [str(VENV_BIN / "dask"), "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
             "--name", name, "--no-nanny"],
            cwd=machine, env=env | {"HOME": str(machine / "home"), "SWEEP_SCRATCH": str(machine / "scratch")},
            stdout=(machine / "worker.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=exit_with_parent,
        )  # fmt: skip
    processes.extend(workers.values())
    try:
        with Client(scheduler_file=str(scheduler_file), timeout=60) as client:
            client.wait_for_workers(len(WORKERS), timeout=60)
        yield Cluster(scheduler_file, workers)
    finally:
        for process in reversed(processes):  # workers first: without a scheduler they linger, reconnecting
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL) if process in workers.values() else process.kill()
                process.wait()


@pytest.fixture(scope="module")
def cluster(sweep: Sweep) -> Iterator[Cluster]:
    with dask_cluster(sweep.project.parent / "cluster") as running:
        yield running


def finished(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(("done ", "FAILED "))]


@pytest.mark.slow  # tests/test_sweep_cluster.py runs a sweep on worker hosts, its resubmit and a teammate's view
def test_a_2x2_grid_lands_in_exp_show_of_a_teammate_and_a_resubmit_trains_nothing(
    sweep: Sweep, cluster: Cluster
) -> None:
    swept = submit(sweep, cluster, *GRID)
    assert swept.returncode == 0, swept.stdout + swept.stderr
    lines = finished(swept.stdout)
    assert len(lines) == 4 and all(" trained on w" in line for line in lines), swept.stdout
    assert "progress: 4 done, 0 running, 0 failed, 0 waiting" in swept.stdout
    names = [line.split()[-1] for line in swept.stdout.splitlines()[-5:-1]]  # the table's experiment column
    assert len(exp_refs(sweep.origin)) == 4 and all(name.startswith("sweep-") for name in names)
    assert remote_objects_sound(sweep.storage) > 0  # two workers pushed into it at once

    teammate = sweep.project.parent / "teammate"
    git(sweep.project.parent, "clone", "-q", str(sweep.origin), teammate.name)
    dvc(teammate, "remote", "add", "--local", "--default", "team", str(sweep.storage))
    git(teammate, "fetch", "-q", "origin", "+refs/exps/*:refs/exps/*")  # docs/sweeps.md's recipe, as written
    shown = dvc(teammate, "exp", "show", "--csv", "--keep", "^(Experiment|train.dropout|train.seed|.*accuracy)$",
                "--drop", ".*").stdout  # fmt: skip
    rows = {row["Experiment"]: row for row in csv.DictReader(shown.splitlines()) if row["Experiment"]}
    assert sorted(rows) == sorted(names)
    table = {line.split()[-1]: line.split() for line in swept.stdout.splitlines()[-5:-1]}
    for name, row in rows.items():
        point = dict(item.split("=") for item in table[name][:2])
        assert (row["train.dropout"], row["train.seed"]) == (point["train.dropout"], point["train.seed"])
        assert round(float(row["validation.accuracy"]), 4) == float(table[name][3])
    picked = names[0]
    dvc(teammate, "exp", "pull", "origin", picked)  # its outputs from the DVC remote: without them apply fails
    dvc(teammate, "exp", "apply", picked)
    point = dict(item.split("=") for item in table[picked][:2])
    assert yaml.safe_load((teammate / "params.yaml").read_text())["train"]["seed"] == int(point["train.seed"])
    assert "Data and pipelines are up to date." in dvc(teammate, "status").stdout  # the point's outputs, checked out

    set_param(teammate, "train.dropout", "0.3")
    set_param(teammate, "train.seed", "2")
    repro = dvc(teammate, "repro", "--pull").stdout
    assert "Stage 'train' is cached - skipping run" in repro and "Running stage" not in repro, repro

    again = submit(sweep, cluster, *GRID)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(finished(again.stdout)) == 4 and all("published before" in line for line in finished(again.stdout))
    assert len(exp_refs(sweep.origin)) == 4


@pytest.mark.slow  # the default tier runs whole sweeps (tests/test_sweep_cluster.py, test_sweep_interrupt.py)
def test_a_failing_point_reports_the_stage_error_and_the_others_finish(sweep: Sweep, cluster: Cluster) -> None:
    grid = ["-S", f"fetch.sources=[/nowhere],[{data_directory(sweep.project)}]", "-S", "train.seed=3"]
    swept = submit(sweep, cluster, *grid)
    assert swept.returncode == 1
    failed = [line for line in finished(swept.stdout) if line.startswith("FAILED")]
    assert failed == [
        "FAILED fetch.sources=[/nowhere] train.seed=3: fetch: error: cannot fetch train-images-idx3-ubyte: "
        "tried /nowhere: file not found. To fix: install Debian's package with 'apt-get install "
        "dataset-fashion-mnist', or list a directory holding the four files under 'fetch.sources' in params.yaml"
    ]
    assert "sweep: 1 of 2 points done, 1 failed" in swept.stdout
    assert not any("nowhere" in ref for ref in exp_refs(sweep.origin))


@pytest.mark.slow  # the default tier runs whole sweeps (tests/test_sweep_cluster.py, test_sweep_interrupt.py)
def test_a_worker_killed_mid_training_has_its_point_rerun_and_published_once(sweep: Sweep) -> None:
    grid = ["-S", "train.dropout=0.5", "-S", "train.seed=1,2", "-S", "train.epochs=2"]
    with dask_cluster(sweep.project.parent / "cluster-kill") as running:
        driver = subprocess.Popen(
            [sys.executable, "-m", "fmnist.sweep", "run", *grid, "--scheduler-file", str(running.scheduler_file)],
            cwd=sweep.project, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        victim = psutil.Process(running.workers["w1"].pid)
        deadline = time.monotonic() + 300
        while not runs_under(victim, "stages.train"):
            assert driver.poll() is None, f"the sweep ended before w1 started training:\n{driver.communicate()[0]}"
            assert time.monotonic() < deadline, "w1 never started training"
            time.sleep(0.2)
        os.killpg(victim.pid, signal.SIGKILL)  # the machine is gone: the worker and everything it started
        output, _ = driver.communicate(timeout=600)
    assert driver.returncode == 0, output
    lines = finished(output)
    assert len(lines) == 2 and all(" on w2@" in line for line in lines), output
    refs = [ref for ref in exp_refs(sweep.origin) if "dropout0.5" in ref]
    assert len(refs) == 2
    assert remote_objects_sound(sweep.storage) > 0


def test_bad_grid_values_and_unpushed_commits_fail_before_anything_is_submitted(sweep: Sweep) -> None:
    refs, objects = exp_refs(sweep.origin), sorted(sweep.storage.rglob("*"))
    bad = submit(sweep, None, "-S", "train.dropout=0.1,1.5")  # no scheduler exists: nothing may be contacted
    assert bad.returncode == 1
    assert bad.stderr.strip() == "sweep: error: -S train.dropout=1.5: 'train.dropout' must be in [0, 1), got 1.5"

    git(sweep.project, "commit", "-q", "--allow-empty", "-m", "not pushed")
    try:
        unpushed = submit(sweep, None, "-S", "train.dropout=0.1")
        commit = git(sweep.project, "rev-parse", "--short=7", "HEAD").strip()
    finally:
        git(sweep.project, "reset", "-q", "--hard", "HEAD~1")
    assert unpushed.returncode == 1
    assert unpushed.stderr.strip() == (
        f"sweep: error: commit {commit} is not on git remote 'origin': workers clone from there; "
        "push it first (git push origin HEAD)"
    )
    assert exp_refs(sweep.origin) == refs and sorted(sweep.storage.rglob("*")) == objects


@contextmanager
def ssh_sweep(root: Path, monkeypatch: pytest.MonkeyPatch, push_data: bool = True) -> Iterator[tuple[SSHServer, Sweep]]:
    """A real sshd serving both remotes: git over SSH (OpenSSH, as GIT_SSH_COMMAND) and the DVC remote over SFTP."""
    (root / "sshd").mkdir()
    with running_sshd(root / "sshd") as server:
        known_hosts = server.home / ".ssh/known_hosts"
        monkeypatch.setenv(
            "GIT_SSH_COMMAND", f"ssh -i {server.key} -o IdentitiesOnly=yes -o UserKnownHostsFile={known_hosts}"
        )
        git_url = f"ssh://{server.user}@127.0.0.1:{server.port}{server.store}/origin.git"
        yield server, make_sweep(root, server.store, git_url, f"{server.url}/storage", push_data,
                                 port=str(server.port), user=server.user, keyfile=str(server.key))  # fmt: skip


@requires_debian_data
@requires_sshd
@pytest.mark.slow
def test_git_and_dvc_remotes_over_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both remotes on a real sshd: workers clone over SSH, pull the prepared data and publish over SFTP."""
    with ssh_sweep(tmp_path, monkeypatch) as (server, sweep):
        with dask_cluster(tmp_path / "cluster", home=server.home) as running:  # whose known_hosts has the server
            swept = submit(sweep, running, "-S", "train.dropout=0.2,0.4")
            assert swept.returncode == 0, swept.stdout + swept.stderr
            assert len(finished(swept.stdout)) == 2 and "2 of 2 points done" in swept.stdout
            assert len(exp_refs(sweep.origin)) == 2
            assert remote_objects_sound(sweep.storage) > 0

            # What a push killed midway leaves over SFTP: a truncated object at its final path, skipped as present.
            digest = hashlib.md5((sweep.project / "data/prepared/train.npz").read_bytes()).hexdigest()
            truncated = sweep.storage / "files/md5" / digest[:2] / digest[2:]
            truncated.chmod(0o644)
            truncated.write_bytes(truncated.read_bytes()[:1000])
            again = submit(sweep, running, "-S", "train.dropout=0.6")
        assert again.returncode == 0, again.stdout + again.stderr
        assert remote_objects_sound(sweep.storage) > 0  # repaired before the new point's ref was published


def pushing_worker(cluster: Cluster) -> psutil.Process | None:
    """The worker one of whose processes is uploading (`fmnist.dvc_gaps.share push`), if any."""
    for process in cluster.workers.values():
        worker = psutil.Process(process.pid)
        if runs_under(worker, "fmnist.dvc_gaps.share"):
            return worker
    return None


@requires_debian_data
@requires_sshd
@pytest.mark.slow
def test_a_worker_killed_while_pushing_over_sftp_leaves_no_truncated_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The remote starts empty, so the point's first push uploads the prepared data; its worker dies mid-upload.

    With dvc-ssh 4.3.0 the upload went through a temporary `.…tmp` name both times this was run, and the kill left
    that file behind, not a truncated object under its final name; `test_git_and_dvc_remotes_over_ssh` covers
    the latter (treeverse/dvc #10498) by truncating an object itself."""
    with ssh_sweep(tmp_path, monkeypatch, push_data=False) as (server, sweep):
        objects = sweep.storage / "files/md5"
        with dask_cluster(tmp_path / "cluster", home=server.home) as running:
            driver = subprocess.Popen(
                [sys.executable, "-m", "fmnist.sweep", "run", "-S", "train.dropout=0.2",
                 "--scheduler-file", str(running.scheduler_file)],
                cwd=sweep.project, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
            deadline, killed = time.monotonic() + 400, None
            while killed is None:
                assert time.monotonic() < deadline and driver.poll() is None, "never caught an upload in flight"
                growing = [path for path in objects.rglob("*") if path.is_file() and path.stat().st_size > 1 << 20]
                worker = pushing_worker(running) if growing else None
                if worker and any(path.stat().st_size < LARGEST_OBJECT for path in growing):
                    os.killpg(worker.pid, signal.SIGKILL)
                    killed = [path for path in growing if path.stat().st_size < LARGEST_OBJECT]
                time.sleep(0.02)
            output, _ = driver.communicate(timeout=600)
        assert driver.returncode == 0, output
        assert len(exp_refs(sweep.origin)) == 1
        assert remote_objects_sound(sweep.storage) > 0, killed


def test_points_on_a_local_cluster_do_not_inherit_the_nannys_malloc_setting() -> None:
    """The nanny of `fmnist.sweep run`'s LocalCluster sets MALLOC_TRIM_THRESHOLD_ for its worker; inherited by the train
    stage it made every step map and unmap its gradients (a 60-epoch point took 125 s instead of 75 s)."""
    import argparse

    from fmnist.sweep import driver as sweep_run
    from fmnist.sweep import task as sweep_point

    with sweep_run.connect(argparse.Namespace(scheduler=None, scheduler_file=None, workers=1)) as client:
        seen = client.run(
            lambda: ("MALLOC_TRIM_THRESHOLD_" in os.environ, "MALLOC_TRIM_THRESHOLD_" in sweep_point.tool_env())
        )
    assert list(seen.values()) == [(True, False)]
