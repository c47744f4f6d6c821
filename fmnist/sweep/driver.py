"""Submit a sweep grid to Dask and wait: one task per point (`fmnist.sweep.task`), progress, a table at the end.

The same code drives a `LocalCluster` of single-threaded workers on this machine (the default), a scheduler
started with `dask scheduler` and workers on other hosts (`--scheduler`, `--scheduler-file`), or a batch system
through `dask-jobqueue` (docs/sweeps.md). Everything that can be wrong is checked before anything is submitted:
the grid, each point's params, and that the submitted commit is on the git remote the workers clone from.
A worker that dies mid-point has its task rerun elsewhere by Dask (`distributed.scheduler.allowed-failures`).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from fmnist.sweep import clusters
from fmnist.sweep.grid import GridError, Point, grid_points, validate_points
from fmnist.sweep.task import (
    FAILED,
    PUBLISHED_BEFORE,
    PUBLISHED_MEANWHILE,
    RESTORED,
    TRAINED,
    PointJob,
    PointResult,
    run_point,
)

if TYPE_CHECKING:
    from distributed import Client, Future, LocalCluster

POLL_SECONDS = 1.0

LOOPBACK = "127.0.0.1"
# Each task logs this event as it starts: the scheduler's own "processing" also counts tasks queued on a worker.
STARTED = "sweep point started"
PUBLISHED = (TRAINED, RESTORED, PUBLISHED_BEFORE, PUBLISHED_MEANWHILE)
CANCEL_WAIT_SECONDS = 7
EXIT_INTERRUPTED = 130


class SubmitError(Exception):
    """A sweep that cannot be submitted as asked: one line, before anything runs."""


def git(*args: str) -> str:
    result = subprocess.run(["git", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SubmitError(f"git {' '.join(args)}: {result.stderr.strip().splitlines()[-1]}")
    return result.stdout.strip()


def git_remote_url(remote: str) -> str:
    """The URL workers clone from; a relative local path made absolute, as workers start elsewhere."""
    try:
        url = git("remote", "get-url", remote)
    except SubmitError:
        raise SubmitError(
            f"no git remote '{remote}': add it (git remote add {remote} URL) or pass --git-remote"
        ) from None
    local = "://" not in url and ":" not in url.split("/")[0]
    return str(Path(git("rev-parse", "--show-toplevel"), url).resolve()) if local else url


def check_commit_on_remote(remote: str, commit: str) -> None:
    """Workers clone the git remote: the commit must be on one of its branches or tags."""
    git("fetch", "-q", remote)
    if not git("for-each-ref", "--contains", commit, "--format=%(refname)", f"refs/remotes/{remote}/", "refs/tags/"):
        raise SubmitError(
            f"commit {commit[:7]} is not on git remote '{remote}': workers clone from there; "
            f"push it first (git push {remote} HEAD)"
        )


def dvc_remote_settings(name: str | None) -> tuple[tuple[str, str], ...]:
    """The DVC remote's URL and options as this repository resolves them (local paths made absolute)."""
    from dvc.repo import Repo

    with Repo() as repo:
        name = name or repo.config["core"].get("remote")
        remotes = repo.config["remote"]
        if not name or name not in remotes:
            raise SubmitError(f"no DVC remote '{name}': choose one of {', '.join(remotes) or 'none'} with --dvc-remote")
        settings = dict(remotes[name])
    url = settings.pop("url")
    as_text = {key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in settings.items()}
    return (("url", url), *sorted(as_text.items()))


def run_on_worker(job: PointJob, sweep_id: str) -> PointResult:
    """`run_point`, announced as started and labelled with the Dask worker that ran it; it stops once the driver
    sets the sweep's cancel event (on Ctrl-C)."""
    from distributed import Event, get_worker

    worker = get_worker()
    worker.log_event(STARTED, [sweep_id, job.name, worker.address])
    cancel = Event(cancel_event_name(sweep_id))

    def cancelled() -> bool:
        try:
            return cancel.is_set()
        except Exception:  # the scheduler unreachable: the point goes on, as Dask would rerun it anyway
            return False

    result = run_point(job, cancelled)
    return replace(result, host=f"{worker.name}@{result.host}")


def finished_line(point: Point, result: PointResult) -> str:
    if result.failed:
        return f"FAILED {point.label()}: {result.error}"
    took = sum(result.seconds.values())
    return (
        f"done   {point.label()}  validation {result.metrics['validation.accuracy']:.4f}  "
        f"{result.status} on {result.host} ({took:.0f} s)"
    )


def outcome(future: Future, name: str) -> PointResult:
    """The task's result; a task Dask gave up on (its workers kept dying) counts as a failed point."""
    if future.status == "error":
        error = future.exception()
        return PointResult(name, FAILED, "", error=f"{type(error).__name__}: {error}".splitlines()[0])
    return future.result()


