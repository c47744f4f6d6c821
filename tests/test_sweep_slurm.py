"""`fmnist-sweep run --slurm`: a real Slurm on 127.0.0.1 (.ci/slurm-up.sh), a 2-point sweep on the tiny dataset
whose Dask workers are Slurm jobs (dask-jobqueue, TLS), then a teammate's clone sees both points and a resubmit
trains nothing. Needs root and Debian's slurm-wlm and munge (.ci/run installs them).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import REPO_ROOT, dvc, git, listening_sockets, tool_env
from test_sweep_cluster import GRID, finished, team_remotes

pytestmark = [
    pytest.mark.skipif(shutil.which("slurmctld") is None, reason="needs Slurm: apt-get install slurm-wlm munge"),
    pytest.mark.skipif(os.geteuid() != 0, reason="starts slurmctld, slurmd and munged: needs root"),
]


@pytest.fixture
def slurm(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A one-node Slurm for this test; the environment its clients need."""
    env = tool_env() | {"SLURM_BASE": str(tmp_path / "slurm")}
    up = subprocess.run(["bash", str(REPO_ROOT / ".ci/slurm-up.sh")], env=env, capture_output=True, text=True)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield env | {"SLURM_CONF": str(tmp_path / "slurm/etc/slurm.conf")}
    finally:
        down = subprocess.run(["bash", str(REPO_ROOT / ".ci/slurm-down.sh")], env=env, capture_output=True, text=True)
        assert down.returncode == 0, down.stdout + down.stderr


def listening(project: Path, driver: subprocess.Popen[str]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket the driver (the Dask scheduler runs in it) and the Slurm jobs' workers
    (their log directory is under the project's parent) and their children listen on."""
    roots = [psutil.Process(driver.pid)]
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "distributed.cli.dask_worker" in cmdline and str(project.parent) in cmdline:
            roots.append(process)
    return {(address, port) for _, address, port in listening_sockets(*roots)}


def slurm_sweep(project: Path, env: dict[str, str], *args: str) -> tuple[str, set[str], float, set[tuple[str, int]]]:
    """Run `fmnist.sweep run --slurm`; its output, the ids of the jobs squeue showed while it ran, its seconds and
    the sockets its processes listened on."""
    started = time.monotonic()
    driver = subprocess.Popen(
        [sys.executable, "-m", "fmnist.sweep", "run", *args, "--slurm", "--slurm-partition", "debug",
         "--slurm-memory", "2GB", "--slurm-walltime", "00:15:00", "--slurm-dir", str(project.parent / "slurm-jobs")],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    seen: set[str] = set()
    sockets: set[tuple[str, int]] = set()
    while driver.poll() is None:
        queue = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], env=env, capture_output=True, text=True).stdout
        seen |= {line.split()[0] for line in queue.splitlines() if line.split()[1:] == ["fmnist-sweep", "RUNNING"]}
        sockets |= listening(project, driver)
        assert time.monotonic() - started < 600, "the sweep took over 10 minutes"
        time.sleep(0.5)
    return driver.stdout.read(), seen, time.monotonic() - started, sockets


@pytest.mark.slow  # about 90 s
def test_a_sweep_whose_workers_are_slurm_jobs_lands_in_a_teammates_exp_show(
    tiny_project: Path, slurm: dict[str, str]
) -> None:
    team = team_remotes(tiny_project)
    env = slurm | {"SWEEP_SCRATCH": str(tiny_project.parent / "scratch")}
    # One DVC cache per job: two points running fetch at once into one shared cache collided on a run-cache
    # temporary file here ("No such file or directory: …/dvc-cache/runs/…/.….tmp"), see docs/cluster.md.
    cache = f"export SWEEP_CACHE={tiny_project.parent}/dvc-cache-$SLURM_JOB_ID"
    output, running, seconds, sockets = slurm_sweep(team.project, env, *GRID, "--slurm-prologue", cache)
    assert "sweep: 2 of 2 points done" in output, output
    jobs = next(line for line in output.splitlines() if line.startswith("sweep: Slurm jobs ")).split()[3:5]
    jobs = [job.strip(",") for job in jobs]
    assert running == set(jobs), (running, output)  # both worker jobs were RUNNING in squeue during the sweep
    assert "sweep: Dask scheduler tls://127.0.0.1:" in output
    # scheduler comm + HTTP, and per job a nanny, a worker and its HTTP server; all on loopback
    assert len(sockets) >= 2 + 2 * 3 and {address for address, _ in sockets} == {"127.0.0.1"}, sockets
    lines = finished(output)
    assert len(lines) == 2 and all(" trained on " in line for line in lines), output
    completed = subprocess.run(["sacct", "-c", "-X", "-P", "-n", "-o", "jobid,jobname,state"], env=env,
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert {line.split("|")[0] for line in completed.splitlines() if "|fmnist-sweep|" in line} == set(jobs), completed

    teammate = tiny_project.parent / "teammate"
    git(tiny_project.parent, "clone", "-q", str(team.origin), teammate.name)
    dvc(teammate, "remote", "add", "--local", "--default", "team", str(team.storage))
    git(teammate, "fetch", "-q", "origin", "+refs/exps/*:refs/exps/*")
    shown = dvc(teammate, "exp", "show", "--csv", "--keep", "^(Experiment|train.epochs|.*accuracy)$", "--drop", ".*")
    rows = [row for row in csv.DictReader(shown.stdout.splitlines()) if row["Experiment"]]
    assert sorted(row["train.epochs"] for row in rows) == ["1", "2"], shown.stdout
    assert all(row["validation.accuracy"] for row in rows), shown.stdout
    for ref in git(teammate, "for-each-ref", "--format=%(refname)", "refs/exps/").split():
        git(teammate, "checkout", "-q", "--detach", ref)  # each point's outputs are on the DVC remote
        dvc(teammate, "pull")
        assert (teammate / "models/model.keras").stat().st_size > 0

    # The resubmit uses the certificates of `fmnist-sweep certs` instead of throwaway ones.
    certs = tiny_project.parent / "certs"
    subprocess.run([sys.executable, "-m", "fmnist.sweep", "certs", str(certs)], cwd=team.project, env=env, check=True)
    again, _, _, _ = slurm_sweep(team.project, env, *GRID, "--slurm-prologue", cache, "--tls-dir", str(certs))
    assert len(finished(again)) == 2 and all("published before" in line for line in finished(again)), again
    assert len(git(team.origin, "for-each-ref", "refs/exps/").splitlines()) == 2
    assert seconds < 300, seconds


def test_a_job_slurm_would_reject_is_one_line_before_anything_is_queued(
    tiny_project: Path, slurm: dict[str, str]
) -> None:
    team = team_remotes(tiny_project)
    started = time.monotonic()
    refused = subprocess.run(
        [sys.executable, "-m", "fmnist.sweep", "run", *GRID, "--slurm", "--slurm-memory", "100TB",
         "--slurm-dir", str(tiny_project.parent / "slurm-jobs")],
        cwd=team.project, env=slurm, capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode == 1 and time.monotonic() - started < 30
    assert refused.stderr == (
        "sweep: error: Slurm refuses the worker job (1 core, 100TB, 02:00:00, the default partition): "
        "allocation failure: Requested node configuration is not available\n"
    )
    assert subprocess.run(["sacct", "-c", "-n"], env=slurm, capture_output=True, text=True).stdout == ""
