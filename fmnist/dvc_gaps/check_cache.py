"""Re-hash every object in the local DVC cache and report the ones whose bytes no longer match.

DVC trusts its cache: `dvc status` and `dvc checkout` do not re-hash objects, so a corrupted
object is checked out as is. Run `python -m fmnist.dvc_gaps.check_cache` to find such objects (exit 1 if
any), and `python -m fmnist.dvc_gaps.check_cache --remove` to delete them; then `dvc pull --force` fetches
good copies from the remote (which verifies hashes on pull) and restores the workspace.

It also lists the partial copies (`.<token>.tmp`) that DVC leaves in the cache when copying an
output into it fails, as on a full disk; `--remove` deletes them too. Run it while no other DVC
command runs in the project: a copy in progress looks the same.

`--remote [NAME]` re-hashes the objects on a DVC remote instead (directory, SSH, S3...), reading each one back.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Iterator, Sequence
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


def check_remote(name: str | None) -> int:
    """Re-hash every object on remote `name` (default: core.remote), reading each back through DVC's filesystem."""
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
        except Exception as error:  # whatever the remote's filesystem raises: no keys, no bucket, no server
            print(f"check_cache: cannot read remote '{name}' ({url}): {error}", file=sys.stderr)
            return 1
    for path in corrupted:
        print(f"corrupted: {path}", file=sys.stderr)
    if corrupted:
        print(
            f"check_cache: {len(corrupted)} of {checked} objects on remote '{name}' ({url}) corrupted", file=sys.stderr
        )
        return 1
    print(f"check_cache: all {checked} objects on remote '{name}' ({url}) match their hashes")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fmnist.dvc_gaps.check_cache", description=__doc__.splitlines()[0])
    parser.add_argument("--remove", action="store_true", help="delete corrupted objects so `dvc pull` refetches them")
    parser.add_argument(
        "--remote", nargs="?", const="", metavar="NAME", help="check the objects on a DVC remote instead (read-only)"
    )
    args = parser.parse_args(argv)
    if args.remote is not None:
        return check_remote(args.remote or None)
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
