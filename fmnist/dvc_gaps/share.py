"""Share results through a DVC remote so that nobody retrains what a teammate already trained.

Plain DVC falls short in these ways (DVC 3.67.1; each checked by tests/test_sharing.py or tests/test_disk_full.py):

* `dvc push --run-cache` uploads the run records but not the outputs they point to (treeverse/dvc PR #10472), so
  `dvc repro --pull` of a rate that someone else trained but did not commit retrains it. `push` uploads each run
  record whose outputs are in the local cache, after its outputs, and never a record without them.
* A remote that plain `dvc push --run-cache` reached holds records whose outputs are on no remote, and DVC's own
  collection of their objects raises `CollectCacheError` for a directory output. `pull` fetches every complete
  record, drops the incomplete ones it brought, and names them in one line (stage and params), exiting 0 unless the
  workspace's own outputs are missing. `python -m fmnist.dvc_gaps.check_cache --remote --remove` cleans the remote.
* `dvc pull --run-cache` fetches the run records but not the objects they list beyond the workspace's cached outputs
  (not even the `cache: false` metrics of the current run), so after a failed run has deleted the outputs, `dvc repro`
  trains again instead of restoring them. `pull` fetches every run record's objects.
* `dvc pull` says "Everything is up to date." and exits 0 when the remote lacks objects whose files are already in the
  workspace (and `dvc fetch` exits 0 whenever objects are missing). `pull` checks the local cache afterwards.
* On a full disk, `dvc push` and `dvc pull` print an error per file and leave each partial copy behind as a hidden
  `.tmp` file (in a directory remote, or in the local cache). Both print one line instead and delete those copies.
* On a fresh clone anywhere but beside the author's, the default remote (a directory) does not exist, and DVC says so in
  a dozen lines about missing cache files. `pull` says so in one, with what to do instead.
* `dvc push --run-cache` says "N files pushed" on every repeat: it uploads every run record again. `push` lists the
  remote before and after and says how many objects it gained ("pushed 0 new objects" when it had everything).
* A remote that refuses the keys, lacks its bucket or does not answer makes DVC print an error per file, an
  "unexpected error" and a support footer (exit 255), or, for `dvc pull` of a missing bucket with everything cached,
  "Everything is up to date.". `push` and `pull` print one line naming the remote, the cause and what to do (exit 1).
  docs/sharing-s3.md shows each (tests/test_sharing_s3.py).

Usage, from the repository root:  python -m fmnist.dvc_gaps.share {push,pull} [-r REMOTE] [--workspace-runs]
"""

from __future__ import annotations

import argparse
import io
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import TextIO

from dvc.cli import main as dvc_main
from dvc.exceptions import DvcException, FileTransferError
from dvc.repo import Repo

from fmnist.dvc_gaps.run_records import (
    all_objects,
    describe_all,
    local_store,
    remote_store,
    remove_record,
    split_complete,
    upload_records,
)
from fmnist.errors import NO_SPACE, space_needed


class ShareError(Exception):
    """A failure reported as one line on stderr with exit status 1."""


class FullDisk(logging.Filter):
    """Takes DVC's per-file "failed to transfer" errors caused by a full disk out of its output, and keeps them."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[OSError] = []

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, OSError) and error.errno in NO_SPACE:
            self.failures.append(error)
            return False
        # DVC's closing "N files failed to upload" (it counts a directory whose files failed as one more).
        return not (isinstance(error, FileTransferError) and self.failures)

    def report(self, destination: str) -> str:
        """Delete the partial copies DVC left (its errors name them) and describe the failure in one line."""
        for error in self.failures:
            partial = Path(error.filename2 or "")
            if partial.name.startswith(".") and partial.name.endswith(".tmp"):  # a name DVC's tmp_fname made
                partial.unlink(missing_ok=True)
        size = sum(Path(error.filename).stat().st_size for error in self.failures if error.filename)
        local = None if "://" in destination else Path(destination)
        return (
            f"no space left on device copying {len(self.failures)} files to {destination}: "
            f"{space_needed(size, local)}; free space there and run this again"
        )


@contextmanager
def filtered(transfer_filter: logging.Filter) -> Iterator[None]:
    """`transfer_filter` on the loggers of DVC's per-file transfer errors and of its closing summary."""
    loggers = [logging.getLogger(name) for name in ("dvc_data.hashfile.transfer", "dvc.commands.data_sync")]
    for logger in loggers:
        logger.addFilter(transfer_filter)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(transfer_filter)


