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

Usage, from the repository root:  python -m fmnist.dvc_gaps.share {push,pull} [-r REMOTE] [--workspace-runs]
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dvc.cli import main as dvc_main
from dvc.exceptions import FileTransferError
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
            raise ShareError(f"the remote still lacks outputs of {counted(len(unsent))}; no run record pushed")
        try:
            uploaded = upload_records(local, destination, uploaded)
        except OSError as error:
            raise ShareError(f"cannot upload run records to {destination.root}: {error}") from None
    note = f"; skipped {counted(len(incomplete))} whose outputs are not in the local cache" if incomplete else ""
    print(f"{len(result.transferred)} run-cache output files and {counted(len(uploaded))} pushed{note}")


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


def check_local_cache(repo: Repo, remote: str | None) -> None:
    """Fail if an output recorded in dvc.lock is still missing from the local cache after a pull."""
    missing = repo.data_status().get("not_in_cache", [])
    if missing:
        name, url = remote_name_and_url(repo, remote)
        raise ShareError(
            f"still not in the local cache after pulling: {', '.join(sorted(missing))}; remote '{name}' ({url}) "
            "lacks them: wrong URL, or not pushed (`python -m fmnist.dvc_gaps.share push`)"
        )


def share(command: str, remote: str | None, workspace_runs: bool = False) -> int:
    """DVC's own push (workspace outputs) or pull (with the run records), then the run records; raises ShareError.

    With `workspace_runs`, a push uploads only the run records of the workspace's current runs, not every record in
    the local cache (which a sweep's cache shares with other points)."""
    before: set[str] = set()
    with Repo() as repo:
        if command == "pull":
            require_existing_directory_remote(repo, remote)
            before = set(local_store(repo).record_paths())
    status = dvc_main([command, *(["--run-cache"] if command == "pull" else []), *(["-r", remote] if remote else [])])
    if status:
        return status
    with Repo() as repo:
        if command == "push":
            push_run_records(repo, remote, workspace_run_paths(repo) if workspace_runs else None)
        else:
            pull_run_records(repo, remote, before)
            check_local_cache(repo, remote)
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
