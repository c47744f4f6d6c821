"""Speed benchmark: the seed article's program against the train stage, and `dvc repro` timings.

Run from the repository root, on an otherwise idle machine (about 25 minutes with the defaults):

    .venv/bin/python -m bench.benchmark [--epochs 3] [--repeats 3] [--sweep-epochs 60]
                                        [--quick] [--skip-seed] [--skip-dvc] [--skip-sweep]

In one run, on this machine, it measures:

1. bench/seed_program.py and `python -m stages.train` at the seed's hyperparameters for the same
   `--epochs`, each in its own process, alternating. Seconds per epoch are steady-state: epochs
   2..N, timed from the arrival of each epoch's line, since epoch 1 also holds start-up and
   tracing (it is inside the wall time). The seed trains on all 60,000 images, the stage on the
   55,000 not held out for validation, so the speed target is judged per training example.
   Peak RSS is each process's `ru_maxrss` (from `os.wait4`); test accuracy is the seed's own
   `evaluate` and the evaluate stage run (untimed) on the stage's model.
2. In throwaway git repositories holding this working tree's files: cold `dvc repro` at
   params.yaml's defaults (a fresh copy each time; `--quick` trains `--epochs` epochs instead);
   no-op `dvc repro` against no-op `dvc repro` of a one-stage pipeline (DVC's own start-up);
   `dvc repro` back to a dropout rate already trained (run-cache restore); and a sweep of dropout
   rates run one after another (`dvc exp run -S ...`) against the same sweep queued and run by two
   workers (`dvc exp run --queue -S ...`, then `dvc queue start -j 2`, polling `dvc queue status`
   every few seconds until every result is in). Each sweep run gets its own
   `train.seed`, so that no run is restored from the run-cache. The train stage pins TensorFlow to
   one thread (fmnist/tensorflow_setup.py), which is what lets two workers share two cores.

Every figure is the median of `--repeats` runs, and each run's value is printed beside it.
Other work on the machine skews every figure: the load average at start and end is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import yaml

from fmnist.cpuinfo import describe_host, describe_kernels
from fmnist.sweep import task as sweep_point

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED_PROGRAM = REPO_ROOT / "bench" / "seed_program.py"
VENV_BIN = Path(sys.executable).parent
SEED_TRAIN_EXAMPLES = 60_000  # the seed trains on every training image
# The seed program's network and optimiser, as params.yaml keys: the stage runs with these.
SEED_HYPERPARAMETERS = {
    "train.hidden_units": [200, 100, 60],
    "train.dropout": 0.2,
    "train.learning_rate": 0.01,
    "train.batch_size": 32,
}
QUEUE_POLL_SECONDS = 3  # each poll starts DVC (about 0.4 s of one core)
QUEUE_TIMEOUT_SECONDS = 3600
# After a `dvc queue stop`, the next `dvc queue start`'s workers (same names) each logged "Got
# shutdown from remote" as they started, ran one experiment and quit; the rest stayed queued with
# no worker, forever. The benchmark therefore never stops workers (they stop by themselves when
# the queue is empty), and starts them again if experiments are queued and no worker is left.
NO_WORKERS = "Worker status: 0 active, 0 idle"
EPOCH_LINE = re.compile(r"^epoch +(\d+)/(\d+)\b")  # printed by the train stage and by the seed program
UP_TO_DATE = "Data and pipelines are up to date."
OTHER_DROPOUTS = (0.3, 0.4)  # the run-cache measurement uses the first that is not the default rate
SWEEP_RATES = (0.1, 0.3, 0.4, 0.5)
SWEEP_JOBS = 2
BUSY_LOAD = 0.5  # a 1-minute load average above this at start means the machine is not idle
ACCURACY_TOLERANCE = 0.005  # "as good as the seed's": within half a point of its median (the seed is unseeded)

# The targets.
TARGET_SPEEDUP = 6.0
TARGET_MEMORY_FRACTION = 0.5
TARGET_COLD_FRACTION = 0.2
TARGET_NOOP_OVERHEAD_SECONDS = 0.5
TARGET_RESTORE_SECONDS = 5.0
TARGET_SWEEP_SPEEDUP = 1.5


class BenchmarkError(Exception):
    """A run that failed or did not do what the measurement assumes."""


@dataclass(frozen=True)
class Run:
    """One finished child process."""

    wall: float  # seconds from spawn to exit
    epoch_ends: tuple[float, ...]  # seconds after spawn at which each `epoch i/n` line arrived
    peak_rss_mib: float
    output: str  # stdout and stderr, interleaved

    def steady_epoch(self) -> float:
        """Mean seconds of epochs 2..N: from the end of epoch 1 to the end of the last."""
        if len(self.epoch_ends) < 2:
            raise BenchmarkError(f"needs at least 2 epoch lines, got {len(self.epoch_ends)}")
        return (self.epoch_ends[-1] - self.epoch_ends[0]) / (len(self.epoch_ends) - 1)


@dataclass
class Report:
    """Markdown sections of figures, and the targets with whether each is met."""

    sections: list[str] = field(default_factory=list)
    targets: list[tuple[str, str, str, bool]] = field(default_factory=list)

    def table(self, title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        self.sections.append("\n".join(lines))

    def target(self, name: str, measured: str, required: str, met: bool) -> None:
        self.targets.append((name, measured, required, met))

    def markdown(self, header: str) -> str:
        rows = [
            (name, measured, required, "yes" if met else "**no**") for name, measured, required, met in self.targets
        ]
        targets = ["| Target | Measured | Required | Met |", "|---|---|---|---|"]
        targets += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n\n".join([header, "### Targets", "\n".join(targets), *self.sections]) + "\n"


STARTED = time.monotonic()


def log(message: str) -> None:
    """A progress line on stderr, with the minutes:seconds since start."""
    minutes, seconds = divmod(int(time.monotonic() - STARTED), 60)
    print(f"[bench {minutes}:{seconds:02d}] {message}", file=sys.stderr, flush=True)


def tool_env() -> dict[str, str]:
    """This venv first on PATH (stage commands say `python`), no analytics, a git identity for commits."""
    identity = {
        f"GIT_{role}_{part}": value
        for role in ("AUTHOR", "COMMITTER")
        for part, value in (("NAME", "bench"), ("EMAIL", "bench@example.com"))
    }
    return sweep_point.tool_env() | identity


def run(command: Sequence[str | Path], cwd: Path) -> Run:
    """Run a child to completion, timing it, its epoch lines and its peak RSS; raise if it fails."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(part) for part in command],
        cwd=cwd,
        env=tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    assert process.stdout is not None
    lines, epoch_ends = [], []
    for line in process.stdout:  # universal newlines: each `\r` progress-bar update is a line too
        if EPOCH_LINE.match(line):
            epoch_ends.append(time.perf_counter() - started)
        lines.append(line)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    output = "".join(lines)
    if process.returncode != 0:
        raise BenchmarkError(f"{' '.join(map(str, command))} exited {process.returncode} in {cwd}:\n{output[-3000:]}")
    return Run(wall, tuple(epoch_ends), usage.ru_maxrss / 1024, output)


