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

Hosts: `SWEEP_CACHE` (default `~/.cache/fashion-mnist-sweep/<first 12 hex digits of the SHA-256 of the git remote's
URL>/dvc-cache`: one per project) is the per-host cache and `SWEEP_SCRATCH` (default: the system's temporary
directory) holds the clones, each removed when its point ends. A point publishes the run records of its own
stages' runs only (`share push --workspace-runs`), never the rest of a cache it shares.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

from fmnist.processes import VENV_BIN, tool_env
from fmnist.runner import STAGE_REPORT_VARIABLE
from fmnist.sweep.grid import published_experiment

METRICS_FILES = ("reports/training/metrics.json", "reports/evaluation/metrics.json")
REPORTED_METRICS = ("validation.accuracy", "test.accuracy")
REMOTE_NAME = "sweep"
STAGE_OUTCOMES = "stage-outcomes.jsonl"  # beside the clone: each stage's outcome (`fmnist.runner.report_outcome`)
TRAINED = "trained"
RESTORED = "restored from the run-cache"
PUBLISHED_BEFORE = "published before"
PUBLISHED_MEANWHILE = "published meanwhile by another attempt"
FAILED = "failed"
CANCELLED = "cancelled"
CANCEL_POLL_SECONDS = 0.5
CANCEL_GRACE_SECONDS = 5


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
    name: str  # the experiment's: the point's name, or the name it was published under before (`published_ref`)
    status: str  # TRAINED, RESTORED, PUBLISHED_BEFORE, PUBLISHED_MEANWHILE, FAILED or CANCELLED
    host: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    error: str = ""
    seconds: Mapping[str, float] = field(default_factory=dict)  # clone, run, publish

    @property
    def failed(self) -> bool:
        return self.status == FAILED


class PointError(Exception):
    """A command of the point failed; its message is the one line that says why."""


class PointCancelled(PointError):
    """The sweep was cancelled (`run_point`'s `cancelled`): the point's command was stopped, or never started."""


def never() -> bool:
    return False


_cancelled: ContextVar[Callable[[], bool]] = ContextVar("cancelled", default=never)


