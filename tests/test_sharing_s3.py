"""The README's sharing flow against a real S3 server (moto's, on 127.0.0.1, with IAM authentication on), on the tiny
dataset: push from one clone, a teammate's fresh clone pulls and reruns nothing, `dvc repro --pull` of a rate the
first clone trained but never committed, the model by `dvc get` / `dvc artifacts get`; and a remote that refuses,
lacks its bucket, is down, or goes away mid-push: one line, exit 1, nothing damaged.

The remote's URL and endpoint are committed (.dvc/config); the keys never are: `.dvc/config.local` (git-ignored)
for the author, the AWS environment variables for the teammate.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import dvc, git, make_project, run, set_param, use_tiny_dataset
from s3server import BUCKET, PREFIX, S3Server, TCPProxy, object_md5s, running_moto, verified_contents
from sharing import trained_at_two_rates
from sshd import free_port

pytestmark = pytest.mark.slow  # moto, a Python S3 server: the default tier shares through a directory and SSH
MODEL = "models/model.keras"
REMOTE = "team"
URL = f"s3://{BUCKET}/{PREFIX}"
UP_TO_DATE = "Data and pipelines are up to date."
ARTIFACT = "fashion-mnist-mlp"


@dataclass(frozen=True)
class Origin:
    """Clone A: trained dropout 0.4, then 0.2, committed 0.2, pushed git to `server` and everything to S3."""

    repo: Path
    server: Path  # the bare git repository teammates clone
    s3: S3Server
    model_04: bytes
    pushed: subprocess.CompletedProcess[str]


def share(clone: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "fmnist.dvc_gaps.share", *args], cwd=clone, check=False)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def ran_nothing(output: str) -> bool:
    return "Running stage" not in output and "epoch " not in output


@pytest.fixture(scope="module")
def aws_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No credentials from the developer's environment or ~/.aws; one attempt per request, so failures are quick."""
    nowhere = tmp_path_factory.mktemp("no-aws-config")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_CONFIG_FILE", str(nowhere / "config"))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nowhere / "credentials"))
        patch.setenv("AWS_MAX_ATTEMPTS", "1")
        yield


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory, aws_env: None) -> Iterator[S3Server]:
    with running_moto(tmp_path_factory.mktemp("moto")) as server:
        yield server


def use_s3_remote(clone: Path, s3: S3Server, endpoint: str | None = None) -> None:
    """The README's S3 setup: URL and endpoint committed, the keys in the git-ignored .dvc/config.local."""
    dvc(clone, "remote", "add", "--force", "--default", REMOTE, URL)
    dvc(clone, "remote", "modify", REMOTE, "endpointurl", endpoint or s3.endpoint)
    dvc(clone, "remote", "modify", "--local", REMOTE, "access_key_id", s3.key_id)
    dvc(clone, "remote", "modify", "--local", REMOTE, "secret_access_key", s3.secret)


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory, s3: S3Server) -> Origin:
    root = tmp_path_factory.mktemp("sharing-s3")
    repo = make_project(root / "project")
    use_tiny_dataset(repo, root / "tiny-fashion-mnist")
    use_s3_remote(repo, s3)
    model_04 = trained_at_two_rates(repo, "results at dropout 0.2, remote on S3")
    git(repo, "tag", "-a", f"{ARTIFACT}@v1.0.0", "-m", f"{ARTIFACT} v1.0.0")
    git(root, "clone", "-q", "--bare", str(repo), "server.git")
    pushed = share(repo, "push")
    assert pushed.returncode == 0, pushed.stderr
    return Origin(repo, root / "server.git", s3, model_04, pushed)


def teammate(origin: Origin, name: str) -> Path:
    """A fresh `git clone` of the server; its keys come from the environment (set by `teammate_env`)."""
    git(origin.server.parent, "clone", "-q", str(origin.server), name)
    return origin.server.parent / name


