"""Several hosts over TLS, as docs/cluster.md tells them: `fmnist-sweep certs`, a `dask scheduler` and two
`dask worker`s, each started from its own git clone of the project (cwd the clone, no PYTHONPATH, the venv's
`dask`), a 2-point sweep on the tiny dataset submitted with the client certificate, resubmitted (nothing trains)
and taken into a teammate's workspace; hosts without the certificate refused; every socket those processes listen
on is on 127.0.0.1.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from conftest import VENV_BIN, dvc, git, listening_sockets, run, tool_env

from fmnist.dvc_gaps.check_cache import corrupted_objects
from fmnist.runner import exit_with_parent
from fmnist.sweep import clusters

GRID = ["-S", "train.epochs=1,2"]
REFUSED_SECONDS = 15  # the refusals below took 1–3 s here: starting Python and dask is most of it


@dataclass(frozen=True)
class Team:
    project: Path  # the submitting clone
    origin: Path  # bare git remote
    storage: Path  # DVC remote (a directory)


def team_remotes(project: Path) -> Team:
    """The tiny project on a bare git remote and a directory DVC remote, as `make_sweep` in test_sweep_dask does."""
    root = project.parent
    git(root, "init", "-q", "--bare", "--initial-branch=main", "origin.git")
    git(project, "remote", "add", "origin", str(root / "origin.git"))
    git(project, "push", "-q", "origin", "HEAD:refs/heads/main")
    dvc(project, "remote", "add", "--local", "--default", "team", str(root / "storage"))
    return Team(project, root / "origin.git", root / "storage")


def host_env(host: Path) -> dict[str, str]:
    """A host of its own: HOME, DVC cache and scratch under `host`; no PYTHONPATH."""
    env = {key: value for key, value in tool_env().items() if key != "PYTHONPATH"}
    return env | {
        "HOME": str(host / "home"),
        "SWEEP_CACHE": str(host / "dvc-cache"),
        "SWEEP_SCRATCH": str(host / "scratch"),
    }


def tls_flags(certs: Path, role: str) -> list[str]:
    return ["--tls-ca-file", f"{certs}/ca.pem", "--tls-cert", f"{certs}/{role}.pem", "--tls-key", f"{certs}/{role}.key"]


def dask_command(clone: Path, *args: str) -> subprocess.Popen[bytes]:
    host = clone.parent
    (host / "home").mkdir(exist_ok=True)
    log = (host / f"{args[0]}.log").open("ab")
    return subprocess.Popen(
        [str(VENV_BIN / "dask"), *args], cwd=clone, env=host_env(host), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, preexec_fn=exit_with_parent,
    )  # fmt: skip


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in reversed(processes):  # workers first
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def clone_host(team: Team, root: Path, name: str) -> Path:
    """A machine of the cluster: a directory holding a git clone of the project."""
    (root / name).mkdir(parents=True)
    git(root / name, "clone", "-q", str(team.origin), "fashion-mnist")
    return root / name / "fashion-mnist"


@dataclass(frozen=True)
class Cluster:
    scheduler_file: Path
    certs: Path
    processes: list[subprocess.Popen[bytes]]


@contextmanager
def tls_cluster(team: Team, root: Path) -> Iterator[Cluster]:
    """The docs/cluster.md recipe: certificates, then the scheduler and two workers, each from its own clone."""
    certs = root / "certs"
    made = run([sys.executable, "-m", "fmnist.sweep", "certs", str(certs)], cwd=team.project)
    assert made.stdout.count("600  ") == 4, made.stdout
    scheduler_file = root / "scheduler.json"
    scheduler = dask_command(
        clone_host(team, root, "host-a"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--protocol", "tls",
        *tls_flags(certs, "scheduler"), "--scheduler-file", str(scheduler_file), "--dashboard-address", "127.0.0.1:0",
    )  # fmt: skip
    processes = [scheduler]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            assert time.monotonic() < deadline and scheduler.poll() is None, "the scheduler never wrote its file"
            time.sleep(0.2)
        for name in ("host-b", "host-c"):
            worker = ["worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1", "--name", name,
                      "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0",
                      *tls_flags(certs, "worker")]  # fmt: skip
            processes.append(dask_command(clone_host(team, root, name), *worker))
        with clusters.connect_scheduler(None, str(scheduler_file), certs, False, clusters.CONNECT_SECONDS) as client:
            client.wait_for_workers(2, timeout=60)
        yield Cluster(scheduler_file, certs, processes)
    finally:
        stop(processes)


def sweep(team: Team, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = run([sys.executable, "-m", "fmnist.sweep", "run", *args], cwd=team.project, check=False)
    return result, time.monotonic() - started


def finished(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(("done ", "FAILED "))]


def test_two_worker_hosts_over_tls_publish_a_sweep_and_hosts_without_the_certificate_are_refused(
    tiny_project: Path, tmp_path: Path
) -> None:
    team = team_remotes(tiny_project)
    with tls_cluster(team, tmp_path / "cluster") as cluster:
        sockets = listening_sockets(*(psutil.Process(process.pid) for process in cluster.processes))
        # scheduler comm + HTTP; per worker host: nanny, worker comm, worker HTTP
        assert len(sockets) == 8 and {address for _, address, _ in sockets} == {"127.0.0.1"}, sockets

        # A worker host without the certificate, and one with a certificate of another CA: refused, not joined.
        rogue = tmp_path / "rogue-certs"
        run([sys.executable, "-m", "fmnist.sweep", "certs", str(rogue)], cwd=team.project)
        outsider = clone_host(team, tmp_path / "cluster", "host-d")
        for flags in ([], tls_flags(rogue, "worker")):
            started = time.monotonic()
            worker = dask_command(outsider, "worker", "--scheduler-file", str(cluster.scheduler_file), "--nthreads",
                                  "1", "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0", *flags)  # fmt: skip
            assert worker.wait(timeout=60) != 0
            assert time.monotonic() - started < REFUSED_SECONDS
        log = (outsider.parent / "worker.log").read_text()
        assert "TLS expects a `ssl_context` argument" in log and "TLS certificate does not match" in log, log

        # A client without the certificate, and one with another CA's: one line each, nothing submitted.
        address = json.loads(cluster.scheduler_file.read_text())["address"]
        where = ["--scheduler-file", str(cluster.scheduler_file)]
        no_cert, seconds = sweep(team, *GRID, *where)
        assert (no_cert.returncode, no_cert.stderr) == (
            1, f"sweep: error: the scheduler {address} speaks TLS: pass --tls-dir DIR holding ca.pem, client.pem, "
               "client.key\n",
        ) and seconds < REFUSED_SECONDS  # fmt: skip
        wrong_ca, seconds = sweep(team, *GRID, *where, "--tls-dir", str(rogue))
        assert wrong_ca.returncode == 1 and seconds < REFUSED_SECONDS
        assert wrong_ca.stderr.startswith(f"sweep: error: cannot reach the Dask scheduler at {address}: TLS cert")
        assert len(wrong_ca.stderr.splitlines()) == 1, wrong_ca.stderr
        assert git(team.origin, "for-each-ref", "refs/exps/") == ""

        swept, _ = sweep(team, *GRID, *where, "--tls-dir", str(cluster.certs))
        assert swept.returncode == 0, swept.stdout + swept.stderr
        lines = finished(swept.stdout)
        hosts = {line.split(" on ")[-1].split("@")[0] for line in lines}
        assert len(lines) == 2 and hosts <= {"host-b", "host-c"}, lines
        assert all(" trained on host-" in line for line in lines), lines
        assert len(git(team.origin, "for-each-ref", "refs/exps/").splitlines()) == 2
        assert "sweep: 2 of 2 points done" in swept.stdout
        assert corrupted_objects(team.storage) == []  # two hosts pushed into it

        again, _ = sweep(team, *GRID, *where, "--tls-dir", str(cluster.certs))
        assert again.returncode == 0, again.stdout + again.stderr
        assert [" published before " in line for line in finished(again.stdout)] == [True, True], again.stdout
    names = [line.split()[-1] for line in swept.stdout.splitlines() if line.startswith("train.epochs=")]

    # A teammate lists the points and takes one into the workspace, as docs/sweeps.md says.
    teammate = clone_host(team, tmp_path, "teammate")
    dvc(teammate, "remote", "add", "--local", "--default", "team", str(team.storage))
    git(teammate, "fetch", "-q", "origin", "+refs/exps/*:refs/exps/*")
    shown = dvc(teammate, "exp", "show", "--csv", "--keep", "^(Experiment|train.epochs)$", "--drop", ".*").stdout
    assert sorted(row["Experiment"] for row in csv.DictReader(shown.splitlines()) if row["Experiment"]) == sorted(names)
    dvc(teammate, "exp", "pull", "origin", names[0])  # its outputs from the DVC remote: without them apply fails
    dvc(teammate, "exp", "apply", names[0])
    assert "Data and pipelines are up to date." in dvc(teammate, "status").stdout


def test_an_unencrypted_scheduler_off_loopback_is_refused_unless_insecure(tiny_project: Path) -> None:
    team = team_remotes(tiny_project)
    started = time.monotonic()
    refused, _ = sweep(team, *GRID, "--scheduler", "tcp://192.0.2.7:8786")  # TEST-NET-1: never contacted
    assert refused.returncode == 1
    assert refused.stderr == (
        "sweep: error: refusing the unencrypted scheduler tcp://192.0.2.7:8786: anyone who reaches it can run code on "
        "the workers; start it with TLS (docs/cluster.md) and pass --tls-dir, or pass --insecure on a network you "
        "trust\n"
    )
    assert time.monotonic() - started < REFUSED_SECONDS
    clusters.check_address("tcp://192.0.2.7:8786", None, insecure=True)  # allowed: the user said so
    clusters.check_address("tcp://127.0.0.1:8786", None, insecure=False)  # loopback: only this machine reaches it
    with pytest.raises(clusters.ClusterError, match="refusing the unencrypted scheduler"):
        clusters.check_address("ws://192.0.2.7:8786", None, insecure=False)


def test_certs_are_made_once_with_private_keys(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    clusters.make_certs(certs)
    assert oct(certs.stat().st_mode & 0o777) == "0o700"
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in certs.iterdir()}
    assert modes == {f"{name}.{ext}": ("0o600" if ext == "key" else "0o644")
                     for name in ("ca", "scheduler", "worker", "client") for ext in ("pem", "key")}  # fmt: skip
    verified = subprocess.run(["openssl", "verify", "-CAfile", certs / "ca.pem", *(certs / f"{role}.pem"
                               for role in clusters.ROLES)], capture_output=True, text=True)  # fmt: skip
    assert verified.returncode == 0 and verified.stdout.count(": OK") == 3, verified.stdout + verified.stderr
    with pytest.raises(clusters.ClusterError, match="already holds certificates: pass --force"):
        clusters.make_certs(certs)
    before = (certs / "ca.pem").read_bytes()
    clusters.make_certs(certs, force=True)
    assert (certs / "ca.pem").read_bytes() != before
