"""Re-hash every object in the local DVC cache and report the ones whose bytes no longer match.

DVC trusts its cache: `dvc status` and `dvc checkout` do not re-hash objects, so a corrupted
object is checked out as is. Run `python -m fmnist.dvc_gaps.check_cache` to find such objects (exit 1 if
any), and `python -m fmnist.dvc_gaps.check_cache --remove` to delete them; then `dvc pull --force` fetches
good copies from the remote (which verifies hashes on pull) and restores the workspace.

It also lists the partial copies (`.<token>.tmp`) that DVC leaves in the cache when copying an
output into it fails, as on a full disk; `--remove` deletes them too. Run it while no other DVC
command runs in the project: a copy in progress looks the same.

`python -m fmnist.dvc_gaps.check_cache --remote [NAME]` checks the run records on a remote (default: core.remote)
instead: it lists each record some of whose outputs the remote lacks (what a plain `dvc push --run-cache` of runs
whose outputs were never pushed leaves, or objects deleted from the remote), naming its stage and params, and exits 1
if there are any; with `--remove` it deletes those records from the remote (exit 0). Such a record is harmless to
`python -m fmnist.dvc_gaps.share pull`, which skips it, but `dvc pull --run-cache` hands it on and DVC's
`dvc repro --pull` tries to restore from it.
It re-hashes every object on that remote first, reading each back through DVC's filesystem (directory, SSH,
S3...): DVC trusts a remote's objects as it trusts its cache (treeverse/dvc#10498: truncated SSH-remote objects that
`dvc status -c` does not notice), and lists each directory listing (`.dir` object) that names a file the remote
lacks: DVC's push takes such a directory as complete and never uploads the file again. With `--remove` it deletes
the objects that do not match and the incomplete listings; then `python -m fmnist.dvc_gaps.share push` from a clone
that has them uploads them again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path


def cache_objects(cache: Path) -> Iterator[tuple[Path, str]]:
    """(path, md5 its name claims) for every object of DVC 3's cache layout `files/md5/ab/cdef…`."""
    for path in sorted((cache / "files" / "md5").glob("??/*")):
        if path.is_file() and not path.name.startswith("."):
            yield path, path.parent.name + path.name.removesuffix(".dir")


def partial_copies(cache: Path) -> list[Path]:
    """DVC's temporaries in the cache: each is an unfinished copy of an object, never an object."""
    return sorted((cache / "files" / "md5").glob("??/.*.tmp"))


def corrupted_objects(cache: Path) -> list[Path]:
    corrupted = []
    for path, expected in cache_objects(cache):
        digest = hashlib.md5()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != expected:
            corrupted.append(path)
    return corrupted


def remote_objects(remote_odb) -> Iterator[tuple[str, str]]:  # noqa: ANN001 - DVC's HashFileDB
    """(path, md5 its name claims) for every object of a DVC remote (any filesystem DVC reaches), as `cache_objects`."""
    fs, root = remote_odb.fs, remote_odb.path
    if not fs.exists(root):
        return
    for path in sorted(fs.find(root)):
        parts = fs.relparts(path, root)
        if len(parts) == 2 and not parts[1].startswith("."):
            yield path, parts[0] + parts[1].removesuffix(".dir")


def incomplete_listings(remote_odb, absent: Iterable[str] = ()) -> list[str]:  # noqa: ANN001 - DVC's HashFileDB
    """The `.dir` listings on a remote that name a file it lacks, counting the objects at `absent` as gone.

    A push takes a directory's files as present while its listing is on the remote (dvc-data's `status` assumes a
    listed directory complete), so a file gone from under its listing is never uploaded again."""
    absent = set(absent)
    objects = dict(remote_objects(remote_odb))
    present = {oid for path, oid in objects.items() if path not in absent}
    return [
        path
        for path in objects
        if path.endswith(".dir")
        and path not in absent
        and not {entry["md5"] for entry in json.loads(remote_odb.fs.cat_file(path))} <= present
    ]


def remove_remote_objects(  # noqa: ANN001 - DVC's HashFileDB
    remote_odb, paths: Sequence[str], listings: Sequence[str] | None = None
) -> list[str]:
    """Delete objects from a remote, first the listings naming them (`incomplete_listings`, unless the caller has
    them already); the paths deleted."""
    doomed = [*(incomplete_listings(remote_odb, paths) if listings is None else listings), *paths]
    for path in doomed:
        remote_odb.fs.rm(path)
    return doomed


