"""Ctrl-C ends a sweep cleanly: the running point's processes end within 10 s, nothing of it is published, one line
says what was published and what was cancelled, and the exit status is 130. A real LocalCluster on the tiny
dataset: a 2-epoch point that finishes, then a long one interrupted mid-training."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from conftest import command_line, git, listening_sockets, tool_env
from tiny_sweeps import sweep_project

GRID = ["-S", "train.epochs=2,5000", "-S", "train.seed=1"]
INTERRUPTED = "sweep: interrupted: 1 points published, 1 cancelled; run the same command again to continue"
POINT_PROCESSES = ("dvc exp run", "stages.train")


@pytest.mark.parametrize("whom", [pytest.param("process group", marks=pytest.mark.slow), "driver only"])
def test_ctrl_c_stops_the_running_point_publishes_nothing_of_it_and_exits_130(tmp_path: Path, whom: str) -> None:
    project = sweep_project(tmp_path / "sweep")
    driver = subprocess.Popen(
        [sys.executable, "-m", "fmnist.sweep", "run", *GRID, "--workers", "1"],
        cwd=project, env=tool_env() | {"HOME": str(tmp_path / "home"), "SHELL": "/bin/sh"},  # dash: see fmnist.runner
        start_new_session=True,  # as a terminal's job
        stdout=subprocess.PIPE, stderr=(tmp_path / "stderr").open("w"), text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(driver.stdout), daemon=True)
    reader.start()
    try:
        tree = psutil.Process(driver.pid)
        training: list[psutil.Process] = []
        while not training and driver.poll() is None:  # the long point, once the short one is done
            time.sleep(0.5)
            if any(line.startswith("done ") for line in lines):
                training = [child for child in tree.children(recursive=True) if "stages.train" in command_line(child)]
        assert training, "".join(lines)
        time.sleep(3)  # into its epochs
        assert {address for _, address, _ in listening_sockets(tree)} == {"127.0.0.1"}
        point = [child for child in tree.children(recursive=True) if any(
            name in command_line(child) for name in POINT_PROCESSES)]  # fmt: skip
        assert len(point) >= 2, [command_line(child) for child in point]

        started = time.monotonic()
        os.killpg(driver.pid, signal.SIGINT) if whom == "process group" else driver.send_signal(signal.SIGINT)
        gone, alive = psutil.wait_procs(point, timeout=10)
        assert alive == [], [command_line(process) for process in alive]
        assert time.monotonic() - started < 10
        driver.wait(timeout=60)  # stdout is the reader's alone
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    reader.join(timeout=10)
    stderr = (tmp_path / "stderr").read_text()
    assert driver.returncode == 130, "".join(lines) + stderr
    assert lines[-1].strip() == INTERRUPTED, "".join(lines)
    assert "Traceback" not in stderr, stderr
    refs = git(tmp_path / "sweep/origin.git", "for-each-ref", "--format=%(refname)", "refs/exps/").split()
    assert [ref.rsplit("/", 1)[1].split("-")[1] for ref in refs] == ["epochs2"]  # the long point: nothing
