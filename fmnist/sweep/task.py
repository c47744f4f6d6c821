"""One sweep point, run as if on its own machine: clone, `dvc exp run --pull`, publish; the task a Dask worker runs.

Each run gets a fresh clone of the git remote at the submitted commit in its own scratch directory (parallel `dvc`
processes in one workspace collide on its lock) and the host's shared DVC cache, so the prepared data is pulled
once per host. `dvc exp run --pull` restores every stage whose run is already in the DVC remote's run-cache, so
fetch and prepare never re-run and a point trained anywhere before is restored, not retrained.

Publishing is ordered so that nothing is ever half-visible: first the outputs and run records go to the DVC remote
(`python -m fmnist.dvc_gaps.share push`: `dvc push --run-cache` plus the run records' outputs), then the
experiment's git ref, by `git push` of `refs/exps/…`, which is what `dvc exp push --no-cache` does; `dvc exp push`
alone pushes the ref before the outputs, and its own SSH client rejected a host that git's OpenSSH accepted. A point
whose ref is already on the git remote is not run again; a ref pushed meanwhile by another attempt of the same point
wins (git refuses to move an existing ref that is not an ancestor).

Hosts: `SWEEP_CACHE` (default `~/.cache/fashion-mnist-sweep/dvc-cache`) is the per-host cache and `SWEEP_SCRATCH`
(default: the system's temporary directory) holds the clones, each removed when its point ends.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fmnist.processes import VENV_BIN, tool_env

METRICS_FILES = ("reports/training/metrics.json", "reports/evaluation/metrics.json")
REPORTED_METRICS = ("validation.accuracy", "test.accuracy")
REMOTE_NAME = "sweep"
STAGE_ERROR = re.compile(r"^(?:fetch|prepare|train|evaluate): (?:error|interrupted)\b.*$", re.MULTILINE)
TRAINED = "trained"
RESTORED = "restored from the run-cache"
PUBLISHED_BEFORE = "published before"
PUBLISHED_MEANWHILE = "published meanwhile by another attempt"
FAILED = "failed"


@dataclass(frozen=True)
class PointJob:
    """Everything a worker needs, picklable: where the code is, which point, and where results go."""

    git_url: str
    commit: str
    name: str
    set_params: tuple[str, ...]
    dvc_remote: tuple[tuple[str, str], ...]  # ("url", …) first, then options such as ("port", "22")

    @property
    def exp_ref(self) -> str:
        return f"refs/exps/{self.commit[:2]}/{self.commit[2:]}/{self.name}"


@dataclass(frozen=True)
class PointResult:
    name: str
    status: str  # TRAINED, RESTORED, PUBLISHED_BEFORE, PUBLISHED_MEANWHILE or FAILED
    host: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    error: str = ""
    seconds: Mapping[str, float] = field(default_factory=dict)  # clone, run, publish

    @property
    def failed(self) -> bool:
        return self.status == FAILED


class PointError(Exception):
    """A command of the point failed; its message is the one line that says why."""


def one_line_error(output: str) -> str:
    """The stage's own one-line error if a stage failed, else DVC's or git's last error line."""
    stage = STAGE_ERROR.findall(output)
    if stage:
        return stage[-1].strip()
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("ERROR", "error:", "fatal:"))]
    return (errors or lines or ["no output"])[-1]


