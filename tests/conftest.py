"""Shared test helpers: tiny IDX files, running stages as processes, and throwaway DVC projects."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml

from fmnist.idx import idx_bytes
from fmnist.processes import VENV_BIN
from fmnist.processes import tool_env as project_tool_env

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


def command_line(process: psutil.Process) -> str:
    """A process's command line, or "" once it has exited (gone, or a zombie not yet reaped): the trees the tests
    watch change while they read them."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def runs_under(process: psutil.Process, needle: str) -> bool:
    """Whether a live descendant of `process` has `needle` in its command line."""
    return any(needle in command_line(child) for child in process.children(recursive=True))


def listening_sockets(*roots: psutil.Process) -> list[tuple[str, str, int]]:
    """(command line, address, port) of every TCP socket that `roots` and their descendants listen on; a process
    that exits while we look listens on nothing."""
    tree: dict[int, psutil.Process] = {}
    for root in roots:
        try:
            tree |= {process.pid: process for process in [root, *root.children(recursive=True)]}
        except psutil.Error:
            continue
    return [
        (command_line(tree[connection.pid]), connection.laddr.ip, connection.laddr.port)
        for connection in psutil.net_connections(kind="inet")
        if connection.status == psutil.CONN_LISTEN and connection.pid in tree
    ]


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


# A stand-in for Fashion-MNIST that the integration tests write themselves: the real pipeline runs on it in
# seconds. Each class is a bright band in its own rows plus noise, so that two epochs of training already learn.
TINY_TRAIN_PER_CLASS, TINY_TEST_PER_CLASS = 30, 10
TINY_PARAMS = {
    "prepare": {"val_size": 50},
    "train": {"hidden_units": [32, 16], "epochs": 2, "batch_size": 16, "learning_rate": 0.1},
}


def tiny_split(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
    rng.shuffle(labels)
    images = rng.integers(0, 80, size=(len(labels), 28, 28), dtype=np.uint8)
    for index, label in enumerate(labels):
        images[index, 2 + 2 * label : 4 + 2 * label, :] = 230
    return images, labels


def write_tiny_dataset(directory: Path) -> dict[str, str]:
    """The four IDX files of a tiny dataset in `directory`; returns their SHA-256s, as `fetch.sha256` takes them."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for prefix, per_class, seed in (("train", TINY_TRAIN_PER_CLASS, 1), ("t10k", TINY_TEST_PER_CLASS, 2)):
        images, labels = tiny_split(per_class, seed)
        files[f"{prefix}-images-idx3-ubyte"] = idx_bytes(images)
        files[f"{prefix}-labels-idx1-ubyte"] = idx_bytes(labels)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def use_tiny_dataset(project: Path, data: Path) -> None:
    """Point the project's fetch stage at a tiny dataset in `data` and shrink training to match; commits."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["fetch"] = {"sources": [str(data)], "sha256": write_tiny_dataset(data)}
    for section, values in TINY_PARAMS.items():
        params[section] |= values
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(project, "commit", "-qam", "tiny dataset")


def copy_project(template: Path, directory: Path) -> Path:
    """An independent copy of a project made once per module or session (git history, DVC cache, outputs, lock)."""
    shutil.copytree(template, directory, symlinks=True)
    return directory


def make_tiny_project(directory: Path, data: Path) -> Path:
    """`make_project` on the tiny dataset written to `data`: nothing run."""
    project = make_project(directory)
    use_tiny_dataset(project, data)
    return project


def prepare(project: Path) -> Path:
    """`dvc repro prepare`, committed: what most integration tests start from."""
    dvc(project, "repro", "prepare")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "prepared")
    return project


@pytest.fixture(scope="session")
def tiny_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Made once per session: a project on the tiny dataset, nothing run. Copy it (`copy_project`), never change it."""
    root = tmp_path_factory.mktemp("tiny-template")
    return make_tiny_project(root / "project", root / "tiny-fashion-mnist")


@pytest.fixture(scope="session")
def tiny_prepared_template(tmp_path_factory: pytest.TempPathFactory, tiny_template: Path) -> Path:
    """Made once per session: `tiny_template` with fetch and prepare run and committed. Copy it, never change it."""
    return prepare(copy_project(tiny_template, tmp_path_factory.mktemp("tiny-prepared") / "project"))


@pytest.fixture(scope="session")
def tiny_evaluated_template(tmp_path_factory: pytest.TempPathFactory, tiny_template: Path) -> Path:
    """Made once per session: `tiny_template` after a whole `dvc repro`, results committed. Copy it, never change it."""
    project = copy_project(tiny_template, tmp_path_factory.mktemp("tiny-evaluated") / "project")
    dvc(project, "repro")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "results")
    return project


@pytest.fixture
def tiny_project(tmp_path: Path, tiny_template: Path) -> Path:
    """A fresh project (git, nothing run) whose pipeline runs on a tiny dataset in seconds."""
    return copy_project(tiny_template, tmp_path / "project")


@pytest.fixture
def tiny_prepared(tmp_path: Path, tiny_prepared_template: Path) -> Path:
    """A project on the tiny dataset with fetch and prepare done and committed (a copy of the session's)."""
    return copy_project(tiny_prepared_template, tmp_path / "project")


@pytest.fixture
def tiny_evaluated(tmp_path: Path, tiny_evaluated_template: Path) -> Path:
    """A project on the tiny dataset with the whole pipeline run and committed (a copy of the session's)."""
    return copy_project(tiny_evaluated_template, tmp_path / "project")


# Modules that use the same costly session fixture run on the same pytest-xdist worker, so it is built once.
SAME_WORKER = {"test_dvc_canaries": "test_sharing", "test_bad_params": "test_team_remote"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each module is one xdist group (`make test` runs `--dist loadgroup`): its module fixtures are built once."""
    for item in items:
        module = item.module.__name__
        item.add_marker(pytest.mark.xdist_group(SAME_WORKER.get(module, module)))


# A session fixture of tests/test_sharing.py and tests/test_dvc_canaries.py; imported last: sharing imports conftest.
from sharing import origin  # noqa: E402, F401, I001
