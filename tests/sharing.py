"""Clone A of the sharing tests (tests/test_sharing.py, tests/test_dvc_canaries.py): one pipeline run on the tiny
dataset, shared by every test; each test works in its own `git clone` of A next to it, so all clones see the same
default remote (`../../fashion-mnist-dvc-storage` relative to `.dvc/`, i.e. a directory beside the clones).

`origin` is a session fixture, made available to every test module by tests/conftest.py.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import copy_project, dvc, git, run, set_param
from sshd import SSHServer

REMOTE_DIR = "fashion-mnist-dvc-storage"  # where .dvc/config's default remote lands for a clone at <dir>/<clone>
SHARED_CACHE_DIR = "shared-cache"
OUTPUT_DIRS = ("data", "models", "reports")
UP_TO_DATE = "Data and pipelines are up to date."
MODEL = "models/model.keras"


@dataclass(frozen=True)
class Origin:
    """Clone A, on the tiny dataset: trained dropout 0.4, then 0.2 (1 epoch each), committed 0.2 and ran
    `fmnist.dvc_gaps.share push`."""

    repo: Path
    model_04: bytes  # the 0.4 model: only in A's run-cache and on the remote, never committed

    @property
    def storage(self) -> Path:
        return self.repo.parent / REMOTE_DIR

    @property
    def shared_cache(self) -> Path:
        return self.repo.parent / SHARED_CACHE_DIR


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def object_path(cache_or_remote: Path, digest: str) -> Path:
    return cache_or_remote / "files/md5" / digest[:2] / digest[2:]


def share(clone: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m fmnist.dvc_gaps.share ...` from the clone's root, as the README says."""
    return run([sys.executable, "-m", "fmnist.dvc_gaps.share", *args], cwd=clone, check=False)


def clone_of(origin: Origin, *parts: str) -> Path:
    """A `git clone` of A at `<A's parent>/<parts>`; only a clone right beside A shares its default remote."""
    target = origin.repo.parent.joinpath(*parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    git(target.parent, "clone", "-q", str(origin.repo), target.name)
    return target


def outputs(clone: Path) -> dict[str, str]:
    """md5 of every file the pipeline wrote: equal dicts mean byte-identical results."""
    files = (path for name in OUTPUT_DIRS for path in (clone / name).rglob("*") if path.is_file())
    return {str(path.relative_to(clone)): md5(path) for path in files}


def sound_cache(clone: Path) -> set[str]:
    """The names of the clone's cache objects, after the project's checker re-hashed every one of them."""
    checked = run([sys.executable, "-m", "fmnist.dvc_gaps.check_cache"], cwd=clone, check=False)
    assert checked.returncode == 0, checked.stderr
    return {path.parent.name + path.name for path in (clone / ".dvc/cache/files/md5").glob("??/*")}


def ran_nothing(output: str) -> bool:
    return "Running stage" not in output and "epoch " not in output


def use_team_remote(clone: Path, server: SSHServer, *, default: bool, **settings: str) -> None:
    """Remote 'team' as the README sets it up: everything in the git-ignored .dvc/config.local."""
    dvc(clone, "remote", "add", "--local", *(["--default"] if default else []), "team", server.url)
    options = {"port": str(server.port), "user": server.user, "keyfile": str(server.key), "timeout": "20"}
    for option, value in (options | settings).items():
        dvc(clone, "remote", "modify", "--local", "team", option, value)


def trained_at_two_rates(repo: Path, message: str) -> bytes:
    """Train dropout 0.4, then 0.2, and commit 0.2's results: a teammate can then restore 0.4 without training only
    through the run-cache. Returns the 0.4 model's bytes."""
    set_param(repo, "train.dropout", "0.4")
    dvc(repo, "repro")
    model_04 = (repo / MODEL).read_bytes()
    set_param(repo, "train.dropout", "0.2")
    dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    return model_04


@pytest.fixture(scope="session")
def origin(tmp_path_factory: pytest.TempPathFactory, tiny_template: Path) -> Origin:
    """Made once per session (tests/test_sharing.py, tests/test_dvc_canaries.py); tests work in clones of it."""
    repo = copy_project(tiny_template, tmp_path_factory.mktemp("sharing") / "project")
    dvc(repo, "cache", "dir", "--local", str(repo.parent / SHARED_CACHE_DIR))
    dvc(repo, "config", "--local", "cache.shared", "group")
    set_param(repo, "train.epochs", "1")
    model_04 = trained_at_two_rates(repo, "results at dropout 0.2")
    pushed = share(repo, "push")
    assert pushed.returncode == 0, pushed.stderr
    return Origin(repo, model_04)