@pytest.fixture
def teammate_env(origin: Origin, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in origin.s3.credentials_env().items():
        monkeypatch.setenv(name, value)


def test_push_sends_data_model_and_run_cache_outputs_and_says_how_many(origin: Origin) -> None:
    contents = verified_contents(origin.s3)
    assert contents.mismatched == [] and contents.run_records >= 4  # fetch, prepare, train twice, evaluate twice
    cached = {path.parent.name + path.name for path in (origin.repo / ".dvc/cache/files/md5").glob("??/*")}
    on_remote = {key.split("/")[-2] + key.split("/")[-1] for key in object_md5s(origin.s3) if "/files/md5/" in key}
    assert cached <= on_remote  # both models, the data, every output of every run
    assert hashlib.md5(origin.model_04).hexdigest() in on_remote
    assert origin.pushed.stdout.splitlines()[-1] == (
        f"share: pushed {contents.objects + contents.run_records} new objects to '{REMOTE}' "
        f"({contents.objects} data, model and output objects, {contents.run_records} run records); "
        f"it now holds {contents.objects + contents.run_records}"
    )
    again = share(origin.repo, "push")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [f"share: pushed 0 new objects (everything was already on '{REMOTE}')"]
    assert verified_contents(origin.s3) == contents


def test_a_teammate_pulls_and_reruns_nothing(origin: Origin, teammate_env: None) -> None:
    clone = teammate(origin, "teammate-b")
    assert not (clone / ".dvc/config.local").exists()
    pulled = share(clone, "pull")
    assert pulled.returncode == 0, pulled.stderr
    assert dvc(clone, "status").stdout.strip() == UP_TO_DATE
    assert dvc(clone, "status", "--cloud").stdout.strip() == f"Cache and remote '{REMOTE}' are in sync."
    repro = dvc(clone, "repro").stdout
    assert ran_nothing(repro) and UP_TO_DATE in repro
    assert md5(clone / MODEL) == md5(origin.repo / MODEL)
    assert git(clone, "status", "--porcelain") == ""


def test_repro_pull_restores_a_rate_trained_but_never_committed(origin: Origin, teammate_env: None) -> None:
    clone = teammate(origin, "teammate-c")
    set_param(clone, "train.dropout", "0.4")
    repro = dvc(clone, "repro", "--pull").stdout
    assert "Stage 'train' is cached - skipping run" in repro and ran_nothing(repro), repro
    assert (clone / MODEL).read_bytes() == origin.model_04


def test_the_model_by_dvc_get_and_dvc_artifacts_get(origin: Origin, teammate_env: None) -> None:
    consumer = origin.server.parent / "consumer"
    consumer.mkdir()
    dvc(consumer, "get", str(origin.server), MODEL, "-o", "got.keras")
    assert md5(consumer / "got.keras") == md5(origin.repo / MODEL)
    got = dvc(consumer, "artifacts", "get", str(origin.server), ARTIFACT, "-o", "artifact.keras")
    assert got.stdout.strip() == "Downloaded 1 file(s) to 'artifact.keras'"
    assert md5(consumer / "artifact.keras") == md5(origin.repo / MODEL)


def test_no_key_is_in_git(origin: Origin) -> None:
    """The keys are in the author's .dvc/config.local only, which git ignores; no commit, tag or file has them."""
    assert origin.s3.key_id in (origin.repo / ".dvc/config.local").read_text()
    for repository in (origin.repo, origin.server):
        revisions = git(repository, "rev-list", "--all").split()
        for secret in (origin.s3.key_id, origin.s3.secret):
            found = run(["git", "grep", "-F", secret, *revisions], cwd=repository, check=False)
            assert found.returncode == 1 and found.stdout == "", found.stdout
    untracked = run(["git", "grep", "--untracked", "-F", origin.s3.secret], cwd=origin.repo, check=False)
    assert untracked.returncode == 1  # not even an untracked, unignored file
    assert git(origin.repo, "check-ignore", ".dvc/config.local").strip() == ".dvc/config.local"


def test_check_cache_remote_finds_an_object_whose_bytes_do_not_match_its_name_and_removes_it(origin: Origin) -> None:
    client = origin.s3.client()
    good, bad = hashlib.md5(b"good").hexdigest(), hashlib.md5(b"bad").hexdigest()
    listing = json.dumps([{"md5": bad, "relpath": "bad"}]).encode()  # a directory holding the bad object
    directory = hashlib.md5(listing).hexdigest()
    client.put_object(Bucket=BUCKET, Key=f"rotten/files/md5/{good[:2]}/{good[2:]}", Body=b"good")
    client.put_object(Bucket=BUCKET, Key=f"rotten/files/md5/{bad[:2]}/{bad[2:]}", Body=b"bad, then bit rot")
    client.put_object(Bucket=BUCKET, Key=f"rotten/files/md5/{directory[:2]}/{directory[2:]}.dir", Body=listing)
    dvc(origin.repo, "remote", "add", "--local", "rotten", f"s3://{BUCKET}/rotten")
    dvc(origin.repo, "remote", "modify", "--local", "rotten", "endpointurl", origin.s3.endpoint)

    def check_cache(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "fmnist.dvc_gaps.check_cache", "--remote", "rotten", *args]
        return run(command, cwd=origin.repo, check=False)

    unreadable = check_cache()
    assert unreadable.returncode == 1
    assert unreadable.stderr.strip() == (  # no keys for it yet
        f"check_cache: cannot read remote 'rotten' (s3://{BUCKET}/rotten): Unable to locate credentials"
    )
    dvc(origin.repo, "remote", "modify", "--local", "rotten", "access_key_id", origin.s3.key_id)
    dvc(origin.repo, "remote", "modify", "--local", "rotten", "secret_access_key", origin.s3.secret)
    checked = check_cache()
    assert checked.returncode == 1
    found = (
        f"check_cache: 1 of 3 objects on remote 'rotten' (s3://{BUCKET}/rotten) corrupted, "
        "1 incomplete directory listing"
    )
    assert checked.stderr.splitlines() == [
        f"corrupted: {BUCKET}/rotten/files/md5/{bad[:2]}/{bad[2:]}",
        f"incomplete directory listing: {BUCKET}/rotten/files/md5/{directory[:2]}/{directory[2:]}.dir",
        f"{found} (run with --remove to delete them)",
    ]

    removed = check_cache("--remove")
    assert removed.returncode == 0, removed.stderr
    assert removed.stderr.splitlines()[-1] == (
        f"{found}: removed; 'fmnist-share push' from a clone that has them uploads them again"
    )
    left = client.list_objects_v2(Bucket=BUCKET, Prefix="rotten/")["Contents"]
    assert [entry["Key"] for entry in left] == [f"rotten/files/md5/{good[:2]}/{good[2:]}"]
    assert check_cache().returncode == 0


# Bad storage: every case is one line on stderr, exit 1, and neither the remote nor the clone changes.


def with_a_wrong_secret(clone: Path, s3: S3Server) -> str:
    dvc(clone, "remote", "modify", "--local", REMOTE, "secret_access_key", "not-the-secret")
    return "check the remote's access_key_id/secret_access_key"


def with_an_unknown_key(clone: Path, s3: S3Server) -> str:
    dvc(clone, "remote", "modify", "--local", REMOTE, "access_key_id", "AKIAUNKNOWNKEY000000")
    return "check the remote's access_key_id/secret_access_key"


def with_a_missing_bucket(clone: Path, s3: S3Server) -> str:
    dvc(clone, "remote", "modify", "--local", REMOTE, "url", f"s3://no-such-bucket/{PREFIX}")
    return "The specified bucket does not exist"


def with_the_server_down(clone: Path, s3: S3Server) -> str:
    dvc(clone, "remote", "modify", "--local", REMOTE, "endpointurl", f"http://127.0.0.1:{free_port()}")
    return "Could not connect to the endpoint URL"


@pytest.fixture(scope="module")
def with_a_new_rate(origin: Origin) -> Path:
    """A teammate's clone with everything pulled and dropout 0.3 trained: something new to push."""
    clone = teammate(origin, "with-a-new-rate")
    use_s3_remote(clone, origin.s3)
    assert share(clone, "pull").returncode == 0
    set_param(clone, "train.dropout", "0.3")
    dvc(clone, "repro")
    return clone


@pytest.mark.parametrize(
    "misconfigure",
    [with_a_wrong_secret, with_an_unknown_key, with_a_missing_bucket, with_the_server_down],
    ids=lambda f: f.__name__,
)
def test_bad_storage_fails_in_one_line_and_changes_nothing(
    origin: Origin,
    with_a_new_rate: Path,
    misconfigure,  # noqa: ANN001
) -> None:
    clone = origin.server.parent / misconfigure.__name__
    shutil.copytree(with_a_new_rate, clone, symlinks=True)
    remote_before = object_md5s(origin.s3)
    expected = misconfigure(clone, origin.s3)
    url = dvc(clone, "config", f"remote.{REMOTE}.url").stdout.strip()
    workspace = git(clone, "status", "--porcelain")

    for command, direction in (("push", "to"), ("pull", "from")):
        started = time.monotonic()
        result = share(clone, command)
        assert result.returncode == 1, result.stdout + result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"ERROR: {command} {direction} remote '{REMOTE}' ({url}) failed: "), lines[0]
        assert expected in lines[0] and "Traceback" not in result.stdout, lines[0]
        assert time.monotonic() - started < 30
    assert object_md5s(origin.s3) == remote_before
    assert git(clone, "status", "--porcelain") == workspace
    assert run([sys.executable, "-m", "fmnist.dvc_gaps.check_cache"], cwd=clone, check=False).returncode == 0