def rehash_remote(name: str | None, remove: bool) -> int:
    """Re-hash every object on remote `name` (default: core.remote), reading each back through DVC's filesystem, and
    check its directory listings; with `remove`, delete the corrupted objects and the incomplete listings."""
    from dvc.repo import Repo

    with Repo() as repo:
        name = name or repo.config["core"].get("remote")
        url = repo.config["remote"][name]["url"]
        odb = repo.cloud.get_remote_odb(name)
        checked, corrupted = 0, []
        try:
            for path, expected in remote_objects(odb):
                digest = hashlib.md5()
                with odb.fs.open(path, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
                checked += 1
                if digest.hexdigest() != expected:
                    corrupted.append(path)
            listings = incomplete_listings(odb, corrupted)
            if remove:
                remove_remote_objects(odb, corrupted, listings)
        except Exception as error:  # whatever the remote's filesystem raises: no keys, no bucket, no server
            print(f"check_cache: cannot read remote '{name}' ({url}): {error}", file=sys.stderr)
            return 1
    for kind, paths in (("corrupted", corrupted), ("incomplete directory listing", listings)):
        for path in paths:
            print(f"{kind}: {path}", file=sys.stderr)
    if not corrupted and not listings:
        print(f"check_cache: all {checked} objects on remote '{name}' ({url}) match their hashes")
        return 0
    found = f"{len(corrupted)} of {checked} objects on remote '{name}' ({url}) corrupted"
    if listings:
        found += f", {len(listings)} incomplete directory listing{'' if len(listings) == 1 else 's'}"
    if not remove:
        print(f"check_cache: {found} (run with --remove to delete them)", file=sys.stderr)
        return 1
    print(
        f"check_cache: {found}: removed; 'fmnist-share push' from a clone that has them uploads them again",
        file=sys.stderr,
    )
    return 0


def check_records(remote: str | None, remove: bool) -> int:
    """List (and with `remove`, delete) the run records on `remote` whose outputs are not all on it."""
    from dvc.repo import Repo

    from fmnist.dvc_gaps.run_records import describe_all, remote_store, remove_record, split_complete

    with Repo() as repo:
        name = remote or repo.config["core"].get("remote")
        store = remote_store(repo, remote)
        records = store.records()
        _, incomplete = split_complete(records, [store])
        for record in incomplete:
            print(f"incomplete run record: {record.path}: {describe_all(Path(repo.root_dir), [record], records)}")
            if remove:
                remove_record(store, record)
    if not incomplete:
        print(f"check_cache: all {len(records)} run records on remote '{name}' have their outputs there")
        return 0
    action = "removed" if remove else "run with --remove to delete them"
    print(
        f"check_cache: {len(incomplete)} of {len(records)} run records on remote '{name}' lack outputs ({action})",
        file=sys.stderr,
    )
    return 0 if remove else 1


def check_remote(remote: str | None, remove: bool) -> int:
    """The objects of `remote` re-hashed, then its run records checked for their outputs; 1 if anything is wrong."""
    objects = rehash_remote(remote, remove)
    if objects:
        return objects
    return max(objects, check_records(remote, remove))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fmnist.dvc_gaps.check_cache", description=__doc__.splitlines()[0])
    parser.add_argument("--remove", action="store_true", help="delete what is found")
    parser.add_argument(
        "--remote",
        nargs="?",
        const="",
        metavar="NAME",
        help="check this remote (default: core.remote) instead of the local cache: its objects and run records",
    )
    args = parser.parse_args(argv)
    if args.remote is not None:
        return check_remote(args.remote or None, args.remove)
    from dvc.repo import Repo

    with Repo() as repo:
        cache = Path(repo.cache.local.path).parent.parent  # .../cache/files/md5 -> .../cache
    corrupted = corrupted_objects(cache)
    partial = partial_copies(cache)
    checked = sum(1 for _ in cache_objects(cache))
    for kind, paths in (("corrupted", corrupted), ("partial copy", partial)):
        for path in paths:
            print(f"{kind}: {path}", file=sys.stderr)
            if args.remove:
                path.chmod(0o644)
                path.unlink()
    if not corrupted and not partial:
        print(f"check_cache: all {checked} objects in {cache} match their hashes")
        return 0
    if args.remove:
        action = "removed; run 'dvc pull --force'" if corrupted else "removed"
    else:
        action = "run with --remove" + (", then 'dvc pull --force'" if corrupted else "")
    found = f"{len(corrupted)} of {checked} objects corrupted, {len(partial)} partial copies"
    print(f"check_cache: {found} ({action})", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
