"""Share results through a DVC remote so that nobody retrains what a teammate already trained.

Plain DVC falls short in these ways (DVC 3.67.1; each checked by tests/test_sharing.py or tests/test_disk_full.py):

* `dvc push --run-cache` uploads the run records but not the outputs they point to (treeverse/dvc PR #10472), so
  `dvc repro --pull` of a rate that someone else trained but did not commit retrains it. `push` uploads them too.
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
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from dvc.cli import main as dvc_main
from dvc.exceptions import FileTransferError
from dvc.repo import Repo

from fmnist.errors import NO_SPACE, space_needed

if TYPE_CHECKING:
    from dvc.stage import Stage
    from dvc_data.hashfile.hash_info import HashInfo


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


def run_cache_stages(repo: Repo) -> Iterator[Stage]:
    """The stage of every run record, rebuilt the way `dvc repro` rebuilds it to restore a run.

    DVC has no public listing of run records; these are its own loaders (pinned DVC, see requirements.txt).
    """
    cache = repo.stage_cache
    for record in sorted(Path(cache.cache_dir).glob("??/*/*")):
        if not record.name.startswith("."):  # a temporary left by an interrupted save
            entry = cache._load_cache(record.parent.name, record.name)
            if entry:
                yield cache._create_stage(entry)


def run_record_objects(stages: Iterable[Stage]) -> set[HashInfo]:
    """Every object the run records of `stages` list: their cached outputs and their `cache: false` metrics.

    DVC restores a run only if all of them are in the local cache; it copies the metrics files in too.
    """
    objects: set[HashInfo] = set()
    for stage in stages:
        for ids in stage.get_used_objs().values():
            objects |= ids
    return objects


def push_run_cache_outputs(repo: Repo, remote: str | None) -> None:
    """Upload the outputs of every run record whose outputs are all in the local cache.

    Records whose outputs are not here (pulled records of runs never checked out here, or `dvc gc`) are skipped:
    for those, a teammate's `dvc repro --pull` runs the stage, as it would without the record.
    """
    with repo.lock:
        stages = list(run_cache_stages(repo))
        complete = [stage for stage in stages if stage.outs_cached()]
        result = repo.cloud.push(run_record_objects(complete), remote=remote)
    if result.failed:
        raise ShareError(f"{len(result.failed)} outputs of run-cache entries failed to upload")
    skipped = len(stages) - len(complete)
    note = f"; skipped {skipped} run records whose outputs are not in the local cache" if skipped else ""
    print(f"{len(result.transferred)} run-cache output files pushed{note}")


def workspace_run_records(repo: Repo) -> list[tuple[Stage, Path]]:
    """Each pipeline stage as dvc.lock has it now, with the run record of that run (the one `dvc repro` saved or
    restored): its path in the local cache is named by the hashes of the stage's deps and of its lock entry."""
    from dvc.stage.cache import _can_hash, _get_cache_hash, _get_stage_hash
    from dvc.stage.serialize import to_single_stage_lockfile

    records = []
    for stage in repo.index.stages:
        if _can_hash(stage):
            key, value = _get_stage_hash(stage), _get_cache_hash(to_single_stage_lockfile(stage))
            record = Path(repo.stage_cache._get_cache_path(key, value))
            if record.is_file():
                records.append((stage, record))
    return records


def push_workspace_run_records(repo: Repo, remote: str | None) -> None:
    """Upload the run records of the workspace's own runs and their outputs, and no other record of the local cache.

    `dvc push --run-cache` uploads every record of the local cache: a cache shared by several projects on one host
    would give each project's remote the others' runs. Each record is copied beside a temporary name and renamed.
    """
    from dvc.fs import generic

    with repo.lock:
        records = workspace_run_records(repo)
        result = repo.cloud.push(run_record_objects(stage for stage, _ in records), remote=remote)
        if result.failed:
            raise ShareError(f"{len(result.failed)} outputs of run-cache entries failed to upload")
        odb = repo.cloud.get_remote_odb(remote, "push --run-cache", hash_name="md5-dos2unix")
        cache_root = Path(repo.cache.legacy.path)
        for _, record in records:
            destination = odb.fs.join(odb.path, *record.relative_to(cache_root).parts)
            generic.copy(repo.cache.legacy.fs, str(record), odb.fs, destination)
    print(f"{len(records)} run records of this workspace pushed, with {len(result.transferred)} output files")


def pull_run_cache_outputs(repo: Repo, remote: str | None) -> None:
    """Download the outputs of every run record, so that `dvc repro` restores any of those runs without training.

    `dvc pull --run-cache` fetches the records but only the workspace's cached outputs: the `cache: false`
    metrics of even the current run stay behind, and once a failed run has deleted them, `dvc repro` retrains.
    """
    with repo.lock:
        stages = list(run_cache_stages(repo))
        result = repo.cloud.pull(run_record_objects(stages), remote=remote)
        incomplete = sum(not stage.outs_cached() for stage in stages)
    note = f"; {incomplete} run records lack outputs on the remote (those runs would train again)" if incomplete else ""
    print(f"{len(result.transferred)} run-cache output files fetched{note}")


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
    """DVC's own push or pull with the run-cache, then what it leaves out; raises ShareError.

    With `workspace_runs`, a push uploads the workspace's outputs and the run records of its stages' current runs
    only, not every record in the local cache."""
    if command == "pull":
        with Repo() as repo:
            require_existing_directory_remote(repo, remote)
    run_cache = [] if workspace_runs else ["--run-cache"]
    status = dvc_main([command, *run_cache, *(["-r", remote] if remote else [])])
    if status:
        return status
    with Repo() as repo:
        if command == "push" and workspace_runs:
            push_workspace_run_records(repo, remote)
        elif command == "push":
            push_run_cache_outputs(repo, remote)
        else:
            pull_run_cache_outputs(repo, remote)
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