BULK_FILES, BULK_SIZE = 40, 1 << 20


def test_server_gone_mid_push_then_back_the_second_push_sends_the_rest_and_every_object_matches(
    origin: Origin,
) -> None:
    """The clone talks to S3 through a TCP proxy, killed once the upload is under way: the server keeps what it
    received (as a real S3 would); the proxy comes back on the same port and the push is run again."""
    clone = teammate(origin, "mid-push")
    use_s3_remote(clone, origin.s3)
    assert share(clone, "pull").returncode == 0
    proxy = TCPProxy(free_port(), origin.s3.port, origin.server.parent / "proxy.log").start()
    prefix = "mid-push"  # a remote of its own in the same bucket, empty so far
    dvc(clone, "remote", "modify", "--local", REMOTE, "url", f"s3://{BUCKET}/{prefix}")
    dvc(clone, "remote", "modify", "--local", REMOTE, "endpointurl", f"http://127.0.0.1:{proxy.port}")
    bulk = clone / "data/bulk"  # enough objects that the kill lands mid-upload
    bulk.mkdir(parents=True)
    for index in range(BULK_FILES):
        (bulk / f"{index:02}.bin").write_bytes(os.urandom(BULK_SIZE))
    dvc(clone, "add", "data/bulk")
    client = origin.s3.client()

    def count() -> int:
        return client.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/files/").get("KeyCount", 0)  # not runs/

    pushing = subprocess.Popen(
        [sys.executable, "-m", "fmnist.dvc_gaps.share", "push"], cwd=clone, env=os.environ | {"DVC_NO_ANALYTICS": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while count() < 8:
        assert pushing.poll() is None and time.monotonic() < deadline, pushing.communicate()
        time.sleep(0.02)
    proxy.kill()
    out, err = pushing.communicate(timeout=120)
    assert pushing.returncode == 1, out + err
    assert err.splitlines()[-1].startswith(f"ERROR: push to remote '{REMOTE}' (s3://{BUCKET}/{prefix}) failed: ")
    assert len(err.splitlines()) == 1 and "is the server up?" in err, err
    partial = verified_contents(origin.s3, prefix=prefix)
    assert partial.mismatched == [] and 8 <= partial.objects < BULK_FILES + 1

    proxy.start()
    try:
        again = share(clone, "push")
    finally:
        proxy.kill()
    assert again.returncode == 0, again.stderr
    complete = verified_contents(origin.s3, prefix=prefix)
    assert complete.mismatched == []
    cached = {path.parent.name + path.name for path in (clone / ".dvc/cache/files/md5").glob("??/*")}
    assert complete.objects == len(cached)
    new = complete.objects + complete.run_records - partial.objects - partial.run_records
    assert again.stdout.splitlines()[-1].startswith(f"share: pushed {new} new objects to '{REMOTE}' ")


def test_two_dask_sweeps_at_once_publish_to_the_s3_remote(s3: S3Server, tmp_path: Path) -> None:
    """Two `fmnist-sweep run` at the same moment on a real scheduler and two workers: each point's outputs and run
    records go to S3 (the keys reach the workers in the remote's settings, into their clones' .dvc/config.local),
    then its git ref; a teammate restores any point without training. About 2 minutes."""
    from test_sweep_dask import Sweep, dask_cluster, exp_refs, finished

    from fmnist.processes import tool_env

    project = make_project(tmp_path / "project")
    use_tiny_dataset(project, tmp_path / "tiny-fashion-mnist")
    git(tmp_path, "init", "-q", "--bare", "--initial-branch=main", "origin.git")
    git(project, "remote", "add", "origin", str(tmp_path / "origin.git"))
    git(project, "push", "-q", "origin", "HEAD:refs/heads/main")
    prefix = "sweep"
    options = {
        "endpointurl": s3.endpoint,
        "access_key_id": s3.key_id,
        "secret_access_key": s3.secret,
    }
    dvc(project, "remote", "add", "--local", "--default", REMOTE, f"s3://{BUCKET}/{prefix}")
    for option, value in options.items():
        dvc(project, "remote", "modify", "--local", REMOTE, option, value)
    dvc(project, "repro", "prepare")
    assert share(project, "push").returncode == 0
    sweep = Sweep(project, tmp_path / "origin.git", tmp_path / "unused")

    with dask_cluster(tmp_path / "cluster") as cluster:
        drivers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "fmnist.sweep",
                    "run",
                    "-S",
                    f"train.dropout={rates}",
                    "--scheduler-file",
                    str(cluster.scheduler_file),
                ],
                cwd=project,
                env=tool_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
            for rates in ("0.2,0.4", "0.6,0.8")
        ]
        outputs = [driver.communicate(timeout=600)[0] for driver in drivers]
    for driver, output in zip(drivers, outputs, strict=True):
        assert driver.returncode == 0, output
        assert len(finished(output)) == 2 and "2 of 2 points done" in output, output
    assert len(exp_refs(sweep.origin)) == 4
    contents = verified_contents(s3, prefix=prefix)
    assert contents.mismatched == [] and contents.run_records >= 10  # fetch, prepare, and train + evaluate 4 times

    teammate = tmp_path / "teammate"
    git(tmp_path, "clone", "-q", str(sweep.origin), teammate.name)
    dvc(teammate, "remote", "add", "--local", "--default", REMOTE, f"s3://{BUCKET}/{prefix}")
    for option, value in options.items():
        dvc(teammate, "remote", "modify", "--local", REMOTE, option, value)
    for rate in ("0.4", "0.6"):  # one point of each sweep
        set_param(teammate, "train.dropout", rate)
        repro = dvc(teammate, "repro", "--pull").stdout
        assert "Stage 'train' is cached - skipping run" in repro and ran_nothing(repro), repro
