"""Share results through a DVC remote so that nobody retrains what a teammate already trained.

Plain DVC falls short in these ways (DVC 3.67.1; each checked by tests/test_sharing.py):

* `dvc push --run-cache` uploads the run records but not the outputs they point to (treeverse/dvc PR #10472), so
  `dvc repro --pull` of a rate that someone else trained but did not commit retrains it. `push` uploads them too.
* `dvc pull --run-cache` fetches the run records but not the objects they list beyond the workspace's cached outputs
  (not even the `cache: false` metrics of the current run), so after a failed run has deleted the outputs, `dvc repro`
  trains again instead of restoring them. `pull` fetches every run record's objects.
* `dvc pull` says "Everything is up to date." and exits 0 when the remote lacks objects whose files are already in the
  workspace (and `dvc fetch` exits 0 whenever objects are missing). `pull` checks the local cache afterwards.
* On a fresh clone anywhere but beside the author's, the default remote (a directory) does not exist, and DVC says so in
  a dozen lines about missing cache files. `pull` says so in one, with what to do instead.

Usage, from the repository root:  python -m tools.share {push,pull} [-r REMOTE]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from dvc.cli import main as dvc_main
from dvc.repo import Repo

if TYPE_CHECKING:
    from dvc.stage import Stage
    from dvc_data.hashfile.hash_info import HashInfo


class ShareError(Exception):
    """A failure reported as one line on stderr with exit status 1."""


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
            "lacks them: wrong URL, or not pushed (`python -m tools.share push`)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.share", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("push", "pull"))
    parser.add_argument("-r", "--remote", help="remote name (default: core.remote)")
    args = parser.parse_args(argv)
    remote_args = ["-r", args.remote] if args.remote else []

    try:
        if args.command == "pull":
            with Repo() as repo:
                require_existing_directory_remote(repo, args.remote)
        status = dvc_main([args.command, "--run-cache", *remote_args])
        if status:
            return status
        with Repo() as repo:
            if args.command == "push":
                push_run_cache_outputs(repo, args.remote)
            else:
                pull_run_cache_outputs(repo, args.remote)
                check_local_cache(repo, args.remote)
    except ShareError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
