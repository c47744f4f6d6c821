"""Atomic outputs: write under a hidden temporary name in the same directory, then `os.replace`.

DVC deletes a stage's outputs before running it and records nothing when the stage fails, so
an output that exists under its final name must always be complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_PREFIX = ".tmp-"


def _remove_stale_temporaries(path: Path) -> None:
    """Remove temporaries that a killed earlier run of this output left behind."""
    for stale in path.parent.glob(f"{TEMP_PREFIX}{path.stem}-*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on any exception it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.stem}-", suffix=path.suffix)
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
        temporary.chmod(0o644)
        _fsync(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield a temporary directory to fill; on success it becomes `path` (replacing an old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    temporary = Path(tempfile.mkdtemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.stem}-"))
    try:
        yield temporary
        temporary.chmod(0o755)
        for child in temporary.rglob("*"):
            if child.is_file():
                _fsync(child)
        if path.exists():
            previous = Path(tempfile.mkdtemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.stem}-old-"))
            os.replace(path, previous / path.name)
            os.replace(temporary, path)
            shutil.rmtree(previous)
        else:
            os.replace(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
