"""Shared test helpers: tiny IDX files, running stages as processes, and throwaway DVC projects."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fmnist.idx import idx_bytes
from fmnist.processes import VENV_BIN, tool_env as project_tool_env

REPO_ROOT = Path(__file__).resolve().parents[1]
DEBIAN_MIRROR = Path("/usr/share/datasets/fashion-mnist")

requires_debian_data = pytest.mark.skipif(
    not DEBIAN_MIRROR.is_dir(), reason="needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)"
)


def tool_env() -> dict[str, str]:
    """The project's command environment (`fmnist.processes`) plus a git identity for the tests' commits.

    No PYTHONPATH: the project is installed in the venv, as `make setup` installs it for a user."""
    return project_tool_env() | {
        "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com",
    }  # fmt: skip


def run(command: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, env=tool_env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def run_stage(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", f"stages.{module}", *args], cwd=cwd, check=False)


def dvc(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([str(VENV_BIN / "dvc"), *args], cwd=project, check=check)


def git(project: Path, *args: str) -> str:
    return run(["git", *args], cwd=project).stdout


def set_param(project: Path, key: str, value: str) -> None:
    """Rewrite one `section.key: value` line of params.yaml, keeping its comments."""
    section, name = key.split(".")
    lines = (project / "params.yaml").read_text().splitlines(keepends=True)
    in_section = False
    for index, line in enumerate(lines):
        if not line.startswith(" "):
            in_section = line.startswith(f"{section}:")
        elif in_section and line.strip().startswith(f"{name}:"):
            indent = line[: len(line) - len(line.lstrip())]
            comment = line[line.index("#") :] if "#" in line else "\n"
            lines[index] = f"{indent}{name}: {value}" + (f"  {comment}" if "#" in line else comment)
            (project / "params.yaml").write_text("".join(lines))
            return
    raise KeyError(key)


def make_project(directory: Path) -> Path:
    """A fresh git repository at `directory` holding the project's files as in this working tree."""
    files = run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO_ROOT).stdout
    for name in filter(None, files.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, directory / name)
    for name in ("dvc.lock", "reports/training", "reports/evaluation"):  # start from nothing run
        path = directory / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    git(directory, "init", "-q")
    git(directory, "add", "-A")
    git(directory, "commit", "-qm", "project")
    return directory


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")
