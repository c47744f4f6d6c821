"""Submitting to a scheduler: one nobody runs is reported at once, a silent one after the timeout, and the first
line says what the sweep will do. Real sockets, a real `fmnist.sweep run` on the tiny dataset."""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import git, run
from tiny_sweeps import sweep_project

from fmnist.sweep import clusters, driver


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (just released: the kernel refuses connections to it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never says anything, as a scheduler behind a slow network."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def scheduler(
    address: str | None = None, scheduler_file: Path | None = None, timeout: float = 30
) -> argparse.Namespace:
    return argparse.Namespace(scheduler=address, scheduler_file=scheduler_file and str(scheduler_file), timeout=timeout)


def test_no_scheduler_there_is_reported_in_under_5_s(closed_port: int, tmp_path: Path) -> None:
    stale = tmp_path / "scheduler.json"
    stale.write_text(json.dumps({"address": f"tcp://127.0.0.1:{closed_port}"}))
    for args in (scheduler(f"tcp://127.0.0.1:{closed_port}"), scheduler(scheduler_file=stale)):
        started = time.monotonic()
        with pytest.raises(
            clusters.ClusterError,
            match=f"cannot reach the Dask scheduler at tcp://127.0.0.1:{closed_port}: Connection refused",
        ):
            with driver.connect(args):
                pass
        assert time.monotonic() - started < 5  # the client's own retries would take its whole 30 s timeout


def test_a_silent_scheduler_gets_the_timeout(silent_port: int) -> None:
    with pytest.raises(
        clusters.ClusterError, match=f"cannot reach the Dask scheduler at tcp://127.0.0.1:{silent_port}"
    ) as error:
        with driver.connect(scheduler(f"tcp://127.0.0.1:{silent_port}", timeout=2)):
            pass
    assert "refused" not in str(error.value)


def test_the_first_line_says_what_will_happen(tmp_path: Path, closed_port: int) -> None:
    project = sweep_project(tmp_path / "sweep")
    address = f"tcp://127.0.0.1:{closed_port}"
    result = run([sys.executable, "-m", "fmnist.sweep", "run", "-S", "train.seed=1,2", "--scheduler", address],
                 cwd=project, check=False)  # fmt: skip
    commit = git(project, "rev-parse", "--short=7", "HEAD").strip()
    assert result.stdout.splitlines()[0] == (
        f"sweep: 2 points of commit {commit} on {address}; publishing to git {tmp_path / 'sweep/origin.git'} "
        f"and DVC {tmp_path / 'sweep/storage'}"
    )
    assert result.returncode == 1 and "sweep: error: cannot reach the Dask scheduler" in result.stderr
