"""Progress counts live work only: a point whose worker died is waiting to be rerun, not running. A real
`dask scheduler` and `dask worker` on 127.0.0.1, the tiny dataset; Ctrl-C ends the sweep once nothing can run it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from conftest import VENV_BIN, runs_under, tool_env
from tiny_sweeps import sweep_project

from fmnist.runner import exit_with_parent


def wait_for(condition, what: str, seconds: float = 300) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_point_whose_worker_died_counts_as_waiting_not_running(tmp_path: Path) -> None:
    project = sweep_project(tmp_path / "sweep")
    # SWEEP_SCRATCH: the killed worker never removes its point's clone; under tmp_path, pytest does
    env = tool_env() | {"HOME": str(tmp_path / "home"), "SWEEP_SCRATCH": str(tmp_path / "scratch")}
    scheduler_file = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen(
        [str(VENV_BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--scheduler-file", str(scheduler_file)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=exit_with_parent,
    )  # fmt: skip
    worker = driver = None
    try:
        wait_for(scheduler_file.exists, "no scheduler", 60)
        worker = subprocess.Popen(
            [str(VENV_BIN / "dask"), "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
             "--no-nanny", "--name", "w1"],
            cwd=project, env=env,  # the installed project, as a user's worker imports it
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        driver = subprocess.Popen(
            [sys.executable, "-m", "fmnist.sweep", "run", "-S", "train.epochs=5000",
             "--scheduler-file", str(scheduler_file)],
            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(driver.stdout), daemon=True).start()
        victim = psutil.Process(worker.pid)
        wait_for(lambda: runs_under(victim, "stages.train"), "the worker never started training")
        wait_for(lambda: "progress: 0 done, 1 running, 0 failed, 0 waiting\n" in lines, "".join(lines), 30)
        os.killpg(worker.pid, signal.SIGKILL)  # the machine is gone: the worker and everything it started
        worker.wait()
        wait_for(lambda: lines[-1] == "progress: 0 done, 0 running, 0 failed, 1 waiting\n", "".join(lines), 30)
        driver.send_signal(signal.SIGINT)
        driver.wait(timeout=60)
    finally:
        for process in (driver, worker, scheduler):
            if process and process.poll() is None:
                process.kill()
                process.wait()
    assert driver.returncode == 130, "".join(lines)
    assert lines[-1].startswith("sweep: interrupted: 0 points published, 1 cancelled;"), "".join(lines)
