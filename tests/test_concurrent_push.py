"""Several pushers at once: two clones that trained different rates run `fmnist.dvc_gaps.share push` at the same
moment to one remote (a directory, SSH on a real sshd, S3 on moto), round after round; then a third clone pulls
everything, every object on the remote matches its hash, and every rate anyone trained comes back without training.

The two clones share the data and prepared arrays (same bytes, same objects), so both upload those at once. A
commits its first rate (the third clone's workspace); the other three rates live in run records only.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import dvc, git, make_project, run, set_param, tool_env, use_tiny_dataset
from s3server import BUCKET, S3Server, running_moto, verified_contents
from sshd import SSHServer, requires_sshd, running_sshd
from test_sharing_s3 import aws_env  # noqa: F401 - the module fixture that keeps the developer's AWS setup out

pytestmark = pytest.mark.slow  # three rounds of two pushers on three remotes
MODEL = "models/model.keras"
REMOTE = "team"
RATES = {"a": ("0.1", "0.5"), "b": ("0.3", "0.7")}  # each clone's first and second round


@dataclass(frozen=True)
class Trained:
    server: Path  # the bare git repository everyone clones
    rounds: list[dict[str, Path]]  # per round, each clone as it was after training that round's rate
    models: dict[str, str]  # rate -> md5 of its model


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("concurrent")
    project = make_project(root / "project")
    use_tiny_dataset(project, root / "tiny-fashion-mnist")
    git(root, "clone", "-q", "--bare", str(project), "server.git")
    rounds: list[dict[str, Path]] = [{}, {}]
    models = {}
    for name, rates in RATES.items():
        git(root, "clone", "-q", str(root / "server.git"), name)
        for index, rate in enumerate(rates):
            set_param(root / name, "train.dropout", rate)
            dvc(root / name, "repro")
            models[rate] = md5(root / name / MODEL)
            if (name, index) == ("a", 0):  # A commits its first rate; nobody commits the others
                git(root / name, "add", "-A")
                git(root / name, "commit", "-qm", f"results at dropout {rate}")
                git(root / name, "push", "-q", "origin", "HEAD")
            snapshot = root / f"{name}-round{index + 1}"
            shutil.copytree(root / name, snapshot, symlinks=True)
            rounds[index][name] = snapshot
    return Trained(root / "server.git", rounds, models)


def push_at_once(clones: list[Path]) -> list[subprocess.CompletedProcess[str]]:
    """Start `share push` in every clone, then wait for all of them."""
    command = [sys.executable, "-m", "fmnist.dvc_gaps.share", "push"]
    processes = [
        subprocess.Popen(command, cwd=clone, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for clone in clones
    ]
    outputs = [process.communicate(timeout=300) for process in processes]
    return [subprocess.CompletedProcess(command, p.returncode, *out) for p, out in zip(processes, outputs, strict=True)]


def configure(clone: Path, url: str, options: dict[str, str]) -> None:
    dvc(clone, "remote", "add", "--local", "--force", "--default", REMOTE, url)
    for option, value in options.items():
        dvc(clone, "remote", "modify", "--local", REMOTE, option, value)


def concurrent_rounds_then_a_third_clone_restores_everything(
    trained: Trained, tmp: Path, url: str, options: dict[str, str]
) -> tuple[int, list[str]]:
    """Returns the number of objects on the remote (after re-hashing each through DVC) and every push's last line."""
    seen = []
    for clones in (*trained.rounds, trained.rounds[-1]):  # the last round twice: nothing new the second time
        for clone in clones.values():
            configure(clone, url, options)
        results = push_at_once(list(clones.values()))
        for result in results:
            assert result.returncode == 0, result.stdout + result.stderr
            assert result.stderr == "", result.stderr
            seen.append(result.stdout.splitlines()[-1])
    assert all(line.startswith("share: pushed 0 new objects") for line in seen[-2:]), seen

    third = tmp / "third"
    git(tmp, "clone", "-q", str(trained.server), third.name)
    configure(third, url, options)
    pulled = run([sys.executable, "-m", "fmnist.dvc_gaps.share", "pull"], cwd=third, check=False)
    assert pulled.returncode == 0, pulled.stderr
    assert "run records lack outputs" not in pulled.stdout, pulled.stdout
    checked = run([sys.executable, "-m", "fmnist.dvc_gaps.check_cache", "--remote"], cwd=third, check=False)
    assert checked.returncode == 0, checked.stderr
    for rate, model in trained.models.items():
        set_param(third, "train.dropout", rate)
        repro = dvc(third, "repro").stdout
        restored = "Stage 'train' is cached - skipping run" in repro or "Stage 'train' didn't change" in repro
        assert restored and "Running stage" not in repro, (rate, repro)
        assert md5(third / MODEL) == model, rate
    print(f"{url}: pushes said {seen}; {checked.stdout.strip()}")  # the figures of docs/sharing-s3.md (pytest -s)
    return int(checked.stdout.split()[2]), seen


def test_two_pushers_at_once_to_a_directory_remote(trained: Trained, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    objects, _ = concurrent_rounds_then_a_third_clone_restores_everything(trained, tmp_path, str(storage), {})
    assert objects == sum(1 for path in (storage / "files/md5").glob("??/*") if not path.name.startswith("."))


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@requires_sshd
def test_two_pushers_at_once_to_an_ssh_remote(
    trained: Trained, tmp_path: Path, ssh_server: SSHServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(ssh_server.home))
    options = {"port": str(ssh_server.port), "user": ssh_server.user, "keyfile": str(ssh_server.key)}
    url = f"{ssh_server.url}/{tmp_path.name}"
    objects, _ = concurrent_rounds_then_a_third_clone_restores_everything(trained, tmp_path, url, options)
    assert objects > 0


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory, aws_env: None) -> Iterator[S3Server]:  # noqa: F811
    with running_moto(tmp_path_factory.mktemp("moto")) as server:
        yield server


def test_two_pushers_at_once_to_an_s3_remote(trained: Trained, tmp_path: Path, s3: S3Server) -> None:
    options = {"endpointurl": s3.endpoint, "access_key_id": s3.key_id, "secret_access_key": s3.secret}
    url = f"s3://{BUCKET}/concurrent"
    objects, _ = concurrent_rounds_then_a_third_clone_restores_everything(trained, tmp_path, url, options)
    contents = verified_contents(s3, prefix="concurrent")  # read back over HTTP, not through DVC
    assert contents.mismatched == [] and contents.objects == objects