def stage_outcomes(path: Path) -> list[dict[str, object]]:
    """The outcome of every stage run while `path` was `$FMNIST_STAGE_REPORT`, in order; none if no stage ran."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def one_line_error(output: str) -> str:
    """DVC's or git's last error line (a stage's own error comes from its outcome, `stage_outcomes`)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("ERROR", "error:", "fatal:"))]
    return (errors or lines or ["no output"])[-1]


def command(args: Sequence[str], cwd: Path, cancellable: bool = True, env: Mapping[str, str] | None = None) -> str:
    """Run a command; its combined output, or PointError. `setpriv` ends it if this worker dies.

    While it runs, the point's `cancelled` (see `run_point`) is asked every CANCEL_POLL_SECONDS; once it says yes,
    the command gets SIGTERM (the stages end on it, and `dvc` dying ends its stage: `fmnist.runner.exit_with_dvc`),
    SIGKILL after CANCEL_GRACE_SECONDS, and PointCancelled is raised. A cancelled point starts no command; a command
    that is not `cancellable` runs to its end."""
    cancelled = _cancelled.get() if cancellable else never
    if cancelled():
        raise PointCancelled(CANCELLED)
    guard = ["setpriv", "--pdeathsig", "SIGTERM"] if shutil.which("setpriv") else []
    with subprocess.Popen(
        [*guard, *args],
        cwd=cwd,
        env=tool_env() | dict(env or {}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        output = None
        while output is None:
            try:
                output, _ = process.communicate(timeout=CANCEL_POLL_SECONDS)
            except subprocess.TimeoutExpired:
                if cancelled():
                    stop(process)
                    raise PointCancelled(CANCELLED) from None
    if process.returncode != 0:
        raise PointError(one_line_error(output))
    return output


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.communicate(timeout=CANCEL_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def host_cache(git_url: str) -> Path:
    """`SWEEP_CACHE`, else this host's cache for the sweeps that publish to `git_url`: one project's clones share it,
    other projects' sweeps on this host do not."""
    if os.environ.get("SWEEP_CACHE"):
        return Path(os.environ["SWEEP_CACHE"])
    project = hashlib.sha256(git_url.encode()).hexdigest()[:12]
    return Path.home() / ".cache/fashion-mnist-sweep" / project / "dvc-cache"


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


def published_ref(job: PointJob, clone: Path) -> str | None:
    """The ref of the point's experiment on the git remote: under its name, or under an earlier name with the same
    params digest (`grid.published_experiment`); None if it is not published."""
    listed = command(["git", "ls-remote", job.git_url, f"{job.exp_ref.rsplit('/', 1)[0]}/*"], clone)
    refs = [line.split("\t", 1)[1] for line in listed.splitlines() if "\t" in line]
    name = published_experiment(job.name, refs)
    return next(ref for ref in refs if ref.rsplit("/", 1)[-1] == name) if name else None


def published_metrics(ref: str, job: PointJob, clone: Path) -> dict[str, float]:
    """The metrics committed in the point's published experiment (metrics files are kept in git)."""
    command(["git", "fetch", "-q", job.git_url, ref], clone)
    files = [command(["git", "show", f"FETCH_HEAD:{path}"], clone) for path in METRICS_FILES]
    return reported_metrics(files)


def reported_metrics(metrics_files: Sequence[str]) -> dict[str, float]:
    """`validation.accuracy` and `test.accuracy` from the texts of the train and evaluate metrics files."""
    merged: dict[str, dict[str, float]] = {}
    for text in metrics_files:
        merged |= json.loads(text)
    return {name: merged[name.split(".")[0]][name.split(".")[1]] for name in REPORTED_METRICS}


def remove_truncated_remote_objects(clone: Path) -> list[str]:
    """Delete remote objects whose size differs from this host's cached copy (and the listings naming them); the
    paths deleted.

    dvc-ssh uploads a file straight to its final path, so a push killed midway leaves a truncated object that every
    later push skips as present (treeverse/dvc #10498). Objects are named by their hash: the local copy's size is
    the size it must have. Run before the ref is published, so no published point relies on a truncated object.
    """
    from dvc.repo import Repo

    from fmnist.dvc_gaps.check_cache import remove_remote_objects

    with Repo(str(clone)) as repo:
        remote = repo.cloud.get_remote_odb(REMOTE_NAME)
        cache = Path(repo.cache.local.path)
        truncated = []
        for path in remote.fs.find(remote.path):
            local = cache.joinpath(*remote.fs.relparts(path, remote.path))
            if local.is_file() and remote.fs.size(path) != local.stat().st_size:
                truncated.append(path)
        return remove_remote_objects(remote, truncated) if truncated else []


def clone_at(job: PointJob, scratch: Path) -> Path:
    clone = scratch / "repo"
    command(["git", "clone", "-q", "--no-checkout", job.git_url, str(clone)], scratch)
    command(["git", "checkout", "-q", "--detach", job.commit], clone)
    (clone / ".dvc/config.local").write_text(local_config(host_cache(job.git_url), job.dvc_remote), encoding="utf-8")
    return clone


def run_and_publish(job: PointJob, clone: Path, seconds: dict[str, float]) -> tuple[str, dict[str, float], str]:
    """Run the point unless it is published; publish outputs before the ref. (status, metrics, experiment name)."""
    ref = published_ref(job, clone)
    if ref:
        return PUBLISHED_BEFORE, published_metrics(ref, job, clone), ref.rsplit("/", 1)[-1]
    started = time.monotonic()
    outcomes = clone.parent / STAGE_OUTCOMES
    run = [str(VENV_BIN / "dvc"), "exp", "run", "--pull", "-n", job.name, *(f"-S{param}" for param in job.set_params)]
    try:
        command(run, clone, env={STAGE_REPORT_VARIABLE: str(outcomes)})
    except PointCancelled:
        raise
    except PointError:
        failed = [outcome for outcome in stage_outcomes(outcomes) if outcome["outcome"] != "done"]
        if failed:  # the stage's own line, not DVC's "failed to reproduce"
            raise PointError(str(failed[-1]["message"])) from None
        raise
    seconds["run"] = time.monotonic() - started
    ran = {outcome["stage"] for outcome in stage_outcomes(outcomes) if outcome["outcome"] == "done"}
    status = TRAINED if "train" in ran else RESTORED
    metrics = reported_metrics([(clone / path).read_text(encoding="utf-8") for path in METRICS_FILES])
    started = time.monotonic()
    push = [sys.executable, "-m", "fmnist.dvc_gaps.share", "push", "-r", REMOTE_NAME, "--workspace-runs"]
    command(push, clone)  # the records of this point's own runs, not the host cache's others
    if remove_truncated_remote_objects(clone):  # DVC skipped them as present: upload them again
        command(push, clone)
    if _cancelled.get()():  # the outputs are on the DVC remote, but without the ref no one sees this point
        raise PointCancelled(CANCELLED)
    try:
        # Not stopped midway: once git has moved the ref, the point is published, and is reported so.
        command(["git", "push", "-q", job.git_url, f"{job.exp_ref}:{job.exp_ref}"], clone, cancellable=False)
    except PointError:
        if not published_ref(job, clone):  # else another attempt of this point published first: that one counts
            raise
        status = PUBLISHED_MEANWHILE
    seconds["publish"] = time.monotonic() - started
    return status, metrics, job.name


def run_point(job: PointJob, cancelled: Callable[[], bool] = never) -> PointResult:
    """Run and publish one point in a scratch clone; a failure comes back as a result, never as an exception.

    `cancelled` is asked while each command runs and before the experiment's ref is pushed: once it says yes, the
    running command is stopped and nothing more is published; the result's status is CANCELLED."""
    token = _cancelled.set(cancelled)
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
        status, metrics, experiment = run_and_publish(job, clone, seconds)
        return PointResult(experiment, status, host, metrics, seconds=seconds)
    except PointCancelled:
        return PointResult(job.name, CANCELLED, host, seconds=seconds)
    except PointError as error:
        return PointResult(job.name, FAILED, host, error=str(error), seconds=seconds)
    finally:
        _cancelled.reset(token)
        shutil.rmtree(scratch, ignore_errors=True)
