"""Sweep throughput: `fmnist.sweep run` on a Dask LocalCluster against the same points run one after another and
against DVC's queue, and the per-point overhead of the distributed path (clone, pull, publish).

Run from the repository root (about 6 minutes with the defaults on a 2-core machine):

    .venv/bin/python -m bench.sweep_scaling [--epochs 2] [--workdir DIR]

In throwaway repositories holding this working tree's files (a project, a bare git remote, a directory DVC remote;
fetch and prepare run and pushed first, as a team would have them), it times one sweep of `bench.benchmark`'s
SWEEP_RATES dropout rates, each measurement with new seeds so that nothing is restored from the run-cache:

1. `dvc exp run -S …` one after another in the project (no clone, no publishing);
2. the same queued, `dvc queue start -j 2` (bench.benchmark's sweep);
3. `fmnist.sweep run` on a LocalCluster of 1 worker: the distributed path one point after another;
4. `fmnist.sweep run` on a LocalCluster of 2 workers (TLS, as `fmnist-sweep run` starts it);
5. the same 2 workers on plain TCP, to show what TLS costs.

It prints wall seconds, throughput relative to (1), the median seconds per point of each phase of (3) and (4)
(clone, `dvc exp run --pull`, publish) as the tasks timed them, the CPU and the load average at start and end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.benchmark import SWEEP_RATES, commit, copy_project, git, log, set_params, sweep, tool_env
from fmnist.cpuinfo import describe_host, describe_kernels

VENV_BIN = Path(sys.executable).parent
TARGET_SPEEDUP = 1.7
TARGET_TLS_COST = 0.05  # at most 5% of the 2-worker throughput
PLAIN_TCP = "the same 2 workers on plain TCP (no TLS)"


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def setup(root: Path, epochs: int) -> Path:
    """The project on its git remote, with fetch and prepare run and pushed to the directory remote."""
    project = copy_project(root / "project")
    set_params(project, {"train.epochs": epochs})
    commit(project, f"{epochs} epochs")
    git(root, "init", "-q", "--bare", "--initial-branch=main", "origin.git")
    git(project, "remote", "add", "origin", str(root / "origin.git"))
    git(project, "push", "-q", "origin", "HEAD:refs/heads/main")
    env = tool_env()
    for command in (["dvc", "remote", "add", "--local", "--default", "team", str(root / "storage")],
                    ["dvc", "repro", "prepare"], [sys.executable, "-m", "fmnist.dvc_gaps.share", "push"]):  # fmt: skip
        subprocess.run(command, cwd=project, env=env, check=True, capture_output=True)
    return project


def dask_sweep(project: Path, workers: int, seed: int, tls: bool = True) -> tuple[float, dict[str, list[float]]]:
    """Wall seconds of `fmnist.sweep run` on a LocalCluster (on plain TCP unless `tls`), and each phase's seconds of
    every point."""
    from distributed import Client

    from fmnist.sweep import driver as sweep_run

    parser = argparse.ArgumentParser()
    sweep_run.add_arguments(parser)
    rates = ",".join(str(rate) for rate in SWEEP_RATES)
    args = parser.parse_args(["-S", f"train.dropout={rates}", "-S", f"train.seed={seed}", "--workers", str(workers)])
    plain = {} if tls else {"protocol": "tcp://", "security": None}
    started = time.perf_counter()
    previous = Path.cwd()
    os.chdir(project)
    try:
        jobs = sweep_run.prepare_jobs(args)
        with sweep_run.local_cluster(workers, **plain) as cluster, Client(cluster, security=cluster.security) as client:
            results = sweep_run.run_sweep(client, jobs, say=log)
    finally:
        os.chdir(previous)
    wall = time.perf_counter() - started
    failed = [result for result in results.values() if result.failed or result.status != "trained"]
    if failed:
        raise SystemExit(f"sweep_scaling: a point did not train: {failed[0]}")
    phases = {phase: [result.seconds[phase] for result in results.values()] for phase in ("clone", "run", "publish")}
    return wall, phases


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep_scaling", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per point (default 2)")
    parser.add_argument("--workdir", type=Path, help="where the throwaway repositories go (default: a temp dir)")
    args = parser.parse_args(argv)
    os.environ.update(tool_env())  # LocalCluster workers inherit it: the venv on PATH, a git identity
    print(f"CPU: {describe_host()}, {os.cpu_count()} CPUs; kernels: {describe_kernels()}")
    print(f"start: {load()}")
    points = len(SWEEP_RATES)
    with tempfile.TemporaryDirectory(prefix="sweep-scaling-", dir=args.workdir) as name:
        root = Path(name)
        os.environ["SWEEP_CACHE"] = str(root / "host-cache")
        os.environ["SWEEP_SCRATCH"] = str(root / "scratch")
        log("setting up: project, git remote, DVC remote, fetch + prepare pushed")
        project = setup(root, args.epochs)
        walls, phases = {}, {}
        log(f"{points} points one after another with dvc exp run")
        walls["`dvc exp run` one after another"] = sweep(project, args.epochs, 1000, queued=False)
        log(f"{points} points on DVC's queue, -j 2")
        walls["DVC queue, `dvc queue start -j 2`"] = sweep(project, args.epochs, 1100, queued=True)
        for workers, seed in ((1, 1200), (2, 1300)):
            log(f"{points} points with fmnist.sweep run, LocalCluster of {workers}")
            label = f"`fmnist.sweep run --workers {workers}` (LocalCluster)"
            walls[label], phases[workers] = dask_sweep(project, workers, seed)
        log(f"{points} points with fmnist.sweep run, LocalCluster of 2 on plain TCP")
        walls[PLAIN_TCP], phases["2, plain TCP"] = dask_sweep(project, 2, 1400, tls=False)
    print(f"end: {load()}")
    print(f"\n{points} points, {args.epochs} epochs each; throughput relative to `dvc exp run` one after another\n")
    baseline = next(iter(walls.values()))
    print("| how | wall s | s per point | throughput |")
    print("|---|---|---|---|")
    for label, wall in walls.items():
        print(f"| {label} | {wall:.1f} | {wall / points:.1f} | {baseline / wall:.2f}× |")
    print("\nPer point, as the tasks timed them (median of the points; each point's value in brackets)\n")
    print("| workers | clone s | `dvc exp run --pull` s | publish s |")
    print("|---|---|---|---|")
    for workers, seconds in phases.items():
        cells = [f"{statistics.median(v):.1f} ({', '.join(f'{x:.1f}' for x in v)})" for v in seconds.values()]
        print(f"| {workers} | {' | '.join(cells)} |")
    one, two = (walls[f"`fmnist.sweep run --workers {workers}` (LocalCluster)"] for workers in (1, 2))
    print(
        f"\noverhead of the distributed path per point (1 worker vs `dvc exp run`): {(one - baseline) / points:.1f} s"
    )
    for label, speedup in (("`dvc exp run` one after another", baseline / two), ("1 worker", one / two)):
        verdict = "met" if speedup >= TARGET_SPEEDUP else "NOT met"
        print(f"2 workers vs {label}: {speedup:.2f}× (target {TARGET_SPEEDUP}×: {verdict})")
    cost = 1 - walls[PLAIN_TCP] / two  # the share of plain TCP's throughput that TLS gives up
    verdict = "met" if cost <= TARGET_TLS_COST else "NOT met"
    print(f"TLS costs {cost:.1%} of the 2-worker throughput (target at most {TARGET_TLS_COST:.0%}: {verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