def command(args: Sequence[str], cwd: Path) -> str:
    """Run a command; its combined output, or PointError. `setpriv` ends it if this worker dies."""
    guard = ["setpriv", "--pdeathsig", "SIGTERM"] if shutil.which("setpriv") else []
    result = subprocess.run(
        [*guard, *args], cwd=cwd, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if result.returncode != 0:
        raise PointError(one_line_error(result.stdout))
    return result.stdout


def dvc(clone: Path, *args: str) -> str:
    return command([str(VENV_BIN / "dvc"), *args], clone)


def host_cache() -> Path:
    return Path(os.environ.get("SWEEP_CACHE") or Path.home() / ".cache/fashion-mnist-sweep/dvc-cache")


def local_config(cache: Path, remote: Sequence[tuple[str, str]]) -> str:
    """`.dvc/config.local`: the host's cache and the sweep's remote as the default.

    The clone links its data from the host cache instead of copying it (220 MB per point); DVC makes linked files
    read-only, and the stages replace their outputs rather than write into them.
    """
    options = "".join(f"    {key} = {value}\n" for key, value in remote)
    return (
        f"[core]\n    remote = {REMOTE_NAME}\n[cache]\n    dir = {cache}\n    type = reflink,hardlink,copy\n"
        f"['remote \"{REMOTE_NAME}\"']\n{options}"
    )


def published_ref(job: PointJob, clone: Path) -> bool:
    return bool(command(["git", "ls-remote", job.git_url, job.exp_ref], clone).strip())


def published_metrics(job: PointJob, clone: Path) -> dict[str, float]:
    """The metrics committed in the point's published experiment (metrics files are kept in git)."""
    command(["git", "fetch", "-q", job.git_url, job.exp_ref], clone)
    files = [command(["git", "show", f"FETCH_HEAD:{path}"], clone) for path in METRICS_FILES]
    return reported_metrics(files)


def reported_metrics(metrics_files: Sequence[str]) -> dict[str, float]:
    """`validation.accuracy` and `test.accuracy` from the texts of the train and evaluate metrics files."""
    merged: dict[str, dict[str, float]] = {}
    for text in metrics_files:
        merged |= json.loads(text)
    return {name: merged[name.split(".")[0]][name.split(".")[1]] for name in REPORTED_METRICS}


def remove_truncated_remote_objects(clone: Path) -> list[str]:
    """Delete remote objects whose size differs from this host's cached copy; their paths.

    dvc-ssh uploads a file straight to its final path, so a push killed midway leaves a truncated object that every
    later push skips as present (treeverse/dvc #10498). Objects are named by their hash: the local copy's size is
    the size it must have. Run before the ref is published, so no published point relies on a truncated object.
    """
    from dvc.repo import Repo

    removed = []
    with Repo(str(clone)) as repo:
        remote = repo.cloud.get_remote_odb(REMOTE_NAME)
        cache = Path(repo.cache.local.path)
        for path in remote.fs.find(remote.path):
            local = cache.joinpath(*remote.fs.relparts(path, remote.path))
            if local.is_file() and remote.fs.size(path) != local.stat().st_size:
                remote.fs.rm(path)
                removed.append(path)
    return removed


def clone_at(job: PointJob, scratch: Path) -> Path:
    clone = scratch / "repo"
    command(["git", "clone", "-q", "--no-checkout", job.git_url, str(clone)], scratch)
    command(["git", "checkout", "-q", "--detach", job.commit], clone)
    (clone / ".dvc/config.local").write_text(local_config(host_cache(), job.dvc_remote), encoding="utf-8")
    return clone


def run_and_publish(job: PointJob, clone: Path, seconds: dict[str, float]) -> tuple[str, dict[str, float]]:
    """Run the point unless it is published; publish outputs before the ref. (status, metrics)."""
    if published_ref(job, clone):
        return PUBLISHED_BEFORE, published_metrics(job, clone)
    started = time.monotonic()
    output = dvc(clone, "exp", "run", "--pull", "-n", job.name, *(f"-S{param}" for param in job.set_params))
    seconds["run"] = time.monotonic() - started
    status = RESTORED if "Stage 'train' is cached - skipping run" in output else TRAINED
    metrics = reported_metrics([(clone / path).read_text(encoding="utf-8") for path in METRICS_FILES])
    started = time.monotonic()
    command([sys.executable, "-m", "fmnist.dvc_gaps.share", "push", "-r", REMOTE_NAME], clone)
    if remove_truncated_remote_objects(clone):  # DVC skipped them as present: upload them again
        command([sys.executable, "-m", "fmnist.dvc_gaps.share", "push", "-r", REMOTE_NAME], clone)
    try:
        command(["git", "push", "-q", job.git_url, f"{job.exp_ref}:{job.exp_ref}"], clone)
    except PointError:
        if not published_ref(job, clone):  # else another attempt of this point published first: that one counts
            raise
        status = PUBLISHED_MEANWHILE
    seconds["publish"] = time.monotonic() - started
    return status, metrics


def run_point(job: PointJob) -> PointResult:
    """Run and publish one point in a scratch clone; a failure comes back as a result, never as an exception."""
    host = socket.gethostname()
    seconds: dict[str, float] = {}
    scratch_root = os.environ.get("SWEEP_SCRATCH") or None
    if scratch_root:
        Path(scratch_root).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{job.name}-", dir=scratch_root))
    try:
        started = time.monotonic()
        clone = clone_at(job, scratch)
        seconds["clone"] = time.monotonic() - started
        status, metrics = run_and_publish(job, clone, seconds)
        return PointResult(job.name, status, host, metrics, seconds=seconds)
    except PointError as error:
        return PointResult(job.name, FAILED, host, error=str(error), seconds=seconds)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