def dvc(project: Path, *args: str) -> Run:
    return run([VENV_BIN / "dvc", *args], project)


def git(project: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=project, env=tool_env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchmarkError(f"git {' '.join(args)} exited {result.returncode} in {project}:\n{result.stderr}")
    return result.stdout


def expect(condition: bool, what: str, result: Run) -> None:
    if not condition:
        raise BenchmarkError(f"expected {what}; the output was:\n{result.output[-3000:]}")


def copy_project(target: Path) -> Path:
    """A fresh git repository with this working tree's files (tracked or not ignored), nothing run."""
    files = git(REPO_ROOT, "ls-files", "--cached", "--others", "--exclude-standard", "-z")
    for name in filter(None, files.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / "dvc.lock").unlink(missing_ok=True)
    shutil.rmtree(target / "reports", ignore_errors=True)
    git(target, "init", "-q")
    commit(target, "project")
    return target


def commit(project: Path, message: str) -> None:
    git(project, "add", "-A")
    git(project, "commit", "-q", "--allow-empty", "-m", message)


def read_params(project: Path) -> dict:
    return yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))


def set_params(project: Path, values: dict[str, object]) -> None:
    """Set `section.key` entries of params.yaml (comments are not kept: DVC compares values only)."""
    document = read_params(project)
    for key, value in values.items():
        section, name = key.split(".")
        document[section][name] = value
    (project / "params.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def read_test_accuracy(project: Path) -> float:
    return json.loads((project / "reports/evaluation/metrics.json").read_text())["test"]["accuracy"]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def cell(values: Sequence[float], digits: int = 2) -> str:
    """`median (each run's value)`."""
    return f"{median(values):.{digits}f} ({', '.join(f'{value:.{digits}f}' for value in values)})"


def measure_training(root: Path, epochs: int, repeats: int, report: Report) -> tuple[float, float]:
    """Seed program against the train stage; returns the seed's median wall and steady s/epoch."""
    workdir = copy_project(root / "stage")
    set_params(workdir, SEED_HYPERPARAMETERS | {"train.epochs": epochs})
    python = VENV_BIN / "python"
    run([python, "-m", "stages.fetch", "data/raw"], workdir)
    run([python, "-m", "stages.prepare", "data/raw", "data/prepared"], workdir)
    stage_examples = SEED_TRAIN_EXAMPLES - read_params(workdir)["prepare"]["val_size"]
    seed_runs, stage_runs, seed_accuracy, stage_accuracy = [], [], [], []
    for index in range(repeats):
        log(f"seed program, {epochs} epochs, run {index + 1}/{repeats}")
        seed = run([python, SEED_PROGRAM, "--epochs", str(epochs)], root)
        accuracy = re.search(r"^test accuracy ([0-9.]+)$", seed.output, re.MULTILINE)
        expect(
            len(seed.epoch_ends) == epochs and accuracy is not None, f"{epochs} epoch lines and a test accuracy", seed
        )
        seed_runs.append(seed)
        seed_accuracy.append(float(accuracy.group(1)))
        log(f"train stage, {epochs} epochs, run {index + 1}/{repeats}")
        stage = run([python, "-m", "stages.train", "data/prepared", "models/model.keras", "reports/training"], workdir)
        expect(len(stage.epoch_ends) == epochs, f"{epochs} epoch lines", stage)
        stage_runs.append(stage)
        run([python, "-m", "stages.evaluate", "data/prepared", "models/model.keras", "reports/evaluation"], workdir)
        stage_accuracy.append(read_test_accuracy(workdir))

    def figures(runs: list[Run], examples: int) -> dict[str, list[float]]:
        return {
            "steady": [r.steady_epoch() for r in runs],
            "per_example": [r.steady_epoch() / examples * 1e6 for r in runs],
            "first": [r.epoch_ends[0] for r in runs],
            "wall": [r.wall for r in runs],
            "rss": [r.peak_rss_mib for r in runs],
        }

    seed, stage = figures(seed_runs, SEED_TRAIN_EXAMPLES), figures(stage_runs, stage_examples)
    speedup = median(seed["per_example"]) / median(stage["per_example"])
    memory = median(stage["rss"]) / median(seed["rss"])

    def row(label: str, key: str, digits: int = 2) -> list[str]:
        ratio = median(seed[key]) / median(stage[key])
        return [label, cell(seed[key], digits), cell(stage[key], digits), f"{ratio:.2f}"]

    report.table(
        f"Seed program vs train stage: {epochs} epochs, repeats {repeats}, median (each run)",
        ["Measurement", "Seed program", "Train stage", "Seed ÷ stage"],
        [
            row("Seconds per epoch, steady state (epochs 2..N)", "steady"),
            row(
                f"µs per training example (seed {SEED_TRAIN_EXAMPLES:,}, stage {stage_examples:,} per epoch)",
                "per_example",
                1,
            ),
            row("Seconds from start to end of epoch 1 (start-up, tracing, epoch 1)", "first"),
            row(f"Wall seconds, whole process (seed: {epochs} epochs + test; stage: {epochs} epochs)", "wall"),
            row("Peak RSS, MiB", "rss", 0),
            ["Test accuracy", cell(seed_accuracy, 4), cell(stage_accuracy, 4), ""],
        ],
    )
    report.target(
        "Train speed at the seed's hyperparameters (per training example, steady epochs)",
        f"{speedup:.2f}x faster",
        f">= {TARGET_SPEEDUP:g}x",
        speedup >= TARGET_SPEEDUP,
    )
    report.target(
        f"Test accuracy after {epochs} epochs, stage vs seed",
        f"{median(stage_accuracy):.4f} vs {median(seed_accuracy):.4f}",
        f">= seed - {ACCURACY_TOLERANCE}",
        median(stage_accuracy) >= median(seed_accuracy) - ACCURACY_TOLERANCE,
    )
    report.target(
        "Train-stage peak RSS, fraction of the seed's",
        f"{memory:.2f}",
        f"<= {TARGET_MEMORY_FRACTION:g}",
        memory <= TARGET_MEMORY_FRACTION,
    )
    shutil.rmtree(workdir)
    return median(seed["wall"]), median(seed["steady"])


def trivial_pipeline(root: Path) -> Path:
    """A git+DVC repository whose one stage writes one small file, already run once."""
    repo = root / "trivial"
    repo.mkdir()
    git(repo, "init", "-q")
    dvc(repo, "init", "-q")
    (repo / "dvc.yaml").write_text("stages:\n  hello:\n    cmd: echo hello > hello.txt\n    outs:\n      - hello.txt\n")
    dvc(repo, "repro")
    commit(repo, "trivial pipeline")
    return repo


def measure_noop(project: Path, trivial: Path, repeats: int) -> tuple[list[float], list[float]]:
    """No-op `dvc repro` walls of the project and of the trivial pipeline, alternating, after a warm-up."""
    walls: dict[Path, list[float]] = {project: [], trivial: []}
    for index in range(repeats + 1):
        for repo, samples in walls.items():
            result = dvc(repo, "repro")
            expect(UP_TO_DATE in result.output, f"'{UP_TO_DATE}' in {repo.name}", result)
            if index > 0:  # the first round warms up both repositories
                samples.append(result.wall)
    return walls[project], walls[trivial]


def measure_restore(project: Path, default_rate: float, other_rate: float, repeats: int) -> list[float]:
    """Walls of `dvc repro` after switching train.dropout between two rates both already trained."""
    commit(project, "cold run")
    log(f"training train.dropout={other_rate} once, to have two rates in the run-cache")
    set_params(project, {"train.dropout": other_rate})
    result = dvc(project, "repro")
    expect("Running stage 'train'" in result.output, "the train stage to run", result)
    walls = []
    for index in range(repeats):
        rate = default_rate if index % 2 == 0 else other_rate
        set_params(project, {"train.dropout": rate})
        result = dvc(project, "repro")
        expect("Stage 'train' is cached - skipping run" in result.output, "train restored from the run-cache", result)
        expect("Running stage" not in result.output and not result.epoch_ends, "no stage run, no epoch", result)
        walls.append(result.wall)
    if rate != default_rate:
        set_params(project, {"train.dropout": default_rate})
        dvc(project, "repro")
    return walls


def sweep(project: Path, epochs: int, first_seed: int, queued: bool) -> float:
    """Wall seconds to run one experiment per SWEEP_RATES rate, queued (two workers) or one after another."""
    git(project, "reset", "-q", "--hard")  # params.yaml and dvc.lock as committed, not as the last experiment left them
    started = time.perf_counter()
    names = []
    for offset, rate in enumerate(SWEEP_RATES):
        name = f"{'queued' if queued else 'sequential'}-{first_seed + offset}"
        names.append(name)
        overrides = [f"train.dropout={rate}", f"train.epochs={epochs}", f"train.seed={first_seed + offset}"]
        result = dvc(
            project,
            "exp",
            "run",
            *(["--queue"] if queued else []),
            "-n",
            name,
            *(part for override in overrides for part in ("-S", override)),
        )
        expect(queued or "Running stage 'train'" in result.output, f"experiment {name} to train", result)
    if queued:  # as the README does it; `dvc exp run --run-all` hung here once, with no task left
        dvc(project, "queue", "start", "--jobs", str(SWEEP_JOBS))
        deadline = time.monotonic() + QUEUE_TIMEOUT_SECONDS
        polls_without_workers = 0  # workers take a moment to answer after `queue start`: wait for two polls
        while re.search(r"\b(Queued|Running)\b", (status := dvc(project, "queue", "status")).output):
            expect(time.monotonic() < deadline, f"the queue to finish within {QUEUE_TIMEOUT_SECONDS} s", status)
            polls_without_workers = polls_without_workers + 1 if NO_WORKERS in status.output else 0
            if polls_without_workers == 2:  # see NO_WORKERS
                log("experiments queued but no worker left: starting the workers again")
                dvc(project, "queue", "start", "--jobs", str(SWEEP_JOBS))
                polls_without_workers = 0
            time.sleep(QUEUE_POLL_SECONDS)
        succeeded = re.findall(r"^\S+\s+(\S+)\s.*\bSuccess\s*$", status.output, flags=re.M)
        expect(set(names) <= set(succeeded), f"experiments {', '.join(names)} to succeed", status)
    wall = time.perf_counter() - started
    if queued:  # idle workers stop by themselves within seconds; wait, so they cost the next run nothing
        while NO_WORKERS not in dvc(project, "queue", "status").output:
            time.sleep(1)
    return wall


def measure_sweep(project: Path, epochs: int, repeats: int) -> tuple[list[float], list[float]]:
    commit(project, "before the sweeps")
    sequential, queued = [], []
    for index in range(repeats):
        first_seed = 1000 + 2 * len(SWEEP_RATES) * index  # a new seed per experiment: no run-cache hits
        log(f"sweep of {len(SWEEP_RATES)} rates one after another, run {index + 1}/{repeats}")
        sequential.append(sweep(project, epochs, first_seed, queued=False))
        log(f"sweep of {len(SWEEP_RATES)} rates queued with {SWEEP_JOBS} workers, run {index + 1}/{repeats}")
        queued.append(sweep(project, epochs, first_seed + len(SWEEP_RATES), queued=True))
    return sequential, queued


def measure_dvc(root: Path, args: argparse.Namespace, seed_timing: tuple[float, float] | None, report: Report) -> None:
    default_epochs = read_params(REPO_ROOT)["train"]["epochs"]
    default_rate = read_params(REPO_ROOT)["train"]["dropout"]
    epochs = args.epochs if args.quick else default_epochs
    cold, accuracies = [], []
    for index in range(args.repeats):
        log(f"cold dvc repro, {epochs} epochs, run {index + 1}/{args.repeats}")
        project = copy_project(root / f"cold-{index}")
        if args.quick:
            set_params(project, {"train.epochs": epochs})
        result = dvc(project, "repro")
        expect(len(result.epoch_ends) == epochs, f"{epochs} epoch lines", result)
        cold.append(result.wall)
        accuracies.append(read_test_accuracy(project))
        if index < args.repeats - 1:
            shutil.rmtree(project)
    log("no-op dvc repro, this project and a one-stage pipeline")
    noop, baseline = measure_noop(project, trivial_pipeline(root), args.repeats)
    log("run-cache restores")
    other_rate = next(rate for rate in OTHER_DROPOUTS if rate != default_rate)
    restore = measure_restore(project, default_rate, other_rate, args.repeats)

    label = f"{epochs} epochs" + (" (--quick; the target is at the defaults)" if args.quick else " (the defaults)")
    rows = [
        [f"Cold `dvc repro`, {label}, s", cell(cold)],
        [f"Test accuracy after the cold `dvc repro` ({epochs} epochs)", cell(accuracies, 4)],
        ["No-op `dvc repro` of this project, s", cell(noop)],
        ["No-op `dvc repro` of a one-stage pipeline (DVC's start-up), s", cell(baseline)],
        [f"`dvc repro` back to a trained dropout rate ({default_rate} <-> {other_rate}), s", cell(restore)],
    ]
    if seed_timing is not None:
        seed_wall, seed_epoch = seed_timing
        seed_total = seed_wall + (epochs - args.epochs) * seed_epoch
        how = (
            "measured" if epochs == args.epochs else f"{args.epochs}-epoch wall + {epochs - args.epochs} steady epochs"
        )
        rows.insert(1, [f"Seed program wall for {epochs} epochs ({how}), s", f"{seed_total:.2f}"])
        fraction = median(cold) / seed_total
        report.target(
            f"Cold `dvc repro`, {label}, fraction of the seed program's wall",
            f"{fraction:.2f}",
            f"<= {TARGET_COLD_FRACTION:g}",
            fraction <= TARGET_COLD_FRACTION,
        )
    overhead = median(noop) - median(baseline)
    report.target(
        "No-op `dvc repro` minus a one-stage pipeline's",
        f"{overhead:+.2f} s",
        f"<= {TARGET_NOOP_OVERHEAD_SECONDS:g} s",
        overhead <= TARGET_NOOP_OVERHEAD_SECONDS,
    )
    report.target(
        "Run-cache restore of a trained dropout rate",
        f"{median(restore):.2f} s, 0 epochs",
        f"<= {TARGET_RESTORE_SECONDS:g} s, 0 epochs",
        median(restore) <= TARGET_RESTORE_SECONDS,
    )
    if not args.skip_sweep:
        sequential, queued = measure_sweep(project, args.sweep_epochs, args.repeats)
        speedup = median(sequential) / median(queued)
        what = f"{len(SWEEP_RATES)} dropout rates x {args.sweep_epochs} epochs"
        rows.append([f"Sweep of {what}, one after another (`dvc exp run`), s", cell(sequential)])
        rows.append(
            [f"Same sweep queued, {SWEEP_JOBS} workers (enqueue + `dvc queue start -j 2`, until done), s", cell(queued)]
        )
        report.target(
            f"Queued sweep throughput ({what}), vs one after another",
            f"{speedup:.2f}x",
            f">= {TARGET_SWEEP_SPEEDUP:g}x",
            speedup >= TARGET_SWEEP_SPEEDUP,
        )
    report.table(f"DVC: repeats {args.repeats}", ["Measurement", "Median (each run)"], rows)


def package_version(*names: str) -> str:
    """The installed version of the first of `names` (TensorFlow's wheel is `tensorflow` or `tensorflow-cpu`)."""
    for name in names:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return "not installed"


def environment(args: argparse.Namespace) -> list[str]:
    """The header lines: when, on what, which code, which settings."""
    dirty = " + uncommitted changes" if git(REPO_ROOT, "--no-optional-locks", "status", "--porcelain") else ""
    software = {
        "TensorFlow": package_version("tensorflow", "tensorflow-cpu"),
        "Keras": package_version("keras"),
        "DVC": package_version("dvc"),
        "DVCLive": package_version("dvclive"),
    }
    cold_epochs = args.epochs if args.quick else f"params.yaml's {read_params(REPO_ROOT)['train']['epochs']}"
    return [
        f"## Benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- Machine: {platform.machine()}, {describe_host()}, {os.cpu_count()} cores "
        f"({len(os.sched_getaffinity(0))} usable)",
        f"- Kernels: {describe_kernels()}; the seed program runs with TensorFlow's defaults",
        f"- Software: Python {platform.python_version()}, " + ", ".join(f"{k} {v}" for k, v in software.items()),
        f"- Code: {git(REPO_ROOT, 'rev-parse', '--short', 'HEAD').strip()}{dirty}",
        f"- Settings: `{' '.join(['python -m bench.benchmark', *sys.argv[1:]])}`: repeats {args.repeats}; "
        f"seed vs stage {args.epochs} epochs; cold repro and restores {cold_epochs} epochs"
        + ("" if args.skip_sweep or args.skip_dvc else f"; sweep {args.sweep_epochs} epochs per experiment"),
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the seed-vs-stage runs, >= 2 (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; medians are reported (default 3)")
    parser.add_argument(
        "--sweep-epochs", type=int, help="epochs of each sweep experiment (default: params.yaml's, as a real sweep)"
    )
    parser.add_argument("--quick", action="store_true", help="cold repro and restores at --epochs, not the defaults")
    parser.add_argument("--skip-seed", action="store_true", help="skip the seed-vs-stage runs")
    parser.add_argument("--skip-dvc", action="store_true", help="skip every dvc measurement")
    parser.add_argument("--skip-sweep", action="store_true", help="skip the sweep measurement")
    parser.add_argument("--workdir", type=Path, help="where to put the throwaway repositories (default: a temp dir)")
    args = parser.parse_args(argv)
    args.sweep_epochs = args.sweep_epochs or read_params(REPO_ROOT)["train"]["epochs"]
    if args.epochs < 2 or args.repeats < 1 or args.sweep_epochs < 1:
        parser.error("--epochs must be at least 2 (epoch 1 is not steady state), --repeats and --sweep-epochs >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    header = environment(args)
    load_start = os.getloadavg()[0]
    if load_start > BUSY_LOAD:
        log(f"warning: load average {load_start:.2f}: other work is running, and will skew every figure")
    report = Report()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-", dir=args.workdir) as name:
            root = Path(name)
            seed_timing = None if args.skip_seed else measure_training(root, args.epochs, args.repeats, report)
            if not args.skip_dvc:
                measure_dvc(root, args, seed_timing, report)
    except BenchmarkError as error:
        log(f"error: {error}")
        return 1
    header.append(
        f"- Load average (1 min) at start / end: {load_start:.2f} / {os.getloadavg()[0]:.2f} "
        "(other work on the machine skews every figure)"
    )
    print(report.markdown("\n".join(header)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