class SweepInterrupted(Exception):
    """Ctrl-C (SIGINT) during a sweep: its running points were stopped, nothing more is published."""

    def __init__(self, published: int, failed: int, cancelled: int) -> None:
        super().__init__(published, failed, cancelled)
        self.published, self.failed, self.cancelled = published, failed, cancelled

    def line(self) -> str:
        failed = f", {self.failed} failed" if self.failed else ""
        return (
            f"sweep: interrupted: {self.published} points published{failed}, {self.cancelled} cancelled; "
            "run the same command again to continue"
        )


def cancel_event_name(sweep_id: str) -> str:
    return f"sweep-cancel-{sweep_id}"


def running_points(client: Client, sweep_id: str, finished: set[str]) -> set[str]:
    """Points started on a worker that is still alive and not finished: a task whose worker died is waiting for
    Dask to run it again, not running. Each start logs (sweep, point, worker); a rerun logs again."""
    workers = set(client.scheduler_info(n_workers=-1)["workers"])
    where: dict[str, str] = {}
    for _, (sweep, name, *worker) in client.get_events(STARTED):
        if sweep == sweep_id:
            where[name] = worker[0] if worker else ""
    return {name for name, worker in where.items() if worker in workers and name not in finished}


def run_sweep(
    client: Client, jobs: Mapping[str, tuple[Point, PointJob]], say: Callable[[str], None] = print
) -> dict[str, PointResult]:
    """Submit every point, report each as it finishes and the counts as they change; results by name.

    On KeyboardInterrupt, cancels the sweep (`cancel`) and raises SweepInterrupted."""
    from distributed import as_completed

    sweep_id = uuid.uuid4().hex
    futures = {
        name: client.submit(run_on_worker, job, sweep_id, key=f"{name}-{sweep_id}") for name, (_, job) in jobs.items()
    }
    names = {future.key: name for name, future in futures.items()}
    results: dict[str, PointResult] = {}
    last_counts = None
    try:
        completed = as_completed(futures.values())
        while len(results) < len(futures):
            for future in completed.next_batch(block=False) if completed.count() else []:
                name = names[future.key]
                results[name] = outcome(future, name)
                say(finished_line(jobs[name][0], results[name]))
            running = len(running_points(client, sweep_id, set(results)))
            failed = sum(result.failed for result in results.values())
            counts = (len(results) - failed, running, failed, len(futures) - len(results) - running)
            if counts != last_counts:
                say("progress: {} done, {} running, {} failed, {} waiting".format(*counts))
                last_counts = counts
            if len(results) < len(futures):
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        raise cancel(client, sweep_id, futures, results) from None
    return results


def cancel(client: Client, sweep_id: str, futures: Mapping[str, Future], results: dict[str, PointResult]) -> Exception:
    """Tell every task to stop (`run_point`'s `cancelled`: each running command is ended, no ref is pushed), wait
    CANCEL_WAIT_SECONDS at most for them, then cancel the futures; the SweepInterrupted to raise."""
    from distributed import Event

    failed_before = sum(result.failed for result in results.values())
    Event(cancel_event_name(sweep_id), client=client).set()
    deadline = time.monotonic() + CANCEL_WAIT_SECONDS
    while time.monotonic() < deadline and not all(future.done() for future in futures.values()):
        time.sleep(0.2)
    for name, future in futures.items():
        if name not in results and future.done():
            results[name] = outcome(future, name)
    client.cancel([future for future in futures.values() if not future.done()], force=True)
    published = sum(result.status in PUBLISHED for result in results.values())
    return SweepInterrupted(published, failed_before, len(futures) - published - failed_before)


def table(jobs: Mapping[str, tuple[Point, PointJob]], results: Mapping[str, PointResult]) -> str:
    rows = [("point", "status", "validation", "test", "experiment")]
    for name, (point, _) in jobs.items():
        result = results[name]
        scores = [
            f"{result.metrics[key]:.4f}" if result.metrics else "-" for key in ("validation.accuracy", "test.accuracy")
        ]
        rows.append((point.label(), result.status, *scores, result.name or name))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def prepare_jobs(args: argparse.Namespace) -> dict[str, tuple[Point, PointJob]]:
    """Check everything and build one job per point, or raise GridError / SubmitError: nothing is submitted yet."""
    commit = git("rev-parse", "--verify", f"{args.rev}^{{commit}}")
    document = yaml.safe_load(git("show", f"{commit}:params.yaml"))
    points = validate_points(document, grid_points(args.set_param))
    git_url = git_remote_url(args.git_remote)
    check_commit_on_remote(args.git_remote, commit)
    remote = dvc_remote_settings(args.dvc_remote)
    return {
        point.name: (point, PointJob(git_url, commit, point.name, tuple(point.set_params), remote)) for point in points
    }