def transfer_destination(repo: Repo, command: str, remote: str | None) -> str:
    """Where `dvc push` (the remote's URL or directory) or `dvc pull` (the local cache) copies objects to."""
    if command == "pull":
        return repo.cache.local.path
    return repo.config["remote"][remote or repo.config["core"]["remote"]]["url"]


def counted(count: int) -> str:
    return f"{count} run record{'' if count == 1 else 's'}"


def push_run_records(repo: Repo, remote: str | None, only: set[str] | None = None) -> None:
    """Upload every run record whose outputs are all in the local cache: first the outputs, then the record.

    `dvc push --run-cache` uploads every record and none of their outputs, so a teammate pulls records that cannot
    be restored (and the next pull of DVC's own used-objects collection fails). Here a record goes up only after
    all of its objects did; records whose outputs are not here (pulled records of runs never checked out here, or
    `dvc gc`) are skipped: for those, a teammate's `dvc repro --pull` runs the stage, as it would without the record.
    """
    with repo.lock:
        local = local_store(repo)
        records = [record for record in local.records() if only is None or record.path in only]
        complete, incomplete = split_complete(records, [local], Path(repo.root_dir))
        result = repo.cloud.push(all_objects(complete, [local]), remote=remote)
        if result.failed:
            raise ShareError(f"{len(result.failed)} run-cache outputs failed to upload; no run record pushed")
        destination = remote_store(repo, remote)
        uploaded, unsent = split_complete(complete, [destination])  # checked on the remote itself before each record
        if unsent:
            raise ShareError(  # DVC took them as present: a damaged object, or the listing of a directory missing one
                f"the remote still lacks outputs of {counted(len(unsent))}; no run record pushed "
                "(run 'fmnist-check-cache --remote' to find damaged objects there)"
            )
        try:
            uploaded = upload_records(local, destination, uploaded)
        except OSError as error:
            raise ShareError(f"cannot upload run records to {destination.root}: {error}") from None
    if incomplete:
        print(f"share: skipped {counted(len(incomplete))} whose outputs are not in the local cache")


def workspace_run_paths(repo: Repo) -> set[str]:
    """The run records of the workspace's own runs, each stage as dvc.lock has it now (the run `dvc repro` saved or
    restored), as paths under the cache's root: named by the hashes of the stage's deps and of its lock entry."""
    from dvc.stage.cache import _can_hash, _get_cache_hash, _get_stage_hash
    from dvc.stage.serialize import to_single_stage_lockfile

    root = Path(repo.cache.legacy.path)
    paths = set()
    for stage in repo.index.stages:
        if _can_hash(stage):
            key, value = _get_stage_hash(stage), _get_cache_hash(to_single_stage_lockfile(stage))
            record = Path(repo.stage_cache._get_cache_path(key, value))
            if record.is_file():
                paths.add(record.relative_to(root).as_posix())
    return paths


