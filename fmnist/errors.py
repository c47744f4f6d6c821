"""Errors a user can fix, reported as one line: bad input (`StageError`) and a full disk (`DiskFull`)."""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
MEGABYTE = 1_000_000


class StageError(Exception):
    """A problem the user can fix (params, input files, sources): reported as one line."""


def _megabytes(size: int) -> str:
    return f"{size / 1000:.0f} kB" if size < MEGABYTE else f"{size / MEGABYTE:.1f} MB"


def space_needed(size: int, where: Path | None) -> str:
    """The "need about 0.8 MB free, 250 kB free now" of a message; the free space of `where`'s file system if given."""
    needed = f"need about {_megabytes(size)} free"
    if where is None:
        return needed
    existing = next(parent for parent in (where, *where.parents) if parent.exists())
    return f"{needed}, {_megabytes(shutil.disk_usage(existing).free)} free now"


class DiskFull(StageError):
    """The file system (or a quota) ran out of space while the stage wrote `what` to `path`."""

    def __init__(self, what: str, path: Path, size: int) -> None:
        super().__init__(what, path, size)
        self.what, self.path, self.size = what, path, size

    def __str__(self) -> str:
        # Measured when reported: by then the stage has removed its temporaries.
        return f"no space left on device writing {self.what} to {self.path}: {space_needed(self.size, self.path)}"


@contextmanager
def writing(what: str, path: Path, size: int) -> Iterator[None]:
    """Report a full disk inside the block as `DiskFull`: what was being written, where, about how big.

    Nested blocks name the innermost write. Code that runs while the error unwinds must not
    write (it would fail again and replace the error): train does not use `with Live(...)`.
    """
    try:
        yield
    except OSError as error:
        if error.errno not in NO_SPACE:
            raise
        raise DiskFull(what, path, size) from error