@contextmanager
def connect(args: argparse.Namespace) -> Iterator[Client]:
    """A client of the given scheduler, or of a LocalCluster that lives as long as the sweep."""
    from distributed import Client

    if clusters.wanted(args):
        with clusters.connect(args) as client:
            yield client
        return
    with local_cluster(args.workers) as cluster, Client(cluster, security=cluster.security) as client:
        yield client


@contextmanager
def sigint_ignored_by_new_processes() -> Iterator[None]:
    """Processes started inside ignore SIGINT (an ignored signal stays ignored across exec); this one, once out.

    Ctrl-C in a terminal signals the whole foreground process group: the LocalCluster's worker processes would die
    of it mid-task, with a traceback each. The sweep's driver stops them instead (`cancel`); the stages still
    install their own SIGINT handler (`fmnist.runner`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def local_cluster_options(workers: int) -> dict[str, object]:
    """`LocalCluster`'s arguments for `local_cluster`: loopback, TLS with temporary certificates, no dashboard."""
    from distributed.security import Security

    return {
        "n_workers": workers,
        "threads_per_worker": 1,
        "processes": True,
        "host": LOOPBACK,
        "protocol": "tls://",
        "security": Security.temporary(),
        "dashboard_address": None,
        "worker_dashboard_address": None,
        "scheduler_kwargs": {"dashboard": False, "dashboard_address": f"{LOOPBACK}:0"},
    }


@contextmanager
def local_cluster(workers: int, **overrides: object) -> Iterator[LocalCluster]:
    """Single-threaded worker processes on this machine, closed to everyone else and to this host's other users.

    Scheduler, nannies and workers listen on 127.0.0.1 only, and speak TLS with certificates made for this cluster
    (`Security.temporary`, kept in memory): a Dask client may run any code on a worker, so no one without them may
    connect. No dashboard: each server's HTTP listener (Dask always starts one) is on a random loopback port and
    serves no route, not even the worker list. `overrides` replace `local_cluster_options` (bench.sweep_scaling
    measures what TLS costs against plain TCP).
    """
    import dask
    from distributed import LocalCluster

    no_routes = {"distributed.scheduler.http.routes": [], "distributed.worker.http.routes": []}
    with dask.config.set(no_routes):
        with sigint_ignored_by_new_processes():
            cluster = LocalCluster(**(local_cluster_options(workers) | overrides))
        with cluster:
            yield cluster


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-S",
        "--set-param",
        action="append",
        default=[],
        metavar="KEY=VALUES",
        help="a grid axis in DVC's -S syntax: key=a,b,c or key=range(start,stop[,step]); repeatable",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://HOST:8786")
    where.add_argument("--scheduler-file", help="the file `dask scheduler --scheduler-file` wrote")
    clusters.add_arguments(parser, where)  # --slurm, --tls-dir, --insecure, --slurm-* (docs/cluster.md)
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count(),
        help="single-threaded workers of the LocalCluster when no scheduler is given (default: CPUs)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=clusters.CONNECT_SECONDS,
        help=f"seconds to wait for a scheduler to answer (default: {clusters.CONNECT_SECONDS}); refused: at once",
    )
    parser.add_argument("--rev", default="HEAD", help="the commit to sweep from (default: HEAD); must be on the remote")
    parser.add_argument("--git-remote", default="origin", help="git remote the workers clone from (default: origin)")
    parser.add_argument("--dvc-remote", help="DVC remote the points are published to (default: core.remote)")


def shown(url: str) -> str:
    """A URL to print: without a user's password or token in it."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


def main(args: argparse.Namespace) -> int:
    handler = signal.getsignal(signal.SIGINT)
    try:
        return sweep(args)
    except SweepInterrupted as interrupted:
        print(interrupted.line())
    except KeyboardInterrupt:  # before any point was submitted
        print("sweep: interrupted before anything was submitted; run the same command again to start")
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, handler)  # `run_sweep` ignores a second Ctrl-C while it cleans up
    return EXIT_INTERRUPTED


def sweep(args: argparse.Namespace) -> int:
    try:
        jobs = prepare_jobs(args)
    except (GridError, SubmitError) as error:
        print(f"sweep: error: {error}", file=sys.stderr)
        return 1
    commit = next(iter(jobs.values()))[1].commit
    point_job = next(iter(jobs.values()))[1]
    where = args.scheduler or args.scheduler_file or f"a LocalCluster of {args.workers} workers"
    print(
        f"sweep: {len(jobs)} points of commit {commit[:7]} on {where}; publishing to git {shown(point_job.git_url)} "
        f"and DVC {shown(dict(point_job.dvc_remote)['url'])}"
    )
    try:
        with connect(args) as client:
            results = run_sweep(client, jobs)
    except (SubmitError, clusters.ClusterError) as error:
        print(f"sweep: error: {error}", file=sys.stderr)
        return 1
    print(table(jobs, results))
    failed = sum(result.failed for result in results.values())
    print(f"sweep: {len(results) - failed} of {len(results)} points done" + (f", {failed} failed" if failed else ""))
    return 1 if failed else 0