def pull_run_records(repo: Repo, remote: str | None, before: set[str]) -> None:
    """Download the outputs of every complete run record, so that `dvc repro` restores any of those runs.

    `dvc pull --run-cache` fetches the records but only the workspace's cached outputs: the `cache: false`
    metrics of even the current run stay behind, and once a failed run has deleted them, `dvc repro` retrains.
    A record some of whose objects are neither here nor on the remote (a plain `dvc push --run-cache`, or objects
    deleted from the remote) is named in one line and, if this pull brought it, removed again: it could not be
    restored, and `push` would skip it anyway. `before` holds the records that were here before the pull.
    The `cache: false` metrics a record lists are taken from the workspace when its files match (the current run's,
    from git), as a plain `dvc push --run-cache` never uploads them.
    """
    with repo.lock:
        local = local_store(repo)
        records = local.records()
        stores = [local, remote_store(repo, remote)]
        complete, incomplete = split_complete(records, stores, Path(repo.root_dir))
        result = repo.cloud.pull(all_objects(complete, stores), remote=remote)
        if result.failed:
            raise ShareError(f"{len(result.failed)} run-cache outputs failed to download")
        for record in incomplete:
            if record.path not in before:
                remove_record(local, record)
    print(f"{len(result.transferred)} run-cache output files fetched for {counted(len(complete))}")
    if incomplete:
        name, _ = remote_name_and_url(repo, remote)
        print(
            f"share: skipped {counted(len(incomplete))} whose outputs are on no remote ('{name}' lacks them): "
            f"{describe_all(Path(repo.root_dir), incomplete, records)}",
            file=sys.stderr,
        )


def remote_name_and_url(repo: Repo, remote: str | None) -> tuple[str, str | None]:
    """The remote `-r` names, or the default one, with its URL (a local path made absolute by DVC); None if unknown."""
    name = remote or repo.config["core"].get("remote")
    return name, repo.config["remote"].get(name, {}).get("url")


def require_existing_directory_remote(repo: Repo, remote: str | None) -> None:
    """Fail in one line, before DVC's many, if the remote is a local directory that does not exist.

    That is what a fresh clone finds anywhere but beside the author's clone: the committed default remote
    is the directory `../fashion-mnist-dvc-storage` relative to the clone.
    """
    name, url = remote_name_and_url(repo, remote)
    if url is not None and repo.cloud.get_remote(name).fs.protocol == "local" and not Path(url).is_dir():
        raise ShareError(
            f"remote '{name}' is the directory {url}, which does not exist. The committed default remote is a "
            "directory beside the author's clone: rebuild the committed results with `make pipeline`, or point "
            f"the remote at your team's storage with `dvc remote modify --local {name} url <url>`"
        )


def require_existing_bucket(repo: Repo, command: str, remote: str | None) -> None:
    """Fail in one line if the remote's bucket does not exist: with everything already in the local cache, `dvc pull`
    never asks the remote and says "Everything is up to date."."""
    name, url = remote_name_and_url(repo, remote)
    remote_fs = repo.cloud.get_remote(name).fs if url is not None else None
    if remote_fs is None or remote_fs.protocol != "s3":
        return
    bucket = remote_fs.parts(repo.cloud.get_remote(name).path)[0]
    with remote_errors(repo, command, remote):
        try:
            remote_fs.ls(bucket, detail=False)
        except FileNotFoundError as error:
            raise ShareError(remote_failure(f"ERROR: {error}", command, name, url)) from error


def check_local_cache(repo: Repo, remote: str | None) -> None:
    """Fail if an output recorded in dvc.lock is still missing from the local cache after a pull."""
    missing = repo.data_status().get("not_in_cache", [])
    if missing:
        name, url = remote_name_and_url(repo, remote)
        raise ShareError(
            f"still not in the local cache after pulling: {', '.join(sorted(missing))}; remote '{name}' ({url}) "
            "lacks them: wrong URL, or not pushed (`python -m fmnist.dvc_gaps.share push`)"
        )


class HeldErrors(io.TextIOBase):
    """Stands in for stderr around a DVC command: its output passes through until its first error, which is held
    (with everything after it, such as DVC's "Having any troubles?" footer) for `remote_failure` to sum up."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.held = stream, io.StringIO()

    def isatty(self) -> bool:  # keeps DVC's progress bars on a terminal
        return self.stream.isatty()

    def write(self, text: str) -> int:
        plain = ANSI_ESCAPE.sub("", text)
        if self.held.tell() or plain.lstrip().startswith("ERROR"):
            return self.held.write(plain)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
BOTOCORE_DETAIL = re.compile(r"^(?P<message>.*?): An error occurred \((?P<code>[^)]+)\) when calling .*$")
DVC_PREFIX = re.compile(r"^(unexpected error|failed to transfer '[^']*'|failed to connect to \S+ \([^)]*\)) - ")
FAILED_FILES = re.compile(r"\b(\d+) files? failed to (?:upload|download)")
CREDENTIALS = ("credentials", "signature", "access key", "forbidden", "accessdenied", "permission denied")
CREDENTIAL_SETTINGS = {  # what to check, by the remote URL's scheme
    "s3": "access_key_id/secret_access_key in .dvc/config.local or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
    "ssh": "user/keyfile in .dvc/config.local",
}
HINTS = (  # (words in the cause, what to do)
    (("bucket does not exist", "nosuchbucket"), "create the bucket or correct the remote's URL"),
    (("could not connect", "connect call failed", "connection", "timed out", "endpoint"),
     "is the server up? Run this again once it answers"),
)  # fmt: skip


def hint_for(cause: str, command: str, url: str | None) -> str | None:
    words = cause.lower()
    if any(word in words for word in CREDENTIALS):
        scheme = url.split("://")[0] if url and "://" in url else ""
        return f"check the remote's {CREDENTIAL_SETTINGS.get(scheme, 'credentials in .dvc/config.local')}"
    hint = next((hint for needles, hint in HINTS if any(needle in words for needle in needles)), None)
    if hint and command == "push" and hint.startswith("is the server up"):
        hint += " (what was uploaded stays there; only the rest is sent)"
    return hint


def remote_failure(held: str, command: str, name: str | None, url: str | None) -> str:
    """One line for what a failed DVC command wrote after its first error: the remote, the cause and what to do."""
    errors = [line.removeprefix("ERROR: ") for line in held.splitlines() if line.startswith("ERROR: ")]
    if not errors:
        return f"{command} with remote '{name}' ({url}) failed"
    cause = DVC_PREFIX.sub("", errors[0])
    detail = BOTOCORE_DETAIL.match(cause)
    if detail:
        cause = f"{detail['message']} ({detail['code']})"
    failed = next((match for line in errors if (match := FAILED_FILES.search(line))), None)
    count = f"{failed[1]} files failed to {'upload' if command == 'push' else 'download'}: " if failed else ""
    hint = hint_for(cause, command, url)
    direction = "to" if command == "push" else "from"
    return f"{command} {direction} remote '{name}' ({url}) failed: {count}{cause}" + (f"; {hint}" if hint else "")


def dvc_cli(command: str, remote: str | None) -> int:
    """`dvc push` (the workspace's outputs) or `dvc pull --run-cache`; a failure's errors become one ShareError line
    naming the remote and the cause."""
    held = HeldErrors(sys.stderr)
    # DVC's error log handler took the stderr of when `dvc` was imported; its `ui` looks stderr up on each write.
    handlers = [handler for handler in logging.getLogger("dvc").handlers if isinstance(handler, logging.StreamHandler)]
    streams = {handler: handler.setStream(held) for handler in handlers if handler.level >= logging.WARNING}
    try:
        with redirect_stderr(held):
            run_cache = ["--run-cache"] if command == "pull" else []  # push: the records go up after their outputs
            status = dvc_main([command, *run_cache, *(["-r", remote] if remote else [])])
    finally:
        for handler, stream in streams.items():
            handler.setStream(stream)
    if status and "Checkout failed" in held.held.getvalue():  # the remote answered; DVC's own lines say what failed
        sys.stderr.write(held.held.getvalue())
    elif status:
        with Repo() as repo:
            name, url = remote_name_and_url(repo, remote)
        raise ShareError(remote_failure(held.held.getvalue(), command, name, url))
    return status


@contextmanager
def remote_errors(repo: Repo, command: str, remote: str | None) -> Iterator[None]:
    """Our own calls to the remote fail in one line too."""
    try:
        yield
    except ShareError:
        raise
    except DvcException as error:
        name, url = remote_name_and_url(repo, remote)
        raise ShareError(remote_failure(f"ERROR: {error}", command, name, url)) from error
    except Exception as error:  # botocore, asyncssh, OSError: whatever the remote's filesystem raised
        name, url = remote_name_and_url(repo, remote)
        cause = f"{error} ({type(error).__name__})" if str(error) else type(error).__name__
        raise ShareError(remote_failure(f"ERROR: {cause}", command, name, url)) from error


def remote_files(repo: Repo, remote: str | None) -> set[str]:
    """The paths of every file on the remote (objects and run records), relative to its root."""
    remote_fs = repo.cloud.get_remote(remote or None)
    fs, root = remote_fs.fs, remote_fs.path
    if not fs.exists(root):
        return set()
    return {"/".join(fs.relparts(path, root)) for path in fs.find(root)}


def pushed_summary(repo: Repo, name: str, before: set[str], after: set[str]) -> str:
    """How many objects and run records of this clone the push added to the remote (not what others added meanwhile)."""
    cache_root = Path(repo.cache.local.path).parent.parent  # .../cache/files/md5 -> .../cache
    new = sorted(path for path in after - before if cache_root.joinpath(*path.split("/")).exists())
    if not new:
        return f"share: pushed 0 new objects (everything was already on '{name}')"
    records = sum(path.startswith("runs/") for path in new)
    return (
        f"share: pushed {len(new)} new objects to '{name}' ({len(new) - records} data, model and output objects, "
        f"{records} run records); it now holds {len(after)}"
    )


def share(command: str, remote: str | None, workspace_runs: bool = False) -> int:
    """DVC's own push (workspace outputs) or pull (with the run records), then the run records; raises ShareError.

    With `workspace_runs`, a push uploads only the run records of the workspace's current runs, not every record in
    the local cache (which a sweep's cache shares with other points)."""
    if command == "push":
        return push(remote, workspace_runs)
    with Repo() as repo:
        require_existing_directory_remote(repo, remote)
        require_existing_bucket(repo, command, remote)
        before = set(local_store(repo).record_paths())
    status = dvc_cli(command, remote)
    if status:
        return status
    with Repo() as repo, remote_errors(repo, command, remote):
        pull_run_records(repo, remote, before)
        check_local_cache(repo, remote)
    return 0


def push(remote: str | None, workspace_runs: bool) -> int:
    """`dvc push`, then the complete run records after their outputs; one line saying how many objects the remote
    gained."""
    with Repo() as repo, remote_errors(repo, "push", remote):
        before = remote_files(repo, remote)
    with redirect_stdout(io.StringIO()):  # DVC's "N files pushed" also counts what the remote had already
        status = dvc_cli("push", remote)
    if status:
        return status
    with Repo() as repo, remote_errors(repo, "push", remote):
        push_run_records(repo, remote, workspace_run_paths(repo) if workspace_runs else None)
        name, _ = remote_name_and_url(repo, remote)
        print(pushed_summary(repo, name, before, remote_files(repo, remote)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fmnist.dvc_gaps.share", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("push", "pull"))
    parser.add_argument("-r", "--remote", help="remote name (default: core.remote)")
    parser.add_argument(
        "--workspace-runs",
        action="store_true",
        help="push: only the run records of the workspace's stages as dvc.lock has them (not the whole run-cache)",
    )
    args = parser.parse_args(argv)
    if args.workspace_runs and args.command != "push":
        parser.error("--workspace-runs is an option of push")

    full_disk = FullDisk()
    message = None
    with filtered(full_disk):
        try:
            status = share(args.command, args.remote, args.workspace_runs)
        except ShareError as error:
            status, message = 1, str(error)
    if full_disk.failures:  # the cause of any other failure
        with Repo() as repo:
            status, message = 1, full_disk.report(transfer_destination(repo, args.command, args.remote))
    if message:
        print(f"ERROR: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
